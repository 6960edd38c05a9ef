"""Callers that misbehave at the connection level, against the relay as a real process."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.hostile_servers import wait_until


@pytest.fixture
def relay(launch_relay):
    return launch_relay()


def test_a_client_that_resets_mid_body_is_an_info_line_not_a_relay_error(relay, http):
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as client:
        client.sendall(
            b"POST /observe/observables HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n"
        )
        # gunicorn says "100 Continue" once it has the request's head, as it hands it to the relay.
        assert client.recv(1024).startswith(b"HTTP/1.1 100")
        client.sendall(b'[{"type": "ip", "value": "198.51.100.7"}, ' * 10)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST

    def request_lines():
        return [record for record in relay.log_records() if record["logger"] == "relay.request"]

    assert wait_until(lambda: len(request_lines()) == 1)
    [line] = request_lines()
    assert line["severity"] == "INFO"
    assert line["errors"] == [
        {
            "code": "invalid argument",
            "message": "The request body did not arrive whole (the client went away)",
            "count": 1,
        }
    ]
    records = relay.log_records()
    assert not [record for record in records if record["severity"] in ("ERROR", "CRITICAL")]
    assert not [record for record in records if "stack_trace" in record]
    # And the relay still serves.
    assert http.post(relay.url + "/version", timeout=30).status_code == 200


def test_the_slow_client_phase_measures_what_a_local_relay_survives(tmp_path):
    from loadtest.slow_clients import SlowClientConfig, run_slow_clients

    config = SlowClientConfig(
        idle_connections=(2,), slow_clients=(1,), request_line_mib=(1,), probe_timeout=10.0
    )
    report = run_slow_clients(config, log_dir=tmp_path)
    assert [(step.kind, step.size) for step in report.steps] == [
        ("idle", 2),
        ("slow", 1),
        ("request line", 1),
    ]
    # A few hostile connections are within what gunicorn's threads absorb.
    assert report.survived("idle") == 2 and report.survived("slow") == 1
    request_line = report.steps[2]
    assert request_line.relay_cpu_seconds >= 0 and request_line.probe_seconds is not None
    rendered = report.render()
    assert "2 silent connections: answered in" in rendered and "1 MiB request line" in rendered
