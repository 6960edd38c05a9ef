"""Shared fixtures: a fake Threatscore on 127.0.0.1, a real redis-server, and the relay under functions-framework."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import functions_framework
import pytest
import redis
import requests

from tests.fake_threatscore import FakeThreatscore

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
VENV_BIN = Path(sys.executable).parent


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the relay exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


@pytest.fixture
def start_relay_process(relay_env, tmp_path):
    """Starts `functions-framework --target=relay` as a real process on a free loopback port."""
    processes = []

    def start(**overrides: str) -> str:
        port = free_port()
        env = {**os.environ, **relay_env, **overrides, "PYTHONUNBUFFERED": "1"}
        log = open(tmp_path / f"relay-{port}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [str(VENV_BIN / "functions-framework"), "--target=relay", "--host=127.0.0.1", f"--port={port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append((process, log))
        wait_for_port(port, process)
        return f"http://127.0.0.1:{port}"

    yield start
    for process, log in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def http() -> requests.Session:
    with requests.Session() as session:
        yield session


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
