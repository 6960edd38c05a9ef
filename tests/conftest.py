"""Shared fixtures: the Threatscore simulator on 127.0.0.1, a real redis-server, and the relay under functions-framework."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
import jwt
import pytest
import redis
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_httpserver import HTTPServer

from relay.cache import redis_key, redis_lock_key, tenant_scope
from relay.config import Settings, setting_names
from relay.logs import flush_logs
from relay.redis_link import RedisLink
from relay.redis_trust import RedisTrust
from simulator import ThreatscoreSimulator
from tests.relay_process import ROOT, VENV_BIN, RelayProcess, free_port

MAIN = ROOT / "main.py"
__all__ = ["MAIN", "ROOT", "VENV_BIN", "free_port", "shared_reference"]  # imported by the tests


# --- the shared references beside the clone (../shared/reference) ------------------

# Facts about the outside world (XDR's schemas, Threatscore's recorded answers) are kept beside
# the project, not in it: a clone with nothing beside it skips the checks that read them.
SHARED_REFERENCE = ROOT.parent / "shared" / "reference"
# Set by .ci/run where ../shared is present: a missing reference then fails instead of skipping.
REQUIRE_SHARED = "RELAY_REQUIRE_SHARED_REFERENCE"


def shared_reference(name: str, what: str) -> Path:
    """`../shared/reference/<name>` (`what` says what it is), or a skip naming what is missing;
    a failure instead when REQUIRE_SHARED is set (CI, where the references must be present)."""
    path = SHARED_REFERENCE / name
    if not path.exists():
        reason = f"needs {what}: ../shared/reference/{name} is missing ({path})"
        if os.environ.get(REQUIRE_SHARED):
            pytest.fail(f"{reason}, and {REQUIRE_SHARED} is set", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(autouse=True)
def _no_relay_settings_from_the_shell(monkeypatch):
    """A developer's exported CACHE_TTL (or any relay setting) must not change what a test sees."""
    for name in list(os.environ):
        if name in setting_names():
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _log_lines_written_within_the_test():
    """Log lines are written by a background thread: let them land in the test's own capture."""
    yield
    flush_logs()


class FakeClock:
    """A monotonic clock that moves only when told: expiry tests without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def _threatscore_server():
    fake = ThreatscoreSimulator().start()
    yield fake
    fake.stop()


@pytest.fixture
def threatscore(_threatscore_server) -> ThreatscoreSimulator:
    """The Threatscore simulator (no catalogue: unscripted values are "no data"), emptied before each test."""
    _threatscore_server.reset()
    return _threatscore_server


@pytest.fixture
def relay_env(threatscore) -> dict[str, str]:
    """The environment of a relay that talks to the fake Threatscore (its score API: the v3
    tests set THREATSCORE_API=v3)."""
    return {
        "THREATSCORE_API": "score",
        "THREATSCORE_API_URL": threatscore.url,
        "THREATSCORE_UI_URL": "https://ui.threatscore.test",
        "THREATSCORE_TIMEOUT": "2",
        "RELAY_AUTH": "none",
    }


# A tenant's access key, as the operator puts it in RELAY_ACCESS_KEYS and in the module's
# custom_ACCESS_KEY (XDR sends it in every token as the ACCESS_KEY claim).
ACCESS_KEY = "soc-access-key-0123456789abcdef-0123456789"
OTHER_ACCESS_KEY = "mssp-client-2-key-abcdefghijklmnopqrstuvwxyz"
ACCESS_KEYS = f"soc={ACCESS_KEY},mssp-client-2={OTHER_ACCESS_KEY}"


class RelayRedis:
    """The Redis names and seals of a relay started with `env`: what a test (or an attacker
    who knows the code, but not the secrets) needs to find its entries."""

    def __init__(self, env: dict[str, str]):
        self.settings = Settings.from_env(env)
        self.trust = RedisTrust.for_settings(self.settings)
        self.link = RedisLink(redis.Redis(), trust=self.trust)  # never connects: names only

    def answer_key(self, cache_key: str, tenant: str = "default") -> bytes:
        return redis_key(
            self.link, tenant_scope(tenant, self.settings.cache_shared_between_tenants) + cache_key
        )

    def lock_key(self, cache_key: str, tenant: str = "default") -> str:
        scope = tenant_scope(tenant, self.settings.cache_shared_between_tenants)
        return redis_lock_key(self.link, scope + cache_key)

    def namespaced(self, name: str) -> str:
        return self.trust.namespaced(name)


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


class RedisServer:
    """A throwaway redis-server process: no persistence, loopback only."""

    def __init__(self, executable: str, workdir: Path, password: str | None = None):
        self._executable = executable
        self._workdir = workdir
        self.password = password
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client for the test's own checks (not a cache's client)."""
        return redis.Redis(port=self.port, password=self.password, socket_timeout=5)

    def start(self) -> None:
        command = [self._executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]
        if self.password:
            command += ["--requirepass", self.password]
        self._process = subprocess.Popen(
            command, cwd=self._workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = self._process.stdout.read().decode(errors="replace") if self._process.stdout else ""
                pytest.fail(f"redis-server exited with {self._process.returncode}:\n{output}")
            try:
                with self.client() as probe:
                    probe.ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        self.kill()
        pytest.fail(f"redis-server did not answer on port {self.port} within 10 s")

    def kill(self) -> None:
        """Stop it abruptly, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._process is not None and self._process.stdout:
            self._process.stdout.close()
        self._process = None


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Starts real redis-server processes; all are killed after the test."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed: apt-get update && apt-get install -y redis-server")
    servers: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        server = RedisServer(executable, tmp_path, password)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def redis_server(start_redis: Callable[..., RedisServer]) -> RedisServer:
    return start_redis()


# Forged tokens: what PyJWT (rightly) refuses to make.


def token_segment(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any], kid: str) -> str:
    return f"{token_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{token_segment(claims)}."


def hs256_token(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    # Hand-made: PyJWT (rightly) refuses to use a PEM key as an HMAC secret.
    signing_input = f"{token_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{token_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
