"""The Threatscore client against a real fake Threatscore on 127.0.0.1."""

import ssl
import time
from dataclasses import replace
from email.utils import formatdate

import pytest
import requests
import trustme

from relay.config import Settings
from relay.errors import RelayError
from relay.threatscore import ScoreClient
from relay.threatscore.transport import RETRY_BACKOFF_FACTOR, RETRY_JITTER, retry_policy
from simulator import Scripted, ThreatscoreSimulator
from tests import answers
from tests.conftest import free_port

VALUE = "198.51.100.7"


class Waits(list):
    """A sleep that remembers how long it was asked to wait (and really waits)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


@pytest.fixture
def make_threatscore_client(threatscore):
    def build(sleep=time.sleep, **changes) -> ScoreClient:
        defaults = {
            "threatscore_api_url": threatscore.url,
            "threatscore_timeout": (1.0, 1.0),
            "threatscore_retries": 0,  # retries have their own tests below
        }
        settings = replace(Settings(), **{**defaults, **changes})
        return ScoreClient(settings, requests.Session(), sleep=sleep)

    return build


@pytest.fixture
def ts_client(make_threatscore_client):
    return make_threatscore_client()


def error_of(ts_client, value, deadline=None) -> RelayError:
    with pytest.raises(RelayError) as raised:
        ts_client.fetch(value, deadline)
    return raised.value


def test_found_answer(threatscore, ts_client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    answer = ts_client.fetch("198.51.100.7")
    assert len(answer["scores"][0]["details"]) == 4
    assert threatscore.raw_paths == ["/api/score/198.51.100.7"]
    assert threatscore.user_agents[0].startswith("threatscore-xdr-relay/")


@pytest.mark.parametrize(("status", "body"), answers.NO_DATA_FORMS)
def test_every_no_data_form(threatscore, ts_client, status, body):
    threatscore.answer("203.0.113.9", body, status=status)
    assert ts_client.fetch("203.0.113.9") is None


def test_unknown_values_are_no_data(ts_client):
    assert ts_client.fetch("192.0.2.200") is None  # the fake's default: 404 Observable not found


@pytest.mark.parametrize(
    ("status", "body", "code", "words"),
    [
        (404, answers.ERROR_404_GENERIC, "not found", "404"),
        (404, "<html>Not Found</html>", "not found", "404"),
        (500, answers.ERROR_500, "service unavailable", "HTTP 500"),
        (502, answers.PROXY_502_HTML, "service unavailable", "HTTP 502"),
        (503, "", "service unavailable", "HTTP 503"),
        (429, answers.ERROR_500, "too many requests", "429"),
        (418, "{}", "unknown", "HTTP 418"),
        (200, "<html>maintenance</html>", "key error", "not JSON"),
        (200, '"just a string"', "key error", "unexpected format"),
        (200, answers.RESULTS_UNDER_OTHER_KEY, "key error", "unexpected format"),
        (200, answers.BROKEN_MISSING_SCORES, "key error", "unexpected format"),
    ],
)
def test_failures_become_precise_errors(threatscore, ts_client, status, body, code, words):
    threatscore.answer("198.51.100.7", body, status=status)
    error = error_of(ts_client, "198.51.100.7")
    assert error.code == code
    assert words in error.message


def test_hostile_values_stay_one_percent_encoded_path_segment(threatscore, ts_client):
    for value in ["1.1.1.1/../../admin?q=1#frag", "x/../../y", "...", "a b", "2001:db8::1", "bücher.example"]:
        ts_client.fetch(value)
    assert threatscore.raw_paths == [
        "/api/score/1.1.1.1%2F..%2F..%2Fadmin%3Fq%3D1%23frag",
        "/api/score/x%2F..%2F..%2Fy",
        "/api/score/...",
        "/api/score/a%20b",
        "/api/score/2001%3Adb8%3A%3A1",
        "/api/score/b%C3%BCcher.example",
    ]


@pytest.mark.parametrize("value", ["..", ".", ""])
def test_dot_segments_are_never_sent(threatscore, ts_client, value):
    error = error_of(ts_client, value)
    assert error.code == "invalid argument"
    assert threatscore.total_calls == 0 and threatscore.raw_paths == []


def test_timeout(threatscore, ts_client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, delay=3)
    started = time.monotonic()
    error = error_of(ts_client, "198.51.100.7")
    assert error.code == "timeout" and "did not answer within 1 s" in error.message
    assert time.monotonic() - started < 2.5


def test_a_trickling_body_is_cut_at_the_read_timeout(threatscore, ts_client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, fault="trickle", trickle_every=0.2)
    started = time.monotonic()
    error = error_of(ts_client, "198.51.100.7")
    assert error.code == "timeout"
    assert time.monotonic() - started < 2.5


def test_connection_reset_mid_body(threatscore, ts_client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, fault="reset")
    error = error_of(ts_client, "198.51.100.7")
    assert error.code == "connection error" and "broke off mid-answer" in error.message


def test_connection_refused(make_threatscore_client):
    client = make_threatscore_client(threatscore_api_url=f"http://127.0.0.1:{free_port()}")
    error = error_of(client, "198.51.100.7")
    assert error.code == "connection error" and "refused" in error.message


def test_oversized_body_is_refused(threatscore, make_threatscore_client):
    client = make_threatscore_client(threatscore_max_body_bytes=1000)
    threatscore.answer("198.51.100.7", answers.with_scores(*[0.1] * 50))
    error = error_of(client, "198.51.100.7")
    assert error.code == "key error" and "larger than 1000 bytes" in error.message


def test_oversized_chunked_body_is_refused(threatscore, make_threatscore_client):
    client = make_threatscore_client(threatscore_max_body_bytes=1000)
    threatscore.answer("198.51.100.7", "[" + " " * 5000 + "]", fault="trickle", trickle_every=0)
    error = error_of(client, "198.51.100.7")
    assert "larger than 1000 bytes" in error.message


def test_tls_failure_with_a_self_signed_certificate():
    authority = trustme.CA()  # our client does not trust it: the certificate is self-signed to it
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    fake = ThreatscoreSimulator(ssl_context=server_context).start()
    try:
        fake.answer("198.51.100.7", answers.FOUR_ENGINES)
        settings = replace(Settings(), threatscore_api_url=fake.url, threatscore_timeout=(3.0, 2.0))
        error = error_of(ScoreClient(settings, requests.Session()), "198.51.100.7")
        assert error.code == "tls error" and "certificate" in error.message
        assert fake.total_calls == 0
    finally:
        fake.stop()


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_502_503_504_are_retried_then_the_answer_is_used(threatscore, make_threatscore_client, status):
    threatscore.answer_in_turn(
        VALUE,
        Scripted(status=status, body=answers.PROXY_502_HTML, content_type="text/html"),
        Scripted(status=status, body=""),
        Scripted(body=answers.FOUR_ENGINES),
    )
    client = make_threatscore_client(threatscore_retries=2)
    answer = client.fetch(VALUE, time.monotonic() + 10)
    assert len(answer["scores"][0]["details"]) == 4
    assert threatscore.calls_for(VALUE) == 3


def test_a_connection_reset_mid_answer_is_retried(threatscore, make_threatscore_client):
    threatscore.answer_in_turn(
        VALUE, Scripted(body=answers.FOUR_ENGINES, fault="reset"), Scripted(body=answers.FOUR_ENGINES)
    )
    answer = make_threatscore_client(threatscore_retries=1).fetch(VALUE, time.monotonic() + 10)
    assert len(answer["scores"][0]["details"]) == 4
    assert threatscore.calls_for(VALUE) == 2


def test_retries_stop_after_threatscore_retries(threatscore, make_threatscore_client):
    threatscore.answer(VALUE, "", status=503)
    waits = Waits()
    error = error_of(
        make_threatscore_client(threatscore_retries=2, sleep=waits), VALUE, time.monotonic() + 10
    )
    assert error.code == "service unavailable" and "HTTP 503" in error.message
    assert threatscore.calls_for(VALUE) == 3
    assert len(waits) == 2


def test_waits_between_attempts_grow_exponentially(threatscore, make_threatscore_client):
    threatscore.answer(VALUE, "", status=502)
    waits = Waits()
    error_of(make_threatscore_client(threatscore_retries=3, sleep=waits), VALUE, time.monotonic() + 10)
    assert len(waits) == 3
    for attempt, wait in enumerate(waits):
        base = RETRY_BACKOFF_FACTOR * 2**attempt
        assert base <= wait <= base + RETRY_JITTER


def test_waits_are_jittered_so_lookups_that_failed_together_come_back_apart():
    first_waits = {
        retry_policy(2).increment("GET", "/x", error=ConnectionError()).get_backoff_time() for _ in range(20)
    }
    assert len(first_waits) > 1


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (500, answers.ERROR_500, "service unavailable"),
        (404, answers.ERROR_404_GENERIC, "not found"),
        (400, {"error": {"type": "Client Error", "code": "400", "message": "Bad Request"}}, "unknown"),
        (403, "<html>Forbidden</html>", "authorization error"),
        (401, answers.REFUSED_401_JSON, "authorization error"),
    ],
)
def test_other_statuses_are_not_retried(threatscore, make_threatscore_client, status, body, code):
    threatscore.answer(VALUE, body, status=status)
    waits = Waits()
    error = error_of(
        make_threatscore_client(threatscore_retries=2, sleep=waits), VALUE, time.monotonic() + 10
    )
    assert error.code == code
    assert threatscore.calls_for(VALUE) == 1
    assert waits == []


def test_a_read_timeout_is_not_retried(threatscore, make_threatscore_client):
    threatscore.answer(VALUE, answers.FOUR_ENGINES, delay=2)
    client = make_threatscore_client(threatscore_retries=2, threatscore_timeout=(1.0, 0.5))
    error = error_of(client, VALUE, time.monotonic() + 10)
    assert error.code == "timeout" and "did not answer within 0.5 s" in error.message
    assert threatscore.calls_for(VALUE) == 1


def test_connection_refused_is_retried_then_the_answer_is_used():
    port = free_port()  # nothing listens there yet: the first attempt is refused
    fake = ThreatscoreSimulator(port=port)
    waits: list[float] = []

    def start_threatscore_then_wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            fake.start()
            fake.answer(VALUE, answers.FOUR_ENGINES)
        time.sleep(seconds)

    settings = replace(Settings(), threatscore_api_url=f"http://127.0.0.1:{port}", threatscore_retries=2)
    client = ScoreClient(settings, requests.Session(), sleep=start_threatscore_then_wait)
    try:
        answer = client.fetch(VALUE, time.monotonic() + 10)
        assert len(answer["scores"][0]["details"]) == 4
        assert len(waits) == 1 and fake.calls_for(VALUE) == 1
    finally:
        fake.stop()


def test_connection_refused_every_time_gives_up_after_the_retries(make_threatscore_client):
    waits = Waits()
    client = make_threatscore_client(
        threatscore_api_url=f"http://127.0.0.1:{free_port()}", threatscore_retries=2, sleep=waits
    )
    error = error_of(client, VALUE, time.monotonic() + 10)
    assert error.code == "connection error" and "refused" in error.message
    assert len(waits) == 2


def test_429_waits_for_retry_after_then_uses_the_answer(threatscore, make_threatscore_client):
    threatscore.answer_in_turn(
        VALUE,
        Scripted(status=429, body=answers.ERROR_500, headers={"Retry-After": "1"}),
        Scripted(body=answers.FOUR_ENGINES),
    )
    waits = Waits()
    answer = make_threatscore_client(threatscore_retries=2, sleep=waits).fetch(VALUE, time.monotonic() + 5)
    assert len(answer["scores"][0]["details"]) == 4
    assert waits == [1]
    assert threatscore.calls_for(VALUE) == 2


@pytest.mark.parametrize(
    "retry_after", ["30", formatdate(time.time() + 3600, usegmt=True)], ids=["seconds", "http-date"]
)
def test_429_asking_to_wait_beyond_the_deadline_is_too_many_requests_at_once(
    threatscore, make_threatscore_client, retry_after
):
    threatscore.answer(VALUE, answers.ERROR_500, status=429, headers={"Retry-After": retry_after})
    waits = Waits()
    started = time.monotonic()
    error = error_of(make_threatscore_client(threatscore_retries=2, sleep=waits), VALUE, started + 3)
    assert error.code == "too many requests"
    assert "longer than the relay's deadline allows" in error.message
    assert time.monotonic() - started < 1
    assert waits == [] and threatscore.calls_for(VALUE) == 1


def test_retries_never_pass_the_deadline(threatscore, make_threatscore_client):
    threatscore.answer(VALUE, "", status=503, delay=0.3)
    client = make_threatscore_client(threatscore_retries=10)
    started = time.monotonic()
    error = error_of(client, VALUE, started + 1.2)
    elapsed = time.monotonic() - started
    assert error.code in ("service unavailable", "timeout")
    assert elapsed < 1.2 + 0.3
    assert 2 <= threatscore.calls_for(VALUE) < 11


def test_an_attempt_is_cut_short_at_the_deadline(threatscore, make_threatscore_client):
    threatscore.answer(VALUE, answers.FOUR_ENGINES, delay=3)
    client = make_threatscore_client(threatscore_timeout=(1.0, 5.0), threatscore_retries=2)
    started = time.monotonic()
    error = error_of(client, VALUE, started + 0.5)
    assert error.code == "timeout" and "deadline" in error.message
    assert time.monotonic() - started < 1.5
    assert threatscore.calls_for(VALUE) == 1


@pytest.mark.parametrize("value", ["reset.example", "no-such-host.example", "198.51.100.7"])
def test_the_value_looked_up_never_changes_how_a_failure_is_described(make_threatscore_client, value):
    client = make_threatscore_client(
        threatscore_api_url=f"http://127.0.0.1:{free_port()}", threatscore_retries=0
    )
    assert error_of(client, value).message == "Threatscore refused the connection"
