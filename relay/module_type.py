"""The XDR module type that registers a deployed relay: `python -m relay.module_type --url URL`.

XDR's module-type API (IROH-INT, `NewModuleTypeParams`) refuses any key it
does not know, at every level; tests/test_module_type.py checks the output
against that schema. `make deploy` writes one for the deployed URL and
`make register` posts it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

# XDR's regions and the key host of each (the `jwks_host` XDR puts in its tokens).
JWKS_HOSTS = {
    "us": "visibility.amp.cisco.com",
    "eu": "visibility.eu.amp.cisco.com",
    "apjc": "visibility.apjc.amp.cisco.com",
}
SUPPORTED_APIS = ("health", "observe/observables", "deliberate/observables", "refer/observables")
ENTITIES_LIMIT_KEY = "custom_CTR_ENTITIES_LIMIT"  # XDR drops `custom_` in the token: CTR_ENTITIES_LIMIT
# The operator's access key (one of RELAY_ACCESS_KEYS): XDR sends it in every token as ACCESS_KEY,
# so only organisations the operator gave it to can use the relay.
ACCESS_KEY_KEY = "custom_ACCESS_KEY"
DEFAULT_ENTITIES_LIMIT = 100

# Our own logo: a gauge whose needle points to "high". Small enough to travel in every listing.
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<rect width="64" height="64" rx="12" fill="#12324a"/>'
    '<path d="M12 42a20 20 0 0 1 40 0" fill="none" stroke="#3fb27f" stroke-width="6"/>'
    '<path d="M40 24a20 20 0 0 1 12 18" fill="none" stroke="#e0543c" stroke-width="6"/>'
    '<path d="M32 42L45 28" stroke="#ffffff" stroke-width="4" stroke-linecap="round"/>'
    '<circle cx="32" cy="42" r="4" fill="#ffffff"/>'
    "</svg>"
)
LOGO = "data:image/svg+xml;base64," + base64.b64encode(LOGO_SVG.encode()).decode()

# What the committed module_type.json says until an operator makes their own (`make deploy` does).
PLACEHOLDER_URL = "https://REGION-PROJECT.cloudfunctions.net/relay"


class ModuleTypeError(ValueError):
    """An argument the module type cannot be made with."""


def relay_url(raw: str) -> str:
    """The relay's public URL: https, a host, no query or fragment; no trailing slash."""
    parts = urlsplit(raw.strip())
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ModuleTypeError(f"the relay URL must be https://HOST[/PATH], got {raw!r}")
    if parts.username or parts.password:
        raise ModuleTypeError("the relay URL must not carry credentials")
    return raw.strip().rstrip("/")


def module_type(url: str, region: str = "us") -> dict:
    """The module type for a relay served at `url`, for an XDR organisation in `region`."""
    if region not in JWKS_HOSTS:
        raise ModuleTypeError(f"region must be one of {', '.join(JWKS_HOSTS)}, got {region!r}")
    url = relay_url(url)
    return {
        "title": "Threatscore",
        "default_name": "Threatscore",
        "short_description": (
            "Threat scores from Cyberprotect's Threatscore service for the observables of an investigation."
        ),
        "description": (
            "Threatscore, by Cyberprotect, rates how threatening an observable is. This relay asks "
            "Threatscore about the observables of an investigation and answers with verdicts, "
            "judgements and links back to Threatscore.\n\n"
            "The relay runs in your own Google Cloud project. XDR calls it with a configuration token "
            "that it signs for this module; the relay verifies the token against the keys XDR "
            f"publishes for your region ({JWKS_HOSTS[region]})."
        ),
        "tips": (
            "Before adding the module:\n\n"
            "1. Deploy the relay (`make deploy` in its repository) and note the URL it prints.\n"
            "2. The function must have `RELAY_AUDIENCE` set to exactly the URL of this module type "
            "(`make deploy` sets it).\n"
            "3. Threatscore allow-lists the addresses it answers: deploy with `EGRESS=static` and give "
            "Cyberprotect the address it prints.\n\n"
            "Then add a Threatscore module from the catalogue:\n\n"
            "- **Relay access key**: the key `make deploy` put in Secret Manager (it prints the "
            "`gcloud secrets versions access` command that shows it); required.\n"
            "- **Entities Limit**: the most entities of each kind returned per observable "
            f"(a positive number; {DEFAULT_ENTITIES_LIMIT} when left empty)."
        ),
        "external_references": [
            {"label": "Threatscore", "link": "https://threatscore.cyberprotect.cloud"},
        ],
        "logo": LOGO,
        "product_categories": [{"id": "threat-intel", "description": "Threat intelligence"}],
        "capabilities": [
            {"id": "health", "description": "Checks that the relay can reach Threatscore."},
            {"id": "observe", "description": "Returns what Threatscore knows of each observable."},
            {"id": "deliberate", "description": "Returns the Threatscore verdict of each observable."},
            {"id": "refer", "description": "Links each observable to its page on Threatscore."},
        ],
        "configuration_spec": [
            {
                "key": ACCESS_KEY_KEY,
                "type": "password",
                "label": "Relay access key",
                "tooltip": (
                    "The access key of your relay deployment (from its Secret Manager secret of "
                    "access keys, the part after `=`). The relay refuses tokens without it."
                ),
                "required": True,
            },
            {
                "key": ENTITIES_LIMIT_KEY,
                "type": "integer",
                "label": "Entities Limit",
                "tooltip": (
                    "The most entities of each kind the relay returns for one observable. "
                    f"A positive number; {DEFAULT_ENTITIES_LIMIT} when empty."
                ),
                "required": False,
                "default_value": DEFAULT_ENTITIES_LIMIT,
            },
        ],
        "properties": {
            "url": url,
            "supported-apis": list(SUPPORTED_APIS),
            "auth-type": "configuration-token",
            "configuration-token-alg": "RS256",
            "custom_jwks_host": JWKS_HOSTS[region],
        },
    }


def render(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `python -m relay module-type`."""
    parser.add_argument("--url", required=True, help="the relay's public https URL (the token's audience)")
    parser.add_argument(
        "--region", choices=sorted(JWKS_HOSTS), default="us", help="your XDR organisation's region (us)"
    )
    parser.add_argument("--output", type=Path, help="write to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    try:
        text = render(module_type(args.url, args.region))
    except ModuleTypeError as exc:
        print(f"module-type: {exc}", file=sys.stderr)
        return 2
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay module-type",
        description="Writes the XDR module type of a deployed relay (JSON, to stdout or --output).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
