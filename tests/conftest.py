"""Shared fixtures: a fake Threatscore on 127.0.0.1 and the relay under functions-framework."""

from __future__ import annotations

import functions_framework
import pytest
import requests

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
