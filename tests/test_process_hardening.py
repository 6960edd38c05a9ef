"""Hostile input and logging checked on the relay as a real functions-framework process."""

from __future__ import annotations

import json
import select
import socket
from urllib.parse import quote, unquote

import pytest

from tests import answers
from tests.contract import check_conforms
from tests.ctim import check_answer
from tests.relay_process import RelayProcess

pytestmark = pytest.mark.process

OBSERVE = "/observe/observables"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzb21lb25lIn0.c2lnbmF0dXJlLW5vYm9keS1oYXM"


@pytest.fixture(scope="module")
def relay(_threatscore_server, tmp_path_factory):
    """One relay process for the module's tests (they only read what it answers)."""
    env = {
        "THREATSCORE_API": "score",
        "THREATSCORE_API_URL": _threatscore_server.url,
        "THREATSCORE_TIMEOUT": "2",
        "RELAY_AUTH": "none",
        "RELAY_MAX_BODY_BYTES": "65536",
    }
    with RelayProcess(env, tmp_path_factory.mktemp("relay")) as process:
        yield process


def read_http_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the relay closed the connection without an answer"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "the answer was cut short"
        body += chunk
    return int(lines[0].split()[1]), json.loads(body)


def test_an_endless_chunked_body_is_answered_before_it_ends(relay):
    # The body never ends (no final chunk): only a relay that stops reading at the limit answers.
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
        sock.sendall(
            b"POST /observe/observables HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"[" + b" " * 16383
        sent = 0
        while sent < 64 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (TimeoutError, ConnectionError):
                break  # the relay stopped reading: its answer is waiting
            sent += len(chunk)
        status, body = read_http_response(sock)
    assert status == 200
    assert body == {
        "errors": [
            {
                "type": "fatal",
                "code": "invalid argument",
                "message": "Request body is larger than 65536 bytes",
            }
        ]
    }
    assert sent < 64 * 1024 * 1024


@pytest.mark.parametrize("chunked", [False, True], ids=["with Content-Length", "chunked"])
def test_oversized_bodies_over_http(relay, http, chunked):
    size = 8 * 1024 * 1024

    def pieces():
        for _ in range(size // 65536):
            yield b" " * 65536

    body = pieces() if chunked else b" " * size
    response = http.post(relay.url + OBSERVE, data=body, timeout=30)
    assert response.status_code == 200
    assert response.json()["errors"][0]["message"] == "Request body is larger than 65536 bytes"
    # The relay goes on serving.
    assert http.post(relay.url + "/version", timeout=10).json()["version"]


@pytest.mark.parametrize(
    ("body", "content_type", "outcome"),
    [
        (b"", "application/json", "Invalid JSON payload"),
        (b"{oops", "application/json", "Invalid JSON payload"),
        (b"null", "application/json", "got null"),
        (b"[" * 50_000, "application/json", "nested too deeply"),
        (b'[{"type":"ip","value":"198.51.100.7"}]', "text/plain", "verdict"),
        (b'[{"type":"ip","value":"198.51.100.7"}]', "application/x-www-form-urlencoded", "verdict"),
        (b'[{"type":"ip","value":"198.51.100.7"}]', None, "verdict"),
        (
            b'[{"type":"ip","value":"1.1.1.1\\u0000"},{"type":"domain","value":"a.example/../../x?y#z"}]',
            None,
            {},
        ),
        (
            b'[{"type":"ipv6","value":"FE80::1%25eth0"},{"type":"domain","value":"B\xc3\xbccher.example."}]',
            None,
            {},
        ),
    ],
)
def test_hostile_input_over_http(threatscore, relay, http, body, content_type, outcome):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post(relay.url + OBSERVE, data=body, headers=headers, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    answer = response.json()
    check_answer(answer)
    check_conforms(OBSERVE, "POST", 200, answer, response.headers)
    if outcome == "verdict":
        assert answer["data"]["verdicts"]["count"] == 1
    elif outcome == {}:
        assert answer == {"data": {}}
    else:
        assert outcome in answer["errors"][0]["message"]
    for raw_path in threatscore.raw_paths:
        segment = raw_path.removeprefix("/api/score/")
        assert quote(unquote(segment), safe="") == segment, raw_path


def test_unknown_paths_and_methods_over_http(relay, http):
    for method, path, status in [("GET", "/", 404), ("POST", "/admin", 404), ("DELETE", OBSERVE, 405)]:
        response = http.request(method, relay.url + path, timeout=10)
        assert response.status_code == status and response.headers["Content-Type"] == "application/json"
        check_conforms(path, method, status, response.json(), response.headers)


@pytest.mark.parametrize("framework_execution_id_logging", ["", "true"])
def test_logs_are_one_json_object_per_line_with_the_execution_id(
    threatscore, launch_relay, http, framework_execution_id_logging
):
    # LOG_EXECUTION_ID=true: functions-framework's own console logging must not double or break lines.
    relay = launch_relay(LOG_LEVEL="DEBUG", LOG_EXECUTION_ID=framework_execution_id_logging)
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer("private-incident-host.example", answers.ERROR_500, status=500)
    body = [
        {"type": "ip", "value": "198.51.100.7"},
        {"type": "domain", "value": "private-incident-host.example"},
    ]
    headers = {"Function-Execution-Id": "execFromGoogle1", "Authorization": f"Bearer {TOKEN}"}
    assert http.post(relay.url + OBSERVE, json=body, headers=headers, timeout=10).status_code == 200
    http.post(relay.url + OBSERVE, data=b"{oops", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    relay.stop()  # flushes and closes its output

    records = relay.log_records()  # fails on any stdout line that is not a JSON object
    assert all(record["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"} for record in records)
    assert all(record["message"] for record in records)
    assert {record["logger"] for record in records} >= {"relay.auth", "relay.request"}
    first, second = [record for record in records if record["logger"] == "relay.request"]
    assert first["execution_id"] == "execFromGoogle1" and first["observables"] == 2
    assert first["severity"] == "WARNING" and first["errors"][0]["code"] == "service unavailable"
    assert first["path"] == OBSERVE and first["duration_ms"] > 0
    assert second["execution_id"] and second["execution_id"] != first["execution_id"]
    assert second["errors"][0]["code"] == "invalid argument"

    everything = relay.stdout_path.read_text() + relay.stderr_text()
    assert "Traceback" not in everything
    for secret in (TOKEN, TOKEN.split(".")[2], "private-incident-host.example", "{oops"):
        assert secret not in everything
