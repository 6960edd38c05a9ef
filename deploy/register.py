"""`make register`: puts the relay's module type in XDR's module-type API (IROH-INT), once.

An XDR API client's credentials (XDR_CLIENT_ID, XDR_CLIENT_SECRET, from the
environment) get an OAuth2 client-credentials token from the region's IROH
token endpoint. The organisation's module types are listed
(`GET /iroh/iroh-int/module-type/`): one with the same title is updated by id
(`PATCH .../module-type/ID`, its URL included), none means a new one
(`POST`), two or more stop the command naming their ids. `DRY_RUN=1` may read
(the token, the list) but changes nothing, and says which it would do (never
the secret). XDR_API_URL overrides the region's base URL (the tests' fake XDR
on 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests

from deploy.settings import DeployError, load
from relay.module_type import JWKS_HOSTS, module_type

TOKEN_PATH = "/iroh/oauth2/token"  # noqa: S105 - a path, not a password
MODULE_TYPE_PATH = "/iroh/iroh-int/module-type"
TIMEOUT = (10, 30)
MAX_SHOWN = 4000  # characters of an XDR error shown


def api_base(region: str, override: str | None) -> str:
    """`https://visibility[.eu|.apjc].amp.cisco.com`, or XDR_API_URL (https, or http to loopback)."""
    if not override:
        return f"https://{JWKS_HOSTS[region]}"
    parts = urlsplit(override)
    loopback = False
    try:
        loopback = parts.hostname is not None and ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise DeployError(
            f"XDR_API_URL must be https:// (or http:// to a loopback address), got {override!r}"
        )
    return override.rstrip("/")


def xdr_words(response: requests.Response) -> str:
    """XDR's own error text: its JSON (error, error_description, message...) or its body, cut."""
    text = response.text[:MAX_SHOWN]
    try:
        body = response.json()
    except ValueError:
        return text.strip() or response.reason or ""
    if isinstance(body, dict):
        words = [str(body[key]) for key in ("error", "error_description", "message") if body.get(key)]
        if words and set(body) <= {"error", "error_description", "message", "status"}:
            return ": ".join(words)[:MAX_SHOWN]
    return json.dumps(body, ensure_ascii=False)[:MAX_SHOWN]


def register(environ: dict[str, str] | None = None) -> dict | None:
    environ = dict(os.environ if environ is None else environ)
    file = environ.get("MODULE_TYPE", "").strip()
    settings = None if file else load(environ)
    region = (environ.get("XDR_REGION") or (settings.xdr_region if settings else "us")).strip().lower()
    if region not in JWKS_HOSTS:
        raise DeployError(f"XDR_REGION must be one of {', '.join(JWKS_HOSTS)}, got {region!r}")
    if file:
        try:
            document = json.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DeployError(f"MODULE_TYPE {file}: {exc}") from None
    else:
        document = module_type(settings.audience, region)
    base = api_base(region, environ.get("XDR_API_URL", "").strip() or None)
    dry_run = environ.get("DRY_RUN", "").strip() not in ("", "0", "false", "no")
    client_id = environ.get("XDR_CLIENT_ID", "").strip()
    client_secret = environ.get("XDR_CLIENT_SECRET", "")
    if dry_run and not (client_id and client_secret):
        print(
            f"[dry run] POST {base}{TOKEN_PATH}  grant_type=client_credentials,"
            f" client {client_id or '(XDR_CLIENT_ID)'}"
        )
        print("          (HTTP Basic with XDR_CLIENT_SECRET, not shown)")
        print(f"[dry run] GET {base}{MODULE_TYPE_PATH}/  (the organisation's module types)")
        print(
            f"[dry run] then PATCH {base}{MODULE_TYPE_PATH}/ID if one is titled {document.get('title')!r}, "
            f"else POST {base}{MODULE_TYPE_PATH}; body:"
        )
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return None
    if not client_id or not client_secret:
        raise DeployError(
            "XDR_CLIENT_ID and XDR_CLIENT_SECRET must be set (an XDR API client with integration scope)"
        )

    session = requests.Session()

    def exchange(method: str, path: str, **kwargs) -> requests.Response:
        try:
            return session.request(method, base + path, timeout=TIMEOUT, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise DeployError(f"cannot reach XDR at {base}: {type(exc).__name__}") from None

    token_response = exchange(
        "POST",
        TOKEN_PATH,
        auth=(client_id, client_secret),
        data={"grant_type": "client_credentials"},
        headers={"Accept": "application/json"},
    )
    if token_response.status_code != 200:
        raise DeployError(
            f"XDR refused the API client's credentials (HTTP {token_response.status_code}): "
            f"{xdr_words(token_response)}"
        )
    try:
        access_token = token_response.json()["access_token"]
    except (ValueError, KeyError, TypeError):
        raise DeployError("XDR's token answer has no access_token") from None
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}

    title = document.get("title")
    url = document.get("properties", {}).get("url")
    print(f"GET {base}{MODULE_TYPE_PATH}/  (module types titled {title!r})")
    listed = exchange("GET", MODULE_TYPE_PATH + "/", headers=headers)
    if listed.status_code != 200:
        raise DeployError(
            f"XDR refused to list module types (HTTP {listed.status_code}): {xdr_words(listed)}"
        )
    try:
        entries = listed.json()
    except ValueError:
        raise DeployError("XDR's list of module types is not JSON") from None
    if isinstance(entries, dict):
        entries = entries.get("data") or entries.get("items") or []
    same = [entry for entry in entries if isinstance(entry, dict) and entry.get("title") == title]
    if len(same) > 1:
        ids = ", ".join(str(entry.get("id")) for entry in same)
        raise DeployError(
            f"XDR has {len(same)} module types titled {title!r} ({ids}): keep one (delete the others in "
            "XDR, or with DELETE /iroh/iroh-int/module-type/ID), then run make register again"
        )
    existing = same[0].get("id") if same else None
    if dry_run:
        if existing:
            print(f"[dry run] would update module type {existing}: PATCH {base}{MODULE_TYPE_PATH}/{existing}")
        else:
            print(f"[dry run] would create a module type: POST {base}{MODULE_TYPE_PATH}")
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return None

    if existing:
        print(f"PATCH {base}{MODULE_TYPE_PATH}/{existing} ({title}, {url})")
        sent = exchange(
            "PATCH", f"{MODULE_TYPE_PATH}/{quote(str(existing), safe='')}", json=document, headers=headers
        )
    else:
        print(f"POST {base}{MODULE_TYPE_PATH} ({title}, {url})")
        sent = exchange("POST", MODULE_TYPE_PATH, json=document, headers=headers)
    if sent.status_code not in (200, 201):
        raise DeployError(f"XDR refused the module type (HTTP {sent.status_code}): {xdr_words(sent)}")
    try:
        answer = sent.json()
    except ValueError:
        answer = {}
    identifier = (
        (answer.get("id") if isinstance(answer, dict) else None) or existing or "(no id in the answer)"
    )
    if existing:
        print(f"Updated: module type {identifier} now points to {url}.")
    else:
        print(f"Created: module type {identifier}. In XDR, add a Threatscore module from the catalogue.")
    return answer
