from __future__ import annotations

import logging

import pytest

from simulator import ThreatscoreSimulator


@pytest.fixture(autouse=True)
def _the_processs_logging_is_restored():
    """The command line sends the log to stderr (root handlers): other tests log as the function does."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def catalogue_server():
    with ThreatscoreSimulator(catalogue=True) as simulator:
        yield simulator


@pytest.fixture
def catalogue(catalogue_server, monkeypatch) -> ThreatscoreSimulator:
    """The simulator with its catalogue, and the command line's settings pointing at it."""
    catalogue_server.reset()
    monkeypatch.setenv("THREATSCORE_API_URL", catalogue_server.url)
    monkeypatch.setenv("THREATSCORE_RETRIES", "0")
    return catalogue_server
