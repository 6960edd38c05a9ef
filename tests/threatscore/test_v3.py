"""The v3 client against the fake Threatscore on 127.0.0.1: the request, every answer form,
the refusals and the API key."""

import time

import pytest
import requests

from relay.config import Settings
from relay.errors import RelayError
from relay.threatscore import ScoreClient, V3Client, build_source
from relay.threatscore.transport import USER_AGENT
from simulator import Scripted
from tests import answers

VALUE = "203.0.113.5"
SEARCH = "/api/v3/observables/search/by-value"


@pytest.fixture
def make_v3_client(threatscore):
    def build(sleep=time.sleep, **changes) -> V3Client:
        settings = Settings(
            threatscore_api="v3",
            **{
                "threatscore_api_url": threatscore.url,
                "threatscore_timeout": (1.0, 1.0),
                "threatscore_retries": 0,
                **changes,
            },
        )
        return V3Client(settings, requests.Session(), sleep=sleep)

    return build


@pytest.fixture
def v3_client(make_v3_client):
    return make_v3_client()


def error_of(client, value=VALUE, deadline=None) -> RelayError:
    with pytest.raises(RelayError) as raised:
        client.fetch(value, deadline)
    return raised.value


def test_the_request_is_a_post_of_exactly_the_value_as_json(threatscore, v3_client):
    threatscore.answer(VALUE, answers.V3_FOUND)
    v3_client.fetch(VALUE)
    [(method, path, body, headers)] = threatscore.requests_seen
    assert (method, path, body) == ("POST", SEARCH, {"data": VALUE})
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT
    assert "Authorization" not in headers  # no key configured, none sent
    assert threatscore.calls_for(VALUE) == 1


@pytest.mark.parametrize(
    "value", ["https://example.com/a?b=c#d", 'Mozilla/5.0 (X11) "quoted" ü', "x/../../admin?q=1#", "ab" * 32]
)
def test_any_value_travels_in_the_body_as_it_is(threatscore, v3_client, value):
    threatscore.answer(value, answers.V3_SAFE_BARE)
    assert v3_client.fetch(value)["level"] == "safe"
    assert threatscore.requests_seen[0][1:3] == (SEARCH, {"data": value})


def test_a_found_answer_is_normalised(threatscore, v3_client):
    threatscore.answer(VALUE, answers.V3_FOUND)
    answer = v3_client.fetch(VALUE)
    assert answer == {
        "api": "v3",
        "score": 0.8125,
        "level": "malicious",
        "categories": ["phishing", "malicious_host"],
        "flags": ["blocklist", "compromission"],
        "country": "Netherlands",
        "city": "Amsterdam",
        "asn": 64500,
        "as_organization": "Example Hosting B.V.",
        "first_seen": "2024-11-05T08:00:00.000+00:00",
        "last_seen": "2025-03-02T10:20:30.000+00:00",
        "analysis": [
            {"id": "1a2b" * 8, "date": "2025-03-02T10:20:30.000+00:00", "score": 0.8125},
            {"id": "1a2b" * 8, "date": "2024-11-05T08:00:00.000+00:00", "score": 0.4},
        ],
        "tags": ["dns", "hosting"],
    }


@pytest.mark.parametrize(("status", "body"), answers.V3_NO_DATA_FORMS)
def test_every_nothing_known_form_is_no_data(threatscore, v3_client, status, body):
    threatscore.answer(VALUE, body, status=status)
    assert v3_client.fetch(VALUE) is None


def test_epoch_milliseconds_are_dates(threatscore, v3_client):
    threatscore.answer(VALUE, answers.V3_EPOCH_AND_ODD_LEVEL)
    answer = v3_client.fetch(VALUE)
    assert (answer["first_seen"], answer["last_seen"]) == (
        "2023-11-14T22:13:20.000+00:00",
        "2024-03-09T16:00:00.123+00:00",
    )
    assert answer["level"] == "dangerous-ish"


def test_an_error_message_in_the_body_is_an_error_carrying_it_cleaned(threatscore, v3_client):
    threatscore.answer(VALUE, answers.V3_ERROR_IN_BODY)
    error = error_of(v3_client)
    assert error.code == "unknown"
    assert error.message == "Threatscore answered with an error: Search backend unavailable"


def test_a_long_error_message_is_cut(threatscore, v3_client):
    threatscore.answer(VALUE, {"error": {"message": "word " * 10_000}})
    assert len(error_of(v3_client).message) < 300


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (answers.V3_THREATSCORE_NOT_AN_OBJECT, "threatscore"),
        (answers.V3_VALUE_NOT_A_NUMBER, "threatscore: value"),
        ({"threatscore": {"value": 0.5, "categories": "phishing"}}, "categories"),
        ({"threatscore": {"value": 0.5, "indicators": {"scan": "yes"}}}, "indicators"),
        ({"threatscore": {"value": 0.5}, "observable": {"first_seen": "last tuesday"}}, "first_seen"),
        ({"threatscore": {"value": 0.5}, "observable": {"as": {"asn": "AS13335"}}}, "asn"),
        ({"threatscore": {"value": 0.5}, "analysis": [{"date": "2025-01-01", "score": 0.5}]}, "id"),
        ({"threatscore": {"value": 0.5}, "analysis": [{"id": "a", "score": 0.5}]}, "without a date"),
        ({"threatscore": {"value": 0.5}, "analysis": "none"}, "analysis"),
        # Overflows: a year past the calendar after the offset, a score of thousands of digits.
        (
            {"threatscore": {"value": 0.5}, "observable": {"last_seen": "9999-12-31T23:30:00-01:00"}},
            "last_seen",
        ),
        ({"threatscore": {"value": 0.5}, "observable": {"last_seen": 10**20}}, "last_seen"),
        ({"threatscore": {"value": 10**400}}, "value"),
        ([], "JSON something else"),
        ('"found"', "JSON a string"),
    ],
)
def test_a_structure_that_does_not_fit_is_a_key_error_naming_the_field(threatscore, v3_client, body, field):
    threatscore.answer(VALUE, body)
    error = error_of(v3_client)
    assert error.code == "key error"
    assert error.message.startswith("Threatscore answered in an unexpected format")
    assert field in error.message


def test_a_body_that_is_not_json_is_a_key_error(threatscore, v3_client):
    threatscore.answer(VALUE, "<html>maintenance</html>", content_type="text/html")
    assert error_of(v3_client).code == "key error"


@pytest.mark.parametrize(
    ("status", "body", "quoted"),
    [
        (403, answers.REFUSED_403_TEXT, '(HTTP 403: "Blocked by IP filtering")'),
        (403, answers.REFUSED_403_JSON, '(HTTP 403: "Blocked by IP filtering")'),
        (401, answers.REFUSED_401_JSON, '(HTTP 401: "Invalid API key")'),
        (403, "<html><body>Forbidden</body></html>", "(HTTP 403)"),  # a proxy's page is not quoted
        (403, "Blocked\x00 by\n\nIP " + "filtering " * 100, '(HTTP 403: "Blocked by IP filtering filtering'),
    ],
)
def test_refusals_say_what_they_are_and_what_to_do(threatscore, make_v3_client, status, body, quoted):
    threatscore.answer(VALUE, body, status=status, content_type="text/plain")
    waits = []
    error = error_of(make_v3_client(threatscore_retries=2, sleep=waits.append), VALUE, time.monotonic() + 10)
    assert error.code == "authorization error"
    assert error.message.startswith(f"Threatscore refused the relay {quoted}")
    assert "licensed accounts from allow-listed addresses" in error.message
    assert "docs/troubleshooting.md" in error.message
    assert len(error.message) < 700
    assert threatscore.calls_for(VALUE) == 1 and waits == []  # never retried


def test_a_503_is_retried_as_for_the_score_api(threatscore, make_v3_client):
    threatscore.answer_in_turn(VALUE, Scripted(status=503, body=""), Scripted(body=answers.V3_FOUND))
    answer = make_v3_client(threatscore_retries=1).fetch(VALUE, time.monotonic() + 10)
    assert answer["level"] == "malicious"
    assert threatscore.calls_for(VALUE) == 2
    assert [seen[2] for seen in threatscore.requests_seen] == [{"data": VALUE}] * 2


def test_the_size_cap_applies(threatscore, make_v3_client):
    threatscore.answer(VALUE, {**answers.V3_FOUND, "tags": ["t" * 100] * 50})
    error = error_of(make_v3_client(threatscore_max_body_bytes=1000))
    assert error.code == "key error" and "larger than 1000 bytes" in error.message


def test_an_api_key_is_sent_as_a_bearer_token(threatscore, make_v3_client):
    threatscore.answer(VALUE, answers.V3_FOUND)
    make_v3_client(threatscore_api_key="k3y-of-a-licensed-account").fetch(VALUE)
    assert threatscore.requests_seen[0][3]["Authorization"] == "Bearer k3y-of-a-licensed-account"


def test_an_api_key_goes_in_the_header_named(threatscore, make_v3_client):
    threatscore.answer(VALUE, answers.V3_FOUND)
    client = make_v3_client(
        threatscore_api_key="k3y-of-a-licensed-account", threatscore_api_key_header="X-Api-Key"
    )
    client.fetch(VALUE)
    headers = threatscore.requests_seen[0][3]
    assert headers["X-Api-Key"] == "k3y-of-a-licensed-account" and "Authorization" not in headers


def test_a_refused_key_is_never_repeated_in_the_message(threatscore, make_v3_client):
    threatscore.answer(VALUE, answers.REFUSED_401_JSON, status=401)
    error = error_of(make_v3_client(threatscore_api_key="k3y-of-a-licensed-account"))
    assert error.code == "authorization error" and "k3y" not in error.message


def test_the_factory_picks_the_configured_api(threatscore):
    session = requests.Session()
    assert isinstance(build_source(Settings(threatscore_api="v3"), session), V3Client)
    assert isinstance(build_source(Settings(threatscore_api="score"), session), ScoreClient)


def test_the_score_api_refusal_reads_the_same(threatscore):
    threatscore.answer(VALUE, answers.REFUSED_403_TEXT, status=403, content_type="text/plain")
    client = ScoreClient(
        Settings(threatscore_api="score", threatscore_api_url=threatscore.url), requests.Session()
    )
    error = error_of(client)
    assert error.code == "authorization error"
    assert error.message.startswith('Threatscore refused the relay (HTTP 403: "Blocked by IP filtering")')
    assert threatscore.requests_seen[0][:2] == ("GET", f"/api/score/{VALUE}")
