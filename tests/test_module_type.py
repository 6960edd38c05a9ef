"""The module type registers the relay in XDR: XDR's own schema must accept it, and it must say
what the relay really serves."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import jsonschema
import pytest

from relay.app import ENDPOINTS
from relay.module_type import JWKS_HOSTS, PLACEHOLDER_URL, main, module_type, render
from tests.conftest import ROOT, shared_reference

URL = "https://europe-west1-my-project.cloudfunctions.net/relay"


@pytest.fixture(scope="module")
def xdr_schema() -> jsonschema.Draft4Validator:
    # XDR's module-type schema (IROH-INT API 1.0.107, NewModuleTypeParams), kept beside the repository.
    path = shared_reference("xdr-module-type.schema.json", "XDR's module-type schema")
    schema = json.loads(path.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def errors(validator: jsonschema.Draft4Validator, document: dict) -> list[str]:
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(document)]


@pytest.mark.parametrize("region", sorted(JWKS_HOSTS))
def test_generated_module_type_passes_xdrs_schema(xdr_schema, region):
    document = module_type(URL, region)
    assert errors(xdr_schema, document) == []
    properties = document["properties"]
    assert properties["url"] == URL
    assert properties["custom_jwks_host"] == JWKS_HOSTS[region]
    assert properties["auth-type"] == "configuration-token"
    assert properties["configuration-token-alg"] == "RS256"
    assert document["product_categories"][0]["id"] == "threat-intel"
    assert document["logo"].startswith("data:image/svg+xml;base64,")


def test_regions_name_xdrs_key_hosts():
    assert JWKS_HOSTS == {
        "us": "visibility.amp.cisco.com",
        "eu": "visibility.eu.amp.cisco.com",
        "apjc": "visibility.apjc.amp.cisco.com",
    }


def test_committed_module_type_passes_xdrs_schema_and_is_the_generated_one(xdr_schema):
    committed = json.loads((ROOT / "module_type.json").read_text())
    assert errors(xdr_schema, committed) == []
    # Regenerated from the code: `python -m relay.module_type --url PLACEHOLDER --output module_type.json`.
    assert committed == module_type(PLACEHOLDER_URL, "us")


def test_the_access_key_field_is_in_every_output():
    """`python -m relay module-type` and the committed file carry the required password field
    (XDR puts it in every token as ACCESS_KEY)."""
    committed = json.loads((ROOT / "module_type.json").read_text())
    for document in (committed, module_type(URL, "apjc")):
        fields = {field["key"]: field for field in document["configuration_spec"]}
        assert fields["custom_ACCESS_KEY"]["type"] == "password"
        assert fields["custom_ACCESS_KEY"]["required"] is True


def test_the_schema_refuses_what_xdr_refuses(xdr_schema):
    """The check can fail: the key the old file carried (`default`), an unknown top-level key, a
    capability XDR does not know."""
    document = module_type(URL)
    old_spelling = copy.deepcopy(document)
    old_spelling["configuration_spec"][1]["default"] = 100
    assert any("default" in error for error in errors(xdr_schema, old_spelling))
    unknown = {**document, "homepage": "https://example.com"}
    assert errors(xdr_schema, unknown)
    bad_capability = copy.deepcopy(document)
    bad_capability["capabilities"].append({"id": "enrich", "description": "x"})
    assert errors(xdr_schema, bad_capability)


def test_module_type_declares_the_relays_endpoints_and_limit():
    document = module_type(URL)
    assert set(document["properties"]["supported-apis"]) <= set(ENDPOINTS)
    assert {"health", "observe", "deliberate", "refer"} == {c["id"] for c in document["capabilities"]}
    [access_key, limit] = document["configuration_spec"]
    assert (access_key["key"], access_key["type"], access_key["label"]) == (
        "custom_ACCESS_KEY",
        "password",
        "Relay access key",
    )
    assert access_key["required"] is True and "default_value" not in access_key
    assert (limit["key"], limit["type"], limit["label"]) == (
        "custom_CTR_ENTITIES_LIMIT",
        "integer",
        "Entities Limit",
    )
    assert limit["default_value"] == 100 and limit["required"] is False


@pytest.mark.parametrize(
    "url",
    [
        "http://europe-west1-p.cloudfunctions.net/relay",  # XDR only calls https
        "https:///relay",
        "https://host/relay?x=1",
        "https://user:pw@host/relay",
        "relay",
    ],
)
def test_a_bad_url_is_refused(url, capsys):
    assert main(["--url", url]) == 2
    assert "relay URL" in capsys.readouterr().err


def test_command_writes_the_module_type(tmp_path):
    output = tmp_path / "module_type.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "module-type",
            "--url",
            URL + "/",
            "--region",
            "eu",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert output.read_text() == render(module_type(URL, "eu"))
