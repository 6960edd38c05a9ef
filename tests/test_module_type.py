"""module_type.json registers the relay in XDR: it must say what the relay really serves."""

import json

from relay.app import ENDPOINTS
from tests.conftest import ROOT


def test_module_type_declares_the_relays_endpoints_and_token():
    module_type = json.loads((ROOT / "module_type.json").read_text())
    properties = module_type["properties"]
    assert properties["auth-type"] == "configuration-token"
    assert properties["configuration-token-alg"] == "RS256"
    assert properties["custom_jwks_host"] == "visibility.amp.cisco.com"
    assert properties["url"].startswith("https://")
    assert set(properties["supported-apis"]) <= set(ENDPOINTS)
    assert {"health", "observe/observables", "deliberate/observables", "refer/observables"} <= set(
        properties["supported-apis"]
    )
    (limit,) = [
        spec for spec in module_type["configuration_spec"] if spec["key"] == "custom_CTR_ENTITIES_LIMIT"
    ]
    assert limit["type"] == "integer"
    assert module_type["title"]
