"""What one request may cost, against the relay as a real process: the work of an answer held
to the deadline, a URL looked up as sent, and /health checks sharing one probe."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import requests

from relay.config import Settings
from relay.handlers import Handlers, RequestContext
from relay.lookup import Outcome
from relay.observables import Observable
from relay.schemas import parse_score_answer
from tests import answers
from tests.test_instances import all_at_once, timed

pytestmark = pytest.mark.timeout(120)

OBSERVE = "/observe/observables"


def large_answer(dates: int = 5, engines: int = 300) -> dict:
    """A score answer with `dates` x `engines` judgements (1,500: more than the entities limit)."""
    entries = []
    for day in range(dates):
        date = f"2021-06-1{day}T08:30:05.120Z"
        details = [answers.engine(f"{index:032x}", 0.7, date, "malicious") for index in range(engines)]
        entries.append({"date": date, "score": 0.5, "level": None, "details": details})
    return {"scores": entries}


def test_a_thousand_spellings_of_one_large_answer_answer_within_the_deadline(threatscore, launch_relay):
    threatscore.answer("198.51.100.7", large_answer())
    relay = launch_relay(CTR_ENTITIES_LIMIT="1000", RELAY_DEADLINE="2")
    spellings = [" " * (index % 500) + "198.51.100.7" + " " * (index // 500) for index in range(1000)]
    payload = [{"type": "ip", "value": value} for value in spellings]

    for _ in range(2):  # asked, then from the cache
        response, elapsed = timed(lambda: requests.post(relay.url + OBSERVE, json=payload, timeout=60))
        assert response.status_code == 200
        body = response.json()
        # Was 5 s and more (every spelling mapped in full, then dropped by the 10 MB bound).
        assert elapsed < 2 + 1.5
        assert threatscore.calls_for("198.51.100.7") == 1  # one lookup for all the spellings
        verdicts = body["data"]["verdicts"]["docs"]
        assert 1 <= len(verdicts) < 1000
        assert [verdict["observable"]["value"] for verdict in verdicts] == spellings[: len(verdicts)]
        [too_large] = body["errors"]
        assert too_large["code"] == "answer too large"
        assert f"the entities of {1000 - len(verdicts)} observable(s) are left out" in too_large["message"]


class _Answered:
    """A lookup that has every answer already (the narrow test of the mapping's time bound)."""

    def __init__(self, outcome: Outcome):
        self._outcome = outcome

    def look_up(self, observables, _deadline, _stats):
        return {observable.cache_key: self._outcome for observable in observables}


def test_what_the_deadline_leaves_no_time_to_map_is_left_out_with_a_warning():
    outcome = Outcome(answer=parse_score_answer(answers.FOUR_ENGINES), fetched_at=datetime.now(UTC))
    handlers = Handlers(Settings(threatscore_api="score"), _Answered(outcome))
    observables = [Observable("ip", f"198.51.100.{index}", f"198.51.100.{index}") for index in range(1, 4)]
    past = RequestContext(entities_limit=100, deadline=time.monotonic() - 5, now=datetime.now(UTC))

    body = handlers.observe(observables, past)

    assert "data" not in body
    [late] = body["errors"]
    assert late["type"] == "warning" and late["code"] == "timeout"
    assert "RELAY_DEADLINE" in late["message"] and "3 observable(s) are left out" in late["message"]


def test_a_url_whose_host_is_made_of_its_schemes_letters_is_looked_up_as_sent(threatscore, launch_relay):
    # One-letter hosts without a dot are internal by default: sent here to see what is asked.
    relay = launch_relay(THREATSCORE_API="v3", RELAY_LOOKUP_INTERNAL="true")
    payload = [{"type": "url", "value": "http://t/x"}, {"type": "url", "value": "HTTPS://S/a"}]
    response = requests.post(relay.url + OBSERVE, json=payload, timeout=60)
    assert response.status_code == 200
    asked = sorted(sent["data"] for _method, _path, sent, _headers in threatscore.requests_seen)
    assert asked == ["http://t/x", "https://s/a"]  # was http://ttp://t/x and https://s://s/a
    refer = requests.post(relay.url + "/refer/observables", json=payload, timeout=60).json()
    assert [ref["url"].endswith("query=http%3A%2F%2Ft%2Fx") for ref in refer["data"]] == [True, False]


def test_concurrent_health_checks_share_one_probe_and_reuse_it_for_a_while(threatscore, launch_relay):
    threatscore.answer("127.0.0.100", answers.NO_DATA_NESTED_EMPTY, delay=1.0)  # the checks overlap it
    relay = launch_relay(HEALTH_CACHE_SECONDS="30")

    bodies = all_at_once([lambda: requests.post(relay.url + "/health", timeout=60).json()] * 8)

    assert bodies == [{"data": {"status": "ok"}}] * 8
    assert threatscore.calls_for("127.0.0.100") == 1  # was one Threatscore call per check
    assert requests.post(relay.url + "/health", timeout=60).json() == {"data": {"status": "ok"}}
    assert threatscore.calls_for("127.0.0.100") == 1  # a recent result is reused
