"""A failing Threatscore, through the whole relay in-process.

For each fault: HTTP 200, one error entry naming the observable and saying
what went wrong in plain words, the other observables' entities intact, and
the answer within the relay's deadline. The assertions hold whether or not
the client retries (they check the code, the words and the time, never the
number of upstream calls).
"""

from __future__ import annotations

import re
import ssl
import time

import pytest
import trustme

from simulator import ThreatscoreSimulator
from tests import answers
from tests.contract import check_conforms
from tests.ctim import check_answer
from tests.relay_process import free_port

DEADLINE = 2.0  # RELAY_DEADLINE
TIMEOUT = 0.5  # THREATSCORE_TIMEOUT (connect and read)
LATE = 1.0  # an answer may leave the relay this long after its deadline (serialising, a busy CI machine)

FAULTY = "198.51.100.66"
GOOD = "198.51.100.7"
NO_DATA = "203.0.113.9"
# What an error message must never contain: programmer's words instead of plain ones.
NOT_PLAIN = re.compile(
    r"Traceback|Exception|Error\b|Error\(|urllib3|requests\.|Pool\(|<html|0x[0-9a-f]{6}", re.I
)


@pytest.fixture
def fault_client(make_client):
    # Each fault as one lookup meets it: the circuit breaker (which cuts a run of failures
    # short) is off here; tests/test_breaker.py has it.
    return make_client(RELAY_DEADLINE=str(DEADLINE), THREATSCORE_TIMEOUT=str(TIMEOUT), BREAKER_FAILURES="0")


def observe(client, values: list[str], path: str = "/observe/observables") -> tuple[dict, float]:
    started = time.monotonic()
    response = client.post(path, json=[{"type": "ip", "value": value} for value in values])
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.mimetype == "application/json"
    answer = response.get_json()
    check_answer(answer)
    check_conforms(path, "POST", 200, answer, response.headers)
    return answer, elapsed


def check_error_entry(error: dict, value: str, code: str, words: str) -> None:
    assert error["type"] == "fatal" and error["code"] == code, error
    assert error["message"].startswith(f"{value}: "), error
    cause = error["message"].removeprefix(f"{value}: ")
    assert re.search(words, cause), error
    assert not NOT_PLAIN.search(cause), f"not plain words: {cause!r}"


def check_good_entities_intact(answer: dict, with_judgements: bool = True) -> None:
    verdicts = answer["data"]["verdicts"]["docs"]
    assert [verdict["observable"]["value"] for verdict in verdicts] == [GOOD]
    assert verdicts[0]["disposition_name"] == "Suspicious"
    if with_judgements:
        judgements = answer["data"]["judgements"]["docs"]
        assert len(judgements) == 5 and {j["observable"]["value"] for j in judgements} == {GOOD}


NESTED_TOO_DEEP = "[" * 5000 + "]" * 5000  # deeper than Python's recursion limit, under the cap
OVERSIZED = answers.with_scores(*[0.1] * 400)  # about 60 kB, over the 20 kB cap below

FAULTS = [
    pytest.param(
        {"body": answers.FOUR_ENGINES, "delay": 3}, "timeout", r"did not (answer|arrive)", id="hang"
    ),
    pytest.param(
        {"body": answers.FOUR_ENGINES, "fault": "trickle", "trickle_every": 0.2},
        "timeout",
        r"did not (answer|arrive)",
        id="trickling body",
    ),
    pytest.param(
        {"body": answers.ERROR_500, "status": 500}, "service unavailable", r"HTTP 500", id="500 JSON"
    ),
    pytest.param(
        {"body": answers.PROXY_502_HTML, "status": 502, "content_type": "text/html"},
        "service unavailable",
        r"HTTP 502",
        id="502 HTML page",
    ),
    pytest.param({"body": "", "status": 503}, "service unavailable", r"HTTP 503", id="503"),
    pytest.param({"body": "", "status": 504}, "service unavailable", r"HTTP 504", id="504"),
    pytest.param(
        {"body": answers.ERROR_500, "status": 429, "headers": {"Retry-After": "1"}},
        "too many requests",
        r"rate limiting",
        id="429 with Retry-After",
    ),
    pytest.param(
        {"body": answers.ERROR_500, "status": 429}, "too many requests", r"rate limiting", id="429 bare"
    ),
    pytest.param(
        {"body": answers.FOUR_ENGINES, "fault": "reset"},
        "connection error",
        r"broke off|reset",
        id="reset mid-body",
    ),
    pytest.param({"body": "{not json"}, "key error", r"not JSON", id="invalid JSON"),
    pytest.param(
        {"body": "<html>maintenance</html>", "content_type": "text/html"},
        "key error",
        r"not JSON",
        id="HTML with 200",
    ),
    pytest.param({"body": NESTED_TOO_DEEP}, "key error", r"nested too deeply", id="JSON nested too deep"),
    pytest.param({"body": '"a string"'}, "key error", r"unexpected format", id="JSON a string"),
    pytest.param({"body": "42"}, "key error", r"unexpected format", id="JSON a number"),
    pytest.param({"body": "null"}, "key error", r"unexpected format", id="JSON null"),
    pytest.param({"body": [{"scores": []}]}, "key error", r"unexpected format", id="JSON a non-empty list"),
    pytest.param(
        {"body": answers.RESULTS_UNDER_OTHER_KEY}, "key error", r"unexpected format", id="scores renamed"
    ),
    pytest.param(
        {"body": answers.BROKEN_MISSING_DATE}, "key error", r"unexpected format", id="score date missing"
    ),
    pytest.param({"body": {"scores": "high"}}, "key error", r"unexpected format", id="scores not a list"),
    pytest.param(
        {"body": {"scores": [{"date": "2022-01-01", "score": "high", "details": []}]}},
        "key error",
        r"unexpected format",
        id="score not a number",
    ),
    pytest.param({"body": OVERSIZED}, "key error", r"larger than 20000 bytes", id="body over the cap"),
    pytest.param(
        {"body": OVERSIZED, "fault": "chunked"},
        "key error",
        r"larger than 20000 bytes",
        id="chunked body over the cap",
    ),
    pytest.param(
        {"body": answers.ERROR_404_GENERIC, "status": 404}, "not found", r"404", id="404 of a wrong URL"
    ),
    pytest.param({"body": "{}", "status": 418}, "unknown", r"HTTP 418", id="unexpected status"),
]


@pytest.mark.parametrize(("script", "code", "words"), FAULTS)
def test_a_fault_costs_only_its_observable(threatscore, make_client, script, code, words):
    client = make_client(
        RELAY_DEADLINE=str(DEADLINE), THREATSCORE_TIMEOUT=str(TIMEOUT), THREATSCORE_MAX_BODY_BYTES="20000"
    )
    threatscore.answer(GOOD, answers.FOUR_ENGINES)
    threatscore.answer(FAULTY, **script)
    answer, elapsed = observe(client, [FAULTY, GOOD, NO_DATA])
    [error] = answer["errors"]
    check_error_entry(error, FAULTY, code, words)
    check_good_entities_intact(answer)
    assert elapsed <= DEADLINE + LATE


@pytest.mark.parametrize(("script", "code", "words"), FAULTS[:3])
def test_deliberate_keeps_the_other_verdicts_too(threatscore, fault_client, script, code, words):
    threatscore.answer(GOOD, answers.FOUR_ENGINES)
    threatscore.answer(FAULTY, **script)
    answer, elapsed = observe(fault_client, [GOOD, FAULTY], path="/deliberate/observables")
    check_error_entry(answer["errors"][0], FAULTY, code, words)
    check_good_entities_intact(answer, with_judgements=False)
    assert elapsed <= DEADLINE + LATE


def test_many_hanging_lookups_still_answer_by_the_deadline(threatscore, fault_client):
    hanging = [f"198.51.100.{index}" for index in range(100, 160)]  # six waves of 10: past the deadline
    for value in hanging:
        threatscore.answer(value, answers.FOUR_ENGINES, delay=4)
    threatscore.answer(GOOD, answers.FOUR_ENGINES)
    answer, elapsed = observe(fault_client, [GOOD, *hanging])
    assert elapsed <= DEADLINE + LATE
    assert [error["message"].split(":")[0] for error in answer["errors"]] == hanging
    for error, value in zip(answer["errors"], hanging, strict=True):
        check_error_entry(error, value, "timeout", r"did not (answer|arrive)|deadline")
    check_good_entities_intact(answer)


def test_connection_refused(make_client):
    client = make_client(
        THREATSCORE_API_URL=f"http://127.0.0.1:{free_port()}",
        RELAY_DEADLINE=str(DEADLINE),
        THREATSCORE_TIMEOUT=str(TIMEOUT),
    )
    answer, elapsed = observe(client, [FAULTY, GOOD])
    assert "data" not in answer
    for error, value in zip(answer["errors"], [FAULTY, GOOD], strict=True):
        check_error_entry(error, value, "connection error", r"refused the connection")
    assert elapsed <= DEADLINE + LATE


@pytest.fixture(scope="module")
def untrusted_https_threatscore():
    """A fake Threatscore on https whose certificate no trust store knows (trustme's own CA)."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    fake = ThreatscoreSimulator(ssl_context=context).start()
    yield fake
    fake.stop()


def test_tls_failure(untrusted_https_threatscore, make_client):
    untrusted_https_threatscore.answer(GOOD, answers.FOUR_ENGINES)
    client = make_client(
        THREATSCORE_API_URL=untrusted_https_threatscore.url,
        RELAY_DEADLINE=str(DEADLINE),
        THREATSCORE_TIMEOUT=str(TIMEOUT),
    )
    answer, elapsed = observe(client, [FAULTY, GOOD])
    for error, value in zip(answer["errors"], [FAULTY, GOOD], strict=True):
        check_error_entry(error, value, "tls error", r"certificate could not be verified")
    assert untrusted_https_threatscore.total_calls == 0  # nothing was sent over the bad connection
    assert elapsed <= DEADLINE + LATE


@pytest.mark.parametrize(("script", "code", "words"), [FAULTS[0], FAULTS[2], FAULTS[8], FAULTS[12]])
def test_health_says_what_failed_within_the_deadline(threatscore, fault_client, script, code, words):
    threatscore.answer("127.0.0.100", **script)
    started = time.monotonic()
    response = fault_client.post("/health")
    elapsed = time.monotonic() - started
    answer = response.get_json()
    check_conforms("/health", "POST", response.status_code, answer)
    [error] = answer["errors"]
    assert error["code"] == "health check failed"
    assert re.search(words, error["message"]) and not NOT_PLAIN.search(error["message"])
    assert elapsed <= DEADLINE + LATE
