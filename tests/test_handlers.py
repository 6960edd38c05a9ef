"""The handlers with either backend, in-process (functions_framework.create_app over main.py):
every v3 type, the entity kinds, refusals, per-observable mapping failures and the answer's bound."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from relay.handlers import ENTITY_KINDS, MAX_ANSWER_BYTES, health_probe
from relay.observables import TYPES_BY_API
from tests import answers
from tests.ctim import check_answer
from tests.test_app import OBSERVE, post

DELIBERATE = "/deliberate/observables"
REFER = "/refer/observables"
HEALTH = "/health"

# XDR type, the caller's value, what Threatscore is asked.
EVERY_V3_TYPE = [
    ("ip", "203.0.113.5", "203.0.113.5"),
    ("ipv6", "2001:DB8::5", "2001:db8::5"),
    ("domain", "Bücher.Example.", "xn--bcher-kva.example"),
    ("url", "HTTPS://Phish.Example/Login?Next=/", "https://phish.example/Login?Next=/"),
    ("md5", "D41D8CD98F00B204E9800998ECF8427E", "d41d8cd98f00b204e9800998ecf8427e"),
    ("sha1", "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    (
        "sha256",
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
    ("user_agent", "Mozilla/5.0 (compatible; EvilBot/1.0)", "Mozilla/5.0 (compatible; EvilBot/1.0)"),
]


@pytest.fixture
def v3_client(make_client):
    return make_client(THREATSCORE_API="v3")


def test_every_v3_type_is_looked_up_with_the_v3_request_and_mapped(threatscore, v3_client):
    for _, _, asked in EVERY_V3_TYPE:
        threatscore.answer(asked, answers.V3_FOUND)
    payload = [{"type": kind, "value": value} for kind, value, _ in EVERY_V3_TYPE]
    body = post(v3_client, OBSERVE, payload)  # post() runs the CTIM checks
    assert set(body) == {"data"}
    data = body["data"]
    assert list(data) == ["verdicts", "judgements", "indicators", "sightings", "relationships"]
    assert data["verdicts"]["count"] == data["sightings"]["count"] == 8
    assert data["judgements"]["count"] == 3 * 8
    # Four indicators, the same four for all eight observables: listed once.
    assert data["indicators"]["count"] == 4
    assert data["relationships"]["count"] == 8 * 8
    # Entities echo the caller's value.
    assert [v["observable"] for v in data["verdicts"]["docs"]] == [
        {"type": kind, "value": value} for kind, value, _ in EVERY_V3_TYPE
    ]
    seen = sorted((method, path, sent["data"]) for method, path, sent, _ in threatscore.requests_seen)
    expected = sorted(("POST", "/api/v3/observables/search/by-value", asked) for _, _, asked in EVERY_V3_TYPE)
    assert seen == expected


def test_deliberate_gives_verdicts_only(threatscore, v3_client):
    threatscore.answer("203.0.113.5", answers.V3_FOUND)
    body = post(v3_client, DELIBERATE, [{"type": "ip", "value": "203.0.113.5"}])
    assert list(body["data"]) == ["verdicts"]
    assert body["data"]["verdicts"]["docs"][0]["disposition_name"] == "Malicious"


@pytest.mark.parametrize(("status", "body"), answers.V3_NO_DATA_FORMS)
def test_nothing_known_is_an_empty_answer(threatscore, v3_client, status, body):
    threatscore.answer(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", body, status=status
    )
    payload = [
        {"type": "sha256", "value": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
    ]
    assert post(v3_client, OBSERVE, payload) == {"data": {}}


def test_refer_links_the_console_search_for_every_v3_type(threatscore, make_client):
    client = make_client(THREATSCORE_API="v3", THREATSCORE_UI_URL="")  # the backend's default
    payload = [{"type": kind, "value": value} for kind, value, _ in EVERY_V3_TYPE]
    body = post(client, REFER, payload)
    assert [entry["url"] for entry in body["data"]][3] == (
        "https://console.threatscore.cyberprotect.cloud/search?query=https%3A%2F%2Fphish.example%2FLogin%3FNext%3D%2F"
    )
    assert [entry["title"] for entry in body["data"]] == [
        "Search for this IP",
        "Search for this IPv6",
        "Search for this domain",
        "Search for this URL",
        "Search for this MD5",
        "Search for this SHA-1",
        "Search for this SHA-256",
        "Search for this user agent",
    ]
    assert all(
        entry["url"].startswith("https://console.threatscore.cyberprotect.cloud/search?query=")
        for entry in body["data"]
    )
    assert threatscore.total_calls == 0


def test_with_the_score_backend_the_new_types_are_dropped_silently(threatscore, client):
    payload = [{"type": kind, "value": value} for kind, value, _ in EVERY_V3_TYPE[3:]]
    assert post(client, OBSERVE, payload) == {"data": {}}
    assert post(client, REFER, payload) == {"data": []}
    assert threatscore.total_calls == 0


def test_a_refusal_is_an_authorization_error_per_observable_and_never_cached(threatscore, v3_client):
    threatscore.answer("203.0.113.5", answers.REFUSED_403_TEXT, status=403, content_type="text/plain")
    for _ in range(2):
        body = post(v3_client, OBSERVE, [{"type": "ip", "value": "203.0.113.5"}])
        [error] = body["errors"]
        assert error["code"] == "authorization error"
        assert error["message"].startswith(
            '203.0.113.5: Threatscore refused the relay (HTTP 403: "Blocked by IP filtering")'
        )
        assert "allow-listed" in error["message"]
    assert threatscore.calls_for("203.0.113.5") == 2  # asked again: a refusal is not cached


@pytest.mark.parametrize("api", ["v3", "score"])
def test_health_fails_with_the_refusals_words(threatscore, make_client, api):
    threatscore.answer("127.0.0.100", answers.REFUSED_403_JSON, status=403)
    body = post(make_client(THREATSCORE_API=api), HEALTH)
    [error] = body["errors"]
    assert error["code"] == "health check failed"
    assert error["message"].startswith(
        'Threatscore health check failed: Threatscore refused the relay (HTTP 403: "Blocked by IP filtering")'
    )
    assert "licensed accounts from allow-listed addresses" in error["message"]
    method = threatscore.requests_seen[0][0]
    assert method == ("POST" if api == "v3" else "GET")  # the configured backend is probed


def test_health_probes_the_v3_backend(threatscore, v3_client):
    assert post(v3_client, HEALTH) == {"data": {"status": "ok"}}  # "no data" is healthy
    assert threatscore.requests_seen[0][:3] == (
        "POST",
        "/api/v3/observables/search/by-value",
        {"data": "127.0.0.100"},
    )


def test_a_2018_score_entry_is_an_aggregate_without_engines(threatscore, client):
    threatscore.answer(
        "old.example", {"data": "old.example", "scores": [{"date": "2018-10-12", "score": "0.99"}]}
    )
    body = post(client, OBSERVE, [{"type": "domain", "value": "old.example"}])
    assert "errors" not in body
    [judgement] = body["data"]["judgements"]["docs"]
    assert judgement["reason"] == "Threatscore score 99.0 % (malicious) with no analysis listed"
    assert body["data"]["verdicts"]["docs"][0]["judgement_id"] == judgement["id"]


def test_an_answer_that_cannot_be_mapped_costs_that_observable_and_its_cache_entry(threatscore, client):
    # Year 9999 parses, but its validity end (7 days on) is past the calendar.
    threatscore.answer(
        "far.example", answers.with_scores(0.9, aggregate=0.9, date="9999-12-31T00:00:00.000Z")
    )
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    payload = [{"type": "domain", "value": "far.example"}, {"type": "ip", "value": "198.51.100.7"}]
    for _ in range(2):
        body = post(client, OBSERVE, payload)
        assert body["errors"] == [
            {
                "type": "fatal",
                "code": "internal error",
                "message": "far.example: the relay could not map Threatscore's answer to CTIM",
            }
        ]
        assert [v["observable"]["value"] for v in body["data"]["verdicts"]["docs"]] == ["198.51.100.7"]
    assert threatscore.calls_for("far.example") == 2  # its cache entry was dropped
    assert threatscore.calls_for("198.51.100.7") == 1  # the other stayed cached


def test_a_lone_surrogate_in_an_engine_id_still_maps(threatscore, client):
    body = answers.with_scores(0.9, aggregate=0.9)
    threatscore.answer(
        "198.51.100.9", json.dumps(body).replace('"00000000000000000000000000000000"', '"\\ud800"')
    )
    answer = post(client, OBSERVE, [{"type": "ip", "value": "198.51.100.9"}])
    assert "errors" not in answer
    assert answer["data"]["judgements"]["count"] == 2


def test_the_answer_never_passes_its_bound(threatscore, make_client):
    # 1,000 spellings of one domain, each echoed in entities of its own: unbounded, 80 MB.
    rows = [{"id": f"{index:032x}", "date": "2025-01-01", "score": 0.9} for index in range(100)]
    categories = [f"category_{index}" for index in range(100)]
    found = {"threatscore": {"value": 0.9, "level": "malicious", "categories": categories}, "analysis": rows}
    threatscore.answer("abcdefghij.example", found)
    spellings = [
        "".join(char.upper() if bits >> index & 1 else char for index, char in enumerate("abcdefghij"))
        + ".example"
        for bits in range(1000)
    ]
    client = make_client(THREATSCORE_API="v3")
    response = client.post(OBSERVE, json=[{"type": "domain", "value": value} for value in spellings])
    assert response.status_code == 200
    assert len(response.data) <= MAX_ANSWER_BYTES
    body = response.get_json()
    check_answer(body)
    warning = body["errors"][-1]
    assert warning["type"] == "warning" and warning["code"] == "answer too large"
    assert "are left out" in warning["message"]
    verdicts = body["data"]["verdicts"]["count"]
    assert 0 < verdicts < 1000
    assert f"of {1000 - verdicts} observable(s)" in warning["message"]
    assert threatscore.calls_for("abcdefghij.example") == 1


# --- mapped answers, reused while the cached answer is the same ------------------------------------


def test_a_cached_answer_is_mapped_once_and_a_new_answer_again():
    from datetime import UTC, datetime

    from relay.handlers import ENTITY_KINDS, MappedAnswers
    from relay.lookup import Outcome
    from relay.mapping import MappingOptions
    from relay.observables import Observable
    from relay.schemas import parse_v3_answer
    from tests import answers

    mapped = MappedAnswers()
    observable = Observable("ip", "198.51.100.7", "198.51.100.7")
    options = MappingOptions(ui_url="https://ui.example", valid_days=7, entities_limit=100)
    fetched_at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    answer = parse_v3_answer(answers.V3_FOUND)  # the normalised answer, as the cache holds it
    outcome = Outcome(answer=answer, fetched_at=fetched_at)
    later = datetime(2026, 12, 1, tzinfo=UTC)

    first = mapped.get(observable, outcome, options, ENTITY_KINDS, later)
    again = mapped.get(
        observable, Outcome(answer=answer, fetched_at=fetched_at), options, ENTITY_KINDS, later
    )
    assert again is first  # the same answer object: not mapped again
    assert first.docs["verdicts"][0]["valid_time"]["end_time"].startswith(
        "2026-12-07T08:00"
    )  # from the fetch

    refreshed = mapped.get(
        observable, Outcome(answer={**answer}, fetched_at=fetched_at), options, ENTITY_KINDS, later
    )
    assert refreshed is not first and refreshed.docs == first.docs  # another answer object: mapped anew

    uncached = Outcome(answer=answer, fetched_at=None)
    assert mapped.get(observable, uncached, options, ENTITY_KINDS, later) is not mapped.get(
        observable, uncached, options, ENTITY_KINDS, later
    )


class _Answered:
    """A lookup that has every answer already, by cache key; records what it is told to forget."""

    def __init__(self, outcomes: dict):
        self._outcomes = outcomes
        self.forgotten: list[str] = []

    def look_up(self, observables, _deadline, _stats):
        return {observable.cache_key: self._outcomes[observable.cache_key] for observable in observables}

    def forget(self, cache_key):
        self.forgotten.append(cache_key)


def _counting_mappings(monkeypatch) -> list[str]:
    """The cache keys of the observables the handlers map an answer for, one per mapping."""
    import relay.handlers
    from relay.mapping import map_answer

    mapped: list[str] = []

    def counted(observable, *args, **kwargs):
        mapped.append(observable.cache_key)
        return map_answer(observable, *args, **kwargs)

    monkeypatch.setattr(relay.handlers, "map_answer", counted)
    return mapped


@pytest.mark.parametrize(("endpoint", "kinds"), [("observe", ENTITY_KINDS), ("deliberate", ("verdicts",))])
def test_a_lookup_is_mapped_once_a_request_and_each_spelling_gets_its_own_entities(
    monkeypatch, endpoint, kinds
):
    from relay.config import Settings
    from relay.handlers import Handlers, RequestContext
    from relay.lookup import Outcome
    from relay.mapping import MappingOptions, map_answer
    from relay.observables import Observable
    from relay.schemas import parse_v3_answer

    fetched_at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    outcomes = {
        "ip:198.51.100.7": Outcome(answer=parse_v3_answer(answers.V3_FOUND), fetched_at=fetched_at),
        "ip:203.0.113.5": Outcome(
            answer=parse_v3_answer(answers.V3_EPOCH_AND_ODD_LEVEL), fetched_at=fetched_at
        ),
    }
    spellings = [
        Observable("ip", "198.51.100.7", "198.51.100.7"),
        Observable("ipv6", "::ffff:203.0.113.5", "203.0.113.5"),
        Observable("ipv6", "::ffff:198.51.100.7", "198.51.100.7"),
        Observable("ip", " 198.51.100.7 ", "198.51.100.7"),
        Observable("ip", "203.0.113.5", "203.0.113.5"),
        Observable("ipv6", "0:0:0:0:0:FFFF:C633:6407", "198.51.100.7"),
    ]
    handlers = Handlers(Settings(threatscore_api="v3"), _Answered(outcomes))
    mapped = _counting_mappings(monkeypatch)
    context = RequestContext(entities_limit=100, deadline=time.monotonic() + 60, now=datetime.now(UTC))

    # What mapping every spelling on its own gives, an indicator listed once.
    options = MappingOptions(
        ui_url=Settings().threatscore_ui_url, valid_days=Settings().ctim_valid_days, entities_limit=100
    )
    expected: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for observable in spellings:
        entities = map_answer(observable, outcomes[observable.cache_key].answer, options, fetched_at)
        for kind in kinds:
            expected[kind].extend(
                doc for doc in getattr(entities, kind) if kind != "indicators" or doc not in expected[kind]
            )
    mapped.clear()

    for _ in range(2):  # then again, from the mapped answers of the first request
        body = getattr(handlers, endpoint)(spellings, context)
        assert "errors" not in body
        assert body["data"] == {kind: {"count": len(docs), "docs": docs} for kind, docs in expected.items()}
        assert sorted(mapped) == ["ip:198.51.100.7", "ip:203.0.113.5"]  # once each, in the first request
    verdicts = body["data"]["verdicts"]["docs"]
    assert [verdict["observable"]["value"] for verdict in verdicts] == [
        observable.value for observable in spellings
    ]
    assert len({verdict["judgement_id"] for verdict in verdicts}) == len(spellings)


def test_an_answer_that_cannot_be_mapped_is_tried_once_a_request_for_all_its_spellings(monkeypatch):
    from relay.config import Settings
    from relay.handlers import Handlers, RequestContext
    from relay.lookup import Outcome
    from relay.observables import Observable
    from relay.schemas import parse_score_answer

    # Year 9999 parses, but its validity end (7 days on) is past the calendar.
    far = answers.with_scores(0.9, aggregate=0.9, date="9999-12-31T00:00:00.000Z")
    fetched_at = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    lookup = _Answered(
        {
            "domain:far.example": Outcome(answer=parse_score_answer(far), fetched_at=fetched_at),
            "ip:198.51.100.7": Outcome(
                answer=parse_score_answer(answers.FOUR_ENGINES), fetched_at=fetched_at
            ),
        }
    )
    handlers = Handlers(Settings(threatscore_api="score"), lookup)
    mapped = _counting_mappings(monkeypatch)
    spellings = [
        Observable("domain", "far.example", "far.example"),
        Observable("ip", "198.51.100.7", "198.51.100.7"),
        Observable("domain", "FAR.Example.", "far.example"),
    ]
    context = RequestContext(entities_limit=100, deadline=time.monotonic() + 60, now=datetime.now(UTC))

    body = handlers.observe(spellings, context)

    assert body["errors"] == [
        {
            "type": "fatal",
            "code": "internal error",
            "message": f"{value}: the relay could not map Threatscore's answer to CTIM",
        }
        for value in ("far.example", "FAR.Example.")
    ]
    assert [v["observable"]["value"] for v in body["data"]["verdicts"]["docs"]] == ["198.51.100.7"]
    assert sorted(mapped) == ["domain:far.example", "ip:198.51.100.7"]
    assert lookup.forgotten == ["domain:far.example"]  # its cache entry dropped, once


@pytest.mark.parametrize(
    ("value", "api", "expected"),
    [
        ("127.0.0.100", "v3", ("ip", "127.0.0.100")),
        ("2001:DB8::1", "score", ("ipv6", "2001:db8::1")),
        ("http://Probe.example/", "v3", ("url", "http://probe.example/")),
        ("a" * 32, "v3", ("md5", "a" * 32)),
        # Not one of the score API's types: asked as configured, never as a type it does not know.
        ("http://Probe.example/", "score", ("ip", "http://Probe.example/")),
    ],
)
def test_the_health_probe_has_a_type_of_the_configured_backend(value, api, expected):
    probe = health_probe(value, TYPES_BY_API[api])
    assert (probe.type, probe.lookup_value) == expected
