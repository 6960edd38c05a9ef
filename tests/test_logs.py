"""Logging: one JSON line per record on stdout, one summary line per request, no secrets."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import jwt
import pytest

from relay.logs import CloudLoggingFormatter, RequestStats, flush_logs, redact, setup_logging
from tests import answers
from tests.conftest import ACCESS_KEY, ACCESS_KEYS, OTHER_ACCESS_KEY

OBSERVE = "/observe/observables"
TOKEN = jwt.encode({"sub": "someone", "aud": "x"}, "a-signing-key-nobody-has-" + "k" * 16, algorithm="HS256")
SECRET = "relay-shared-secret-" + "s" * 24
MARKER = "private-incident-host.example"  # a value of the request body


def logged(capsys):
    """What was printed so far, log lines included (they are written by a background thread)."""
    flush_logs()
    return capsys.readouterr()


def log_records(text: str) -> list[dict]:
    """Every line as JSON (fails on a line that is not a JSON object).

    The fake Threatscore's access log ("werkzeug") shares this process: it is not the relay's.
    """
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(record, dict) for record in records)
    return [record for record in records if record["logger"] != "werkzeug"]


def relay_output(text: str) -> str:
    return "\n".join(json.dumps(record, ensure_ascii=False) for record in log_records(text))


def request_lines(records: list[dict]) -> list[dict]:
    return [record for record in records if record.get("logger") == "relay.request"]


def test_each_request_logs_one_line_with_its_facts(threatscore, client, capsys):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer(MARKER, answers.ERROR_500, status=500)
    logged(capsys)
    response = client.post(
        OBSERVE,
        json=[{"type": "ip", "value": "198.51.100.7"}, {"type": "domain", "value": MARKER}],
        headers={"Function-Execution-Id": "exec42abc123", "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200
    out, err = logged(capsys)
    [line] = request_lines(log_records(out))
    assert line["severity"] == "WARNING"  # an upstream failure is the operator's concern
    assert line["execution_id"] == "exec42abc123"
    assert line["logging.googleapis.com/labels"] == {"execution_id": "exec42abc123"}
    assert line["path"] == OBSERVE and line["method"] == "POST" and line["status"] == 200
    assert line["observables"] == 2
    assert line["upstream_calls"] == 2 and line["cache_hits"] == 0
    assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 10_000
    assert line["errors"] == [
        {"code": "service unavailable", "message": "Threatscore is unavailable (HTTP 500)", "count": 1}
    ]
    assert "service unavailable: Threatscore is unavailable (HTTP 500)" in line["message"]
    assert line["time"].endswith("Z")
    # Neither the token nor the request body (its values) is ever written.
    for secret in (TOKEN, TOKEN.split(".")[2], MARKER, "198.51.100.7"):
        assert secret not in relay_output(out) and secret not in err


def test_upstream_calls_and_cache_hits_are_counted_per_request(threatscore, client, capsys):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer("198.51.100.8", answers.ERROR_500, status=500)
    sent = [{"type": "ip", "value": "198.51.100.7"}, {"type": "ip", "value": "198.51.100.8"}]
    logged(capsys)
    client.post(OBSERVE, json=sent)
    client.post(OBSERVE, json=sent)  # the found answer is cached, the error is not
    first, second = request_lines(log_records(logged(capsys).out))
    assert (first["upstream_calls"], first["cache_hits"]) == (2, 0)
    assert (second["upstream_calls"], second["cache_hits"]) == (1, 1)


def test_a_request_without_execution_id_gets_one(threatscore, client, capsys):
    logged(capsys)
    for _ in range(2):
        client.post(OBSERVE, json=[])
    ids = [line["execution_id"] for line in request_lines(log_records(logged(capsys).out))]
    assert len(ids) == 2 and all(ids) and ids[0] != ids[1]


@pytest.mark.parametrize(
    ("path", "method", "body", "severity", "code"),
    [
        (OBSERVE, "POST", [], "INFO", None),
        (OBSERVE, "POST", b"{oops", "INFO", "invalid argument"),  # the caller's mistake
        ("/nowhere", "POST", [], "INFO", "not found"),
        (OBSERVE, "GET", None, "INFO", "method not allowed"),
        ("/health", "POST", None, "WARNING", "health check failed"),
    ],
)
def test_severity_follows_whose_problem_it_is(
    threatscore, client, capsys, path, method, body, severity, code
):
    threatscore.answer("127.0.0.100", answers.ERROR_500, status=500)
    logged(capsys)
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    client.open(path, method=method, **kwargs)
    [line] = request_lines(log_records(logged(capsys).out))
    assert line["severity"] == severity
    assert [error["code"] for error in line.get("errors", [])] == ([code] if code else [])


def test_an_unexpected_failure_is_logged_as_error_with_its_cause(threatscore, client, capsys, monkeypatch):
    from relay.handlers import Handlers

    def broken(*_args):
        raise ZeroDivisionError("the cause, in the log only")

    monkeypatch.setattr(Handlers, "observe", broken)
    logged(capsys)
    response = client.post(OBSERVE, json=[{"type": "ip", "value": "198.51.100.7"}])
    assert response.get_json()["errors"][0] == {
        "type": "fatal",
        "code": "internal error",
        "message": "The relay failed unexpectedly",
    }
    assert b"ZeroDivisionError" not in response.data
    records = log_records(logged(capsys).out)
    [failure] = [record for record in records if record.get("stack_trace")]
    assert failure["severity"] == "ERROR"
    assert failure["error"] == "ZeroDivisionError: the cause, in the log only"
    assert "Traceback" in failure["stack_trace"] and "broken" in failure["stack_trace"]
    assert failure["execution_id"] and failure["logging.googleapis.com/sourceLocation"]["function"]
    assert request_lines(records)[0]["severity"] == "ERROR"


def test_log_level_setting(threatscore, make_client, capsys):
    client = make_client(LOG_LEVEL="WARNING", HEALTH_CACHE_SECONDS="0")
    logged(capsys)
    client.post(OBSERVE, json=[])  # INFO: not written
    client.post("/health")  # healthy ("no data"), INFO: not written
    threatscore.answer("127.0.0.100", answers.ERROR_500, status=500)
    client.post("/health")  # health check failed: WARNING
    lines = request_lines(log_records(logged(capsys).out))
    assert [line["severity"] for line in lines] == ["WARNING"]


def test_an_authorization_failure_logs_no_token(make_client, capsys):
    client = make_client(RELAY_AUTH="secret", RELAY_SECRET=SECRET)
    logged(capsys)
    response = client.post(
        OBSERVE, json=[{"type": "domain", "value": MARKER}], headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.get_json()["errors"][0]["code"] == "authorization error"
    out, err = logged(capsys)
    [line] = request_lines(log_records(out))
    assert line["errors"][0]["code"] == "authorization error"
    for secret in (TOKEN, TOKEN.split(".")[1], TOKEN.split(".")[2], SECRET, MARKER):
        assert secret not in relay_output(out) and secret not in err


# --- the formatter and the counters -------------------------------------------------


def format_record(message: str, *args, level=logging.INFO, exc_info=None, **fields) -> dict:
    record = logging.LogRecord("relay.test", level, __file__, 1, message, args, exc_info)
    if fields:
        record.json_fields = fields
    line = CloudLoggingFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_record_is_one_json_line_even_with_newlines():
    entry = format_record("first line\nsecond line %s", "\r\n{}")
    assert entry["message"] == "first line\nsecond line \r\n{}"
    assert entry["severity"] == "INFO" and entry["logger"] == "relay.test"


def test_fields_that_are_not_json_do_not_lose_the_line():
    entry = format_record("x", when=object(), data={1, 2})
    assert set(entry) >= {"when", "data"}


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {TOKEN}",
        f"token={TOKEN}",
        "header 'bearer abc.def-ghi' here",
    ],
)
def test_tokens_are_redacted_anywhere(text):
    assert "[redacted" in redact(text)
    assert TOKEN not in redact(text) and "abc.def-ghi" not in redact(text)
    entry = format_record("%s", text, level=logging.ERROR)
    assert TOKEN not in json.dumps(entry)


def test_an_exception_text_with_a_token_is_redacted():
    try:
        raise ValueError(f"bad header Bearer {TOKEN}")
    except ValueError:
        entry = format_record("failed", level=logging.ERROR, exc_info=sys.exc_info())
    assert TOKEN not in json.dumps(entry) and "ValueError" in entry["error"]


def test_setup_logging_replaces_plain_console_handlers_once():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    plain = logging.StreamHandler(io.StringIO())  # what functions-framework or basicConfig add
    root.addHandler(plain)
    try:
        setup_logging("DEBUG")
        setup_logging("DEBUG")
        assert plain not in root.handlers
        assert sum(type(h).__name__ == "StdoutHandler" for h in root.handlers) == 1
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_request_stats_count_across_threads():
    stats = RequestStats()

    def work():
        for _ in range(1000):
            stats.count_upstream_call()
            stats.count_cache_hit()
            stats.count_error("timeout", "slow")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.upstream_calls == 8000 and stats.cache_hits == 8000
    assert stats.errors() == [{"code": "timeout", "message": "slow", "count": 8000}]


def test_plain_words_about_bearer_tokens_are_kept():
    text = "Authorization failed: wrong scheme (expected Bearer), not a Bearer token"
    assert redact(text) == text


def test_lines_from_many_threads_are_all_written_whole(capsys):
    setup_logging("INFO")
    logger = logging.getLogger("relay.test-writer")
    logged(capsys)

    def log_many(thread: int) -> None:
        for index in range(200):
            logger.info("line %d of thread %d %s", index, thread, "x" * 300)

    threads = [threading.Thread(target=log_many, args=(thread,)) for thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = [r for r in log_records(logged(capsys).out) if r["logger"] == "relay.test-writer"]
    assert len(records) == 1600
    assert {r["message"].split(" of ")[1].split(" ")[1] for r in records} == {str(t) for t in range(8)}


# --- every field redacted and bounded -------------------------------------------------


def format_line(message: str = "hello", args=None, **fields) -> str:
    record = logging.LogRecord("relay.test", logging.WARNING, __file__, 1, message, args, None)
    record.json_fields = fields
    return CloudLoggingFormatter().format(record)


def test_a_token_is_redacted_in_every_field_not_only_the_message():
    line = format_line(path=f"/{TOKEN}/observe", nested={"items": [f"Bearer {TOKEN}"]})
    assert TOKEN not in line and TOKEN.split(".")[1] not in line
    record = json.loads(line)
    assert record["path"] == "/[redacted token]/observe"
    assert record["nested"]["items"] == ["Bearer [redacted]"]


def test_no_line_is_longer_than_the_bound():
    from relay.logs import MAX_LINE_BYTES

    huge = "k" * (8 << 20)  # an upstream's key name, 8 MB
    lines = [
        format_line("%s", (huge,)),
        format_line(error=huge),
        format_line(errors=[{"code": "key error", "message": f"unexpected key {huge[:100_000]}"}] * 1000),
        format_line(**{f"field_{index}": "é" * 4000 for index in range(200)}),
        format_line(deep=[[[[[[[[[["x" * 100_000]]]]]]]]]]),
    ]
    for line in lines:
        assert len(line.encode()) <= MAX_LINE_BYTES
        record = json.loads(line)
        assert record["severity"] == "WARNING" and record["logger"] == "relay.test"
    assert json.loads(lines[0])["message"].startswith("kkkk")
    assert "more characters" in json.loads(lines[0])["message"]


# Characters a log viewer would obey: JSON escapes the C0 controls, not these.
ACTING = ("\u202e", "\u2066", "\x9b", "\x9d", "\x7f", "\u2028", "\u200b")


def test_no_line_carries_a_character_that_acts_on_its_reader():
    lines = [
        format_line("quoted: %s", ("abc\u202edef\x9b2J",)),
        format_line(path="/observe\u2066x\u2069", nested={"k\x9d": ["\x7fv\u2028"]}),
        format_line(error="\x1b]52;c;eA==\x07\u200b"),
    ]
    for line in lines:
        assert line.isprintable() and not any(char in line for char in ACTING), line
    assert json.loads(lines[0])["message"] == "quoted: abc\\u202edef\\x9b2J"
    assert json.loads(lines[1])["path"] == "/observe\\u2066x\\u2069"
    assert format_line("plain words") == format_line("plain words")  # the short path still serves


def test_a_path_with_bidi_overrides_and_c1_controls_reaches_the_log_spelled_out(launch_relay, http):
    relay = launch_relay()
    response = http.post(f"{relay.url}/observe%E2%80%AEslbavresbo%C2%9B2J", json=[], timeout=30)
    assert response.status_code == 404

    from tests.hostile_servers import wait_until

    assert wait_until(lambda: any(record["logger"] == "relay.request" for record in relay.log_records()))
    stdout = relay.stdout_path.read_text(encoding="utf-8")
    assert not any(char in stdout for char in ACTING)
    (record,) = [record for record in relay.log_records() if record["logger"] == "relay.request"]
    assert record["path"] == "/observe\\u202eslbavresbo\\x9b2J"


def test_the_request_log_of_the_real_process_redacts_its_path_and_refuses_made_up_execution_ids(
    launch_relay, http
):
    from relay.logs import MAX_LINE_BYTES

    relay = launch_relay()
    made_up = ["evil id", "x" * 5000, "../../labels", "short", "\u00e9t\u00e9-1234567"]
    for execution_id in made_up:
        response = http.post(
            f"{relay.url}/{TOKEN}/observe/observables",
            json=[],
            headers={"Function-Execution-Id": execution_id},
            timeout=30,
        )
        assert response.status_code == 404
    google_form = "a1B2c3D4e5F6"
    http.post(f"{relay.url}/version", headers={"Function-Execution-Id": google_form}, timeout=30)
    http.post(f"{relay.url}/version", timeout=30)  # the request line is logged once it is answered

    def request_records():
        return [record for record in relay.log_records() if record["logger"] == "relay.request"]

    from tests.hostile_servers import wait_until

    assert wait_until(lambda: len(request_records()) == len(made_up) + 2)
    stdout = relay.stdout_path.read_text()
    assert TOKEN not in stdout and TOKEN.split(".")[1] not in stdout
    records = request_records()
    for record in records[: len(made_up)]:
        assert record["path"] == "/[redacted token]/observe/observables"
        label = record["logging.googleapis.com/labels"]["execution_id"]
        assert label == record["execution_id"] and label not in made_up and label.isalnum()
    assert records[len(made_up)]["execution_id"] == google_form
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in relay.stdout_lines())


def test_the_request_line_counts_what_was_dropped_and_why(threatscore, client, capsys):
    logged(capsys)
    body = [
        {"type": "ip", "value": "198.51.100.7"},
        {"type": "email", "value": "someone@example.com"},
        {"type": "sha512", "value": "ab" * 64},
        {"type": "ip", "value": "not-an-address"},
    ]
    assert client.post(OBSERVE, json=body).status_code == 200

    [line] = request_lines(log_records(logged(capsys).out))
    assert line["observables"] == 1
    assert line["dropped"] == {"invalid value": 1, "unsupported type": 2}
    assert "1 observables (1 dropped: invalid value, 2 dropped: unsupported type)" in line["message"]
    assert "not-an-address" not in line["message"] and "someone@example.com" not in json.dumps(line)


def test_a_request_with_nothing_dropped_has_no_dropped_field(threatscore, client, capsys):
    logged(capsys)
    client.post(OBSERVE, json=[{"type": "ip", "value": "198.51.100.7"}])

    [line] = request_lines(log_records(logged(capsys).out))
    assert "dropped" not in line


def test_start_up_logs_one_line_saying_what_the_relay_is(threatscore, make_client, capsys):
    logged(capsys)
    make_client(
        RELAY_AUTH="jwks",
        RELAY_JWKS_HOSTS="keys.example:8443",
        RELAY_AUDIENCE="https://relay.example/relay",
        RELAY_ACCESS_KEYS=ACCESS_KEYS,
        RELAY_DEADLINE="12.5",
        CACHE_TTL="90",
    )

    records = log_records(logged(capsys).out)
    [line] = [record for record in records if record["message"].startswith("Threatscore relay ")]
    message = line["message"]
    assert f"backend score at {threatscore.url}" in message
    assert "auth jwks (key hosts keys.example:8443; audience set; tenants soc, mssp-client-2)" in message
    assert "cache in memory, 90 s found / 600 s no data, one per tenant" in message
    assert ACCESS_KEY not in message and OTHER_ACCESS_KEY not in message
    assert "deadline 12.5 s" in message
    assert "relay.example" not in message  # whether an audience is set, not which


def test_the_start_up_line_never_shows_a_secret(threatscore, make_client, capsys):
    logged(capsys)
    make_client(RELAY_AUTH="secret", RELAY_SECRET=SECRET, CACHE_TTL="0", CACHE_NEGATIVE_TTL="0")

    out = logged(capsys).out
    [line] = [record for record in log_records(out) if record["message"].startswith("Threatscore relay ")]
    assert "auth secret" in line["message"] and "cache off" in line["message"]
    assert SECRET not in out


def test_the_short_path_writes_the_line_the_field_by_field_path_writes():
    from relay.logs import _bounded, _short_plain_line, _to_line

    entry = {
        "severity": "INFO",
        "message": "POST /observe/observables 200: 2 observables (1.2 ms)",
        "logger": "relay.request",
        "execution_id": "abcdef123456",
        "status": 200,
        "duration_ms": 1.2,
        "errors": [{"code": "timeout", "count": 1}],
        "dropped": {"invalid value": 1},
    }
    assert _short_plain_line(entry) == _to_line(_bounded(entry))
    # What the field-by-field path must handle takes it: a token, a long field, a set.
    assert _short_plain_line({**entry, "path": "/x/Bearer abcdefghijklmnop"}) is None
    assert _short_plain_line({**entry, "path": "/x/eyJhbGciOi.eyJzdWIiOi.c2ln"}) is None
    assert _short_plain_line({**entry, "message": "x" * 5000}) is None
    assert _short_plain_line({**entry, "tags": {"a"}}) is None
