"""`make register` against a fake XDR (a real HTTP server on 127.0.0.1): token, then module type."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.module_type import module_type
from simulator.xdr import ModuleTypeApi
from tests.conftest import ROOT
from tests.relay_process import without_relay_settings

CLIENT_ID = "client-0a1b2c3d"
CLIENT_SECRET = "xdr-client-secret-" + "z" * 30
ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4ZHIifQ.fake-signature-of-xdr"
URL = "https://europe-west1-acme-xdr-prod.cloudfunctions.net/relay"


@pytest.fixture
def xdr():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def issue_token(request: Request) -> Response:
    expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    if (
        request.headers.get("Authorization") != expected
        or request.form.get("grant_type") != "client_credentials"
    ):
        return Response(json.dumps({"error": "invalid_client", "error_description": "Bad credentials"}), 401)
    body = {"access_token": ACCESS_TOKEN, "token_type": "bearer", "expires_in": 600}
    return Response(json.dumps(body), 200, content_type="application/json")


def run_register(xdr: HTTPServer, tmp_path, **settings: str) -> subprocess.CompletedProcess:
    env = {
        **without_relay_settings(os.environ),
        "DEPLOY_ENV": str(tmp_path / "deploy.env"),
        "DEPLOY_WORK_DIR": str(tmp_path / "work"),
        "XDR_API_URL": xdr.url_for("/"),
        "GCP_PROJECT": "acme-xdr-prod",
        "GCP_REGION": "europe-west1",
        "RELAY_AUTH": "jwks",
        "XDR_REGION": "eu",
        "XDR_CLIENT_ID": CLIENT_ID,
        "XDR_CLIENT_SECRET": CLIENT_SECRET,
        **settings,
    }
    return subprocess.run(
        ["make", "--no-print-directory", "register"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def api(xdr) -> ModuleTypeApi:
    """XDR's module-type API of one organisation (simulator/xdr.py) behind the fake XDR."""
    organisation = ModuleTypeApi(CLIENT_ID, CLIENT_SECRET, ACCESS_TOKEN)
    xdr.expect_request(re.compile(".*")).respond_with_handler(organisation.handle)
    return organisation


def test_register_creates_the_module_type_with_a_client_credentials_token(api, xdr, tmp_path):
    result = run_register(xdr, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [(method, identifier)] = api.changes
    assert method == "POST"
    stored = dict(api.module_types[identifier])
    assert stored.pop("id") == identifier and stored == module_type(URL, "eu")
    assert f"Created: module type {identifier}" in result.stdout
    for secret in (CLIENT_SECRET, ACCESS_TOKEN):
        assert secret not in result.stdout + result.stderr


def test_register_twice_leaves_one_module_type_updated_by_id(api, xdr, tmp_path):
    assert run_register(xdr, tmp_path).returncode == 0
    [identifier] = api.module_types
    moved = "https://relay.example.com/threatscore"
    again = run_register(xdr, tmp_path, RELAY_AUDIENCE=moved)
    assert again.returncode == 0, again.stdout + again.stderr
    assert list(api.module_types) == [identifier]
    assert api.changes == [("POST", identifier), ("PATCH", identifier)]
    assert api.module_types[identifier]["properties"]["url"] == moved  # its URL included
    assert f"Updated: module type {identifier}" in again.stdout and moved in again.stdout


def test_two_of_that_title_stop_and_are_named(api, xdr, tmp_path):
    for identifier in ("module-type-a1", "module-type-b2"):
        api.module_types[identifier] = {**module_type(URL, "eu"), "id": identifier}
    api.module_types["module-type-other"] = {"id": "module-type-other", "title": "Something else"}
    result = run_register(xdr, tmp_path)
    assert result.returncode != 0
    assert "2 module types titled 'Threatscore'" in result.stderr
    assert "module-type-a1" in result.stderr and "module-type-b2" in result.stderr
    assert api.changes == []


def test_dry_run_with_credentials_reads_and_says_what_it_would_do(api, xdr, tmp_path):
    result = run_register(xdr, tmp_path, DRY_RUN="1")
    assert result.returncode == 0, result.stderr
    assert "would create a module type" in result.stdout
    assert api.changes == [] and api.module_types == {}
    assert run_register(xdr, tmp_path).returncode == 0
    [identifier] = api.module_types
    again = run_register(xdr, tmp_path, DRY_RUN="1")
    assert f"would update module type {identifier}" in again.stdout
    assert api.changes == [("POST", identifier)]
    assert CLIENT_SECRET not in result.stdout + again.stdout + again.stderr


def test_xdrs_own_words_when_it_refuses_the_module_type(xdr, tmp_path):
    refusal = {
        "message": "Invalid module type",
        "errors": {"configuration_spec": [{"default": "disallowed-key"}]},
    }
    xdr.expect_request("/iroh/oauth2/token", method="POST").respond_with_handler(issue_token)
    xdr.expect_request("/iroh/iroh-int/module-type/", method="GET").respond_with_json([])
    xdr.expect_request("/iroh/iroh-int/module-type", method="POST").respond_with_json(refusal, status=400)
    result = run_register(xdr, tmp_path)
    assert result.returncode != 0
    assert "XDR refused the module type (HTTP 400)" in result.stderr
    assert "disallowed-key" in result.stderr and "Invalid module type" in result.stderr


def test_xdrs_own_words_when_it_refuses_the_credentials(xdr, tmp_path):
    xdr.expect_request("/iroh/oauth2/token", method="POST").respond_with_handler(issue_token)
    result = run_register(xdr, tmp_path, XDR_CLIENT_SECRET="not-the-secret-" + "w" * 20)
    assert result.returncode != 0
    assert "HTTP 401" in result.stderr and "invalid_client: Bad credentials" in result.stderr
    assert len([entry for entry, _ in xdr.log if entry.path == "/iroh/iroh-int/module-type"]) == 0


def test_dry_run_without_credentials_shows_what_would_be_sent_and_sends_nothing(xdr, tmp_path):
    result = run_register(xdr, tmp_path, DRY_RUN="1", XDR_CLIENT_SECRET="")
    assert result.returncode == 0, result.stderr
    assert "/iroh/oauth2/token" in result.stdout and "/iroh/iroh-int/module-type" in result.stdout
    assert CLIENT_ID in result.stdout and "PATCH" in result.stdout and "custom_ACCESS_KEY" in result.stdout
    assert URL in result.stdout and "visibility.eu.amp.cisco.com" in result.stdout
    assert xdr.log == []


def test_a_module_type_file_of_ones_own_is_sent_as_is(xdr, tmp_path):
    own = module_type("https://relay.example.com/threatscore", "apjc")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(own))
    received = []
    xdr.expect_request("/iroh/oauth2/token", method="POST").respond_with_handler(issue_token)
    xdr.expect_request("/iroh/iroh-int/module-type/", method="GET").respond_with_json([])
    xdr.expect_request("/iroh/iroh-int/module-type", method="POST").respond_with_handler(
        lambda request: received.append(request.get_json()) or Response("{}", 201)
    )
    result = run_register(xdr, tmp_path, MODULE_TYPE=str(path))
    assert result.returncode == 0, result.stderr
    assert received == [own]


def test_without_credentials_nothing_is_sent(xdr, tmp_path):
    result = run_register(xdr, tmp_path, XDR_CLIENT_SECRET="")
    assert result.returncode != 0 and "XDR_CLIENT_SECRET must be set" in result.stderr
    assert xdr.log == []


def test_the_api_url_override_must_be_https_unless_loopback(xdr, tmp_path):
    result = run_register(xdr, tmp_path, XDR_API_URL="http://xdr.example.com")
    assert result.returncode != 0 and "XDR_API_URL must be https://" in result.stderr
