"""Shared fixtures: a fake Threatscore on 127.0.0.1 and the relay under functions-framework."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import functions_framework
import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_httpserver import HTTPServer

from tests.fake_threatscore import FakeThreatscore
from tests.relay_process import ROOT, VENV_BIN, RelayProcess, free_port

MAIN = ROOT / "main.py"
__all__ = ["MAIN", "ROOT", "VENV_BIN", "free_port"]  # imported by the tests


@pytest.fixture(scope="session")
def _threatscore_server():
    fake = FakeThreatscore().start()
    yield fake
    fake.stop()


@pytest.fixture
def threatscore(_threatscore_server) -> FakeThreatscore:
    """The fake Threatscore, emptied before each test."""
    _threatscore_server.reset()
    return _threatscore_server


@pytest.fixture
def relay_env(threatscore) -> dict[str, str]:
    """The environment of a relay that talks to the fake Threatscore."""
    return {
        "THREATSCORE_API_URL": threatscore.url,
        "THREATSCORE_UI_URL": "https://ui.threatscore.test",
        "THREATSCORE_TIMEOUT": "2",
        "RELAY_AUTH": "none",
    }


@pytest.fixture
def make_client(monkeypatch, relay_env):
    """Builds the relay in-process (functions_framework.create_app) with extra settings."""

    def build(**overrides: str):
        for name, value in {**relay_env, **overrides}.items():
            monkeypatch.setenv(name, value)
        app = functions_framework.create_app(target="relay", source=str(MAIN))
        return app.test_client()

    return build


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def launch_relay(relay_env, tmp_path):
    """Starts relay processes talking to the fake Threatscore; each is stopped after the test."""
    processes: list[RelayProcess] = []

    def launch(**overrides: str) -> RelayProcess:
        process = RelayProcess({**relay_env, **overrides}, tmp_path)
        processes.append(process)
        return process

    yield launch
    for process in processes:
        process.stop()


@pytest.fixture
def start_relay_process(launch_relay):
    """Starts `functions-framework --target=relay` as a real process; gives its base URL."""

    def start(**overrides: str) -> str:
        return launch_relay(**overrides).url

    return start


@pytest.fixture
def http() -> requests.Session:
    with requests.Session() as session:
        yield session


# --- XDR's signing keys and key servers (authentication tests) ---------------

JWKS_PATH = "/.well-known/jwks"


@dataclass(frozen=True)
class SigningKey:
    """An RSA key as XDR would hold it: signs tokens, publishes its public half."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], kid: str | None = "own") -> str:
        headers = {"kid": self.kid if kid == "own" else kid} if kid is not None else None
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers=headers)


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    # RSA key generation is slow: once per module.
    return {name: SigningKey.generate(f"kid-{name}") for name in ("a", "b", "attacker")}


class KeyServer:
    """A real HTTP key server on 127.0.0.1 that counts its fetches."""

    def __init__(self, server: HTTPServer):
        self.server = server

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def reset(self) -> None:
        self.server.clear()
        self.server.clear_all_handlers()

    def publish(self, *keys: SigningKey, path: str = JWKS_PATH) -> None:
        self.server.expect_request(path).respond_with_json({"keys": [key.jwk() for key in keys]})

    def answer(self, body: str, status: int = 200, path: str = JWKS_PATH) -> None:
        self.server.expect_request(path).respond_with_data(
            body, status=status, content_type="application/json"
        )

    def fetches(self, path: str = JWKS_PATH) -> int:
        return sum(1 for request, _ in self.server.log if request.path == path)


def start_key_server() -> HTTPServer:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    return server


@pytest.fixture(scope="module")
def _key_servers() -> Iterator[tuple[HTTPServer, HTTPServer]]:
    servers = (start_key_server(), start_key_server())
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def key_server(_key_servers) -> KeyServer:
    server = KeyServer(_key_servers[0])
    server.reset()
    return server


@pytest.fixture
def other_key_server(_key_servers) -> KeyServer:
    """A second key server, e.g. an attacker's."""
    server = KeyServer(_key_servers[1])
    server.reset()
    return server
