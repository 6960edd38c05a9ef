"""The Threatscore client against a real fake Threatscore on 127.0.0.1."""

import ssl
import time
from dataclasses import replace

import pytest
import requests
import trustme

from relay.config import Settings
from relay.errors import RelayError
from relay.threatscore import ThreatscoreClient
from tests import answers
from tests.conftest import free_port
from tests.fake_threatscore import FakeThreatscore


@pytest.fixture
def make_threatscore_client(threatscore):
    def build(**changes) -> ThreatscoreClient:
        defaults = {
            "threatscore_api_url": threatscore.url,
            "threatscore_connect_timeout": 1.0,
            "threatscore_read_timeout": 1.0,
        }
        settings = replace(Settings(), **{**defaults, **changes})
        return ThreatscoreClient(settings, requests.Session())

    return build


@pytest.fixture
def ts_client(make_threatscore_client):
    return make_threatscore_client()


def error_of(ts_client, value) -> RelayError:
    with pytest.raises(RelayError) as raised:
        ts_client.score(value)
    return raised.value


def test_found_answer(threatscore, ts_client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    answer = ts_client.score("198.51.100.7")
    assert len(answer["scores"][0]["details"]) == 4
    assert threatscore.raw_paths == ["/api/score/198.51.100.7"]
    assert threatscore.user_agents[0].startswith("threatscore-xdr-relay/")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, answers.NO_DATA_NESTED_EMPTY),
        (200, answers.NO_DATA_NO_SCORES),
        (200, answers.NO_DATA_BARE_LIST),
        (404, answers.NO_DATA_404),
    ],
)
def test_every_no_data_form(threatscore, ts_client, status, body):
    threatscore.answer("203.0.113.9", body, status=status)
    assert ts_client.score("203.0.113.9") is None


def test_unknown_values_are_no_data(ts_client):
    assert ts_client.score("192.0.2.200") is None  # the fake's default: 404 Observable not found


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
        ts_client.score(value)
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
    fake = FakeThreatscore(ssl_context=server_context).start()
    try:
        fake.answer("198.51.100.7", answers.FOUR_ENGINES)
        settings = replace(Settings(), threatscore_api_url=fake.url, threatscore_read_timeout=2.0)
        error = error_of(ThreatscoreClient(settings, requests.Session()), "198.51.100.7")
        assert error.code == "tls error" and "certificate" in error.message
        assert fake.total_calls == 0
    finally:
        fake.stop()
