"""Operating on Google Cloud: trace fields, Error Reporting events, and lines that never wait."""

from __future__ import annotations

import json
import logging
import signal
import sys

import psutil
import pytest
import requests

from relay.logs import (
    REPORTED_ERROR_EVENT,
    SPAN_ID_FIELD,
    TRACE_FIELD,
    TRACE_SAMPLED_FIELD,
    CloudLoggingFormatter,
    trace_fields,
)

OBSERVE = "/observe/observables"
PROJECT = "my-project-42"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def request_lines(text: str) -> list[dict]:
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [record for record in records if record.get("logger") == "relay.request"]


# --- the headers ------------------------------------------------------------------------------


def test_traceparent_gives_trace_span_and_sampled():
    assert trace_fields(TRACEPARENT, None, PROJECT) == {
        TRACE_FIELD: f"projects/{PROJECT}/traces/{TRACE_ID}",
        SPAN_ID_FIELD: "00f067aa0ba902b7",
        TRACE_SAMPLED_FIELD: True,
    }
    assert trace_fields(f"00-{TRACE_ID}-00f067aa0ba902b7-00", None, PROJECT)[TRACE_SAMPLED_FIELD] is False
    # A later version may append fields; the first four keep their meaning.
    assert trace_fields(f"01-{TRACE_ID}-00f067aa0ba902b7-03-extra", None, PROJECT)[SPAN_ID_FIELD] == (
        "00f067aa0ba902b7"
    )


def test_cloud_trace_context_span_is_decimal_and_becomes_16_hex_digits():
    fields = trace_fields(None, f"{TRACE_ID.upper()}/1234567890123456789;o=1", PROJECT)
    assert fields == {
        TRACE_FIELD: f"projects/{PROJECT}/traces/{TRACE_ID}",
        SPAN_ID_FIELD: "112210f47de98115",  # 1234567890123456789 in hex
        TRACE_SAMPLED_FIELD: True,
    }
    assert trace_fields(None, f"{TRACE_ID}/1", PROJECT)[SPAN_ID_FIELD] == "0000000000000001"
    assert trace_fields(None, f"{TRACE_ID}/1;o=0", PROJECT)[TRACE_SAMPLED_FIELD] is False
    assert trace_fields(None, f"{TRACE_ID}/{2**64 - 1}", PROJECT)[SPAN_ID_FIELD] == "ffffffffffffffff"
    only_trace = trace_fields(None, TRACE_ID, PROJECT)
    assert only_trace[TRACE_FIELD].endswith(TRACE_ID) and SPAN_ID_FIELD not in only_trace


def test_traceparent_wins_over_cloud_trace_context_and_a_bad_one_falls_back():
    other = "0af7651916cd43dd8448eb211c80319c"
    assert trace_fields(TRACEPARENT, f"{other}/5;o=1", PROJECT)[TRACE_FIELD].endswith(TRACE_ID)
    assert trace_fields("garbage", f"{other}/5;o=1", PROJECT)[TRACE_FIELD].endswith(other)


@pytest.mark.parametrize(
    "traceparent",
    [
        "",
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",  # upper-case hex is not W3C
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",  # version ff is invalid
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-more",  # version 00 has exactly four fields
        f"00-{TRACE_ID}-00f067aa0ba902b7",
        f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-00f067aa0ba902b7-01\nINJECTED",
        f"0x-{TRACE_ID}-00f067aa0ba902b7-01",
        f"01-{TRACE_ID}-00f067aa0ba902b7-01-" + "x" * 600,  # longer than any real header
    ],
)
def test_malformed_traceparent_is_ignored(traceparent):
    assert trace_fields(traceparent, None, PROJECT) == {}


@pytest.mark.parametrize(
    "header",
    [
        "",
        f"{TRACE_ID}/",
        f"{TRACE_ID}/0",  # span 0 is no span
        f"{TRACE_ID}/{2**64}",  # beyond 64 bits
        f"{TRACE_ID}/123456789012345678901",
        f"{TRACE_ID}/12a",
        f"{TRACE_ID}/-1",
        f"{TRACE_ID}/5;o=2",
        f"{TRACE_ID}/5;o=1;x",
        f"{'0' * 32}/5;o=1",
        f"{TRACE_ID[:-1]}/5",
        f"{TRACE_ID}g/5",
        f"{TRACE_ID}/5;o=1\r\nX-Evil: 1",
        "../../etc/passwd",
    ],
)
def test_malformed_cloud_trace_context_is_ignored(header):
    assert trace_fields(None, header, PROJECT) == {}


def test_no_project_no_trace_fields():
    assert trace_fields(TRACEPARENT, None, None) == {}


# --- on the request's lines -----------------------------------------------------------------------


def test_request_line_carries_the_trace_of_the_request(make_client, capsys):
    client = make_client(GOOGLE_CLOUD_PROJECT=PROJECT)
    capsys.readouterr()
    client.post(OBSERVE, json=[], headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/255;o=1"})
    [line] = request_lines(capsys.readouterr().out)
    assert line[TRACE_FIELD] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert line[SPAN_ID_FIELD] == "00000000000000ff"
    assert line[TRACE_SAMPLED_FIELD] is True


def test_without_trace_headers_or_project_the_line_has_no_trace(make_client, capsys, monkeypatch):
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    client = make_client()
    capsys.readouterr()
    client.post(OBSERVE, json=[], headers={"traceparent": TRACEPARENT})
    [line] = request_lines(capsys.readouterr().out)
    assert TRACE_FIELD not in line and SPAN_ID_FIELD not in line


def test_a_bad_project_setting_stops_the_start_up():
    from relay.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        Settings.from_env({"GOOGLE_CLOUD_PROJECT": "projects/x/../y"})
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": PROJECT}).google_cloud_project == PROJECT


def test_an_unexpected_failure_is_an_error_reporting_event_on_the_requests_trace(
    make_client, capsys, monkeypatch
):
    from relay.handlers import Handlers

    def broken(*_args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Handlers, "observe", broken)
    client = make_client(GOOGLE_CLOUD_PROJECT=PROJECT, K_SERVICE="threatscore-relay")
    capsys.readouterr()
    client.post(OBSERVE, json=[{"type": "ip", "value": "198.51.100.7"}], headers={"traceparent": TRACEPARENT})
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    [event] = [record for record in records if record.get("@type")]
    assert event["@type"] == REPORTED_ERROR_EVENT
    assert event["severity"] == "ERROR"
    assert event["serviceContext"]["service"] == "threatscore-relay"
    assert event["serviceContext"]["version"]
    assert event["stack_trace"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: a bug" in event["stack_trace"]
    assert event[TRACE_FIELD] == f"projects/{PROJECT}/traces/{TRACE_ID}"


def test_a_warning_or_an_error_without_exception_is_no_error_event():
    formatter = CloudLoggingFormatter()
    try:
        raise ValueError("expected")
    except ValueError:
        warning = logging.LogRecord("relay.x", logging.WARNING, __file__, 1, "w", (), sys.exc_info())
    error = logging.LogRecord("relay.x", logging.ERROR, __file__, 1, "e", (), None)
    for record in (warning, error):
        assert "@type" not in json.loads(formatter.format(record))


# --- a line never waits for a later request ------------------------------------------------------


@pytest.mark.process
def test_each_request_line_is_on_stdout_before_its_response_arrives(launch_relay):
    """Google throttles an instance's CPU between requests: stop the relay's processes the moment
    the response arrives (SIGSTOP, as a throttled instance), and the line must already be there."""
    relay = launch_relay(GOOGLE_CLOUD_PROJECT=PROJECT)
    processes = [psutil.Process(relay.process.pid)]
    processes += processes[0].children(recursive=True)
    session = requests.Session()
    session.post(f"{relay.url}/version", timeout=30)  # warm up: the first request's imports
    for index in range(20):
        execution_id = f"exec{index:08d}"  # Google's form: letters and digits
        response = session.post(
            f"{relay.url}{OBSERVE}", json=[], headers={"Function-Execution-Id": execution_id}, timeout=30
        )
        assert response.status_code == 200
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        try:
            ids = [line.get("execution_id") for line in request_lines("\n".join(relay.stdout_lines()))]
            assert execution_id in ids, f"request {index}: its line was not written before the response"
        finally:
            for process in processes:
                process.send_signal(signal.SIGCONT)
