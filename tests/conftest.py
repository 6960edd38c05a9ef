"""Shared fixtures: a fake Threatscore on 127.0.0.1 and the relay under functions-framework."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import functions_framework
import pytest
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
