"""Looking up many observables: concurrency, order, the deadline, single flight and the answer
cache, against the fake Threatscore (and a real redis-server) on 127.0.0.1.

Timing bounds here are generous on purpose: they only tell "concurrent" from "one after
another" and "within the deadline" from "waited for the upstream"; `make bench` measures speed.
"""

from __future__ import annotations

import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import requests

from relay.cache import NoCache
from relay.config import Settings
from relay.logs import RequestStats
from relay.lookup import Lookup
from relay.observables import Observable
from relay.threatscore import ScoreClient
from tests import answers
from tests.conftest import RelayRedis, free_port
from tests.test_app import OBSERVE, post

# A deadlock must fail the run, not hang it.
pytestmark = pytest.mark.timeout(60)

DELIBERATE = "/deliberate/observables"


def ip(value: str) -> Observable:
    return Observable("ip", value, value)


def ips(count: int) -> list[Observable]:
    return [ip(f"198.51.100.{index}") for index in range(count)]


@pytest.fixture
def make_lookup(threatscore):
    def build(max_concurrency: int = 10, cache=None, **changes) -> Lookup:
        settings = replace(
            Settings(),
            threatscore_api_url=threatscore.url,
            threatscore_timeout=(2.0, 2.0),
            **changes,
        )
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=max_concurrency)
        session.mount("http://", adapter)
        return Lookup(ScoreClient(settings, session), NoCache() if cache is None else cache, max_concurrency)

    return build


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def observables_in(body: dict) -> list[dict]:
    return [verdict["observable"] for verdict in body.get("data", {}).get("verdicts", {}).get("docs", [])]


# --- fan-out ------------------------------------------------------------------------------------


def test_observables_are_looked_up_concurrently_at_most_max_concurrency_at_a_time(threatscore, make_lookup):
    observables = ips(12)
    for observable in observables:
        threatscore.answer(observable.value, answers.FOUR_ENGINES, delay=0.4)

    outcomes, elapsed = timed(
        lambda: make_lookup(max_concurrency=4).look_up(observables, time.monotonic() + 30, RequestStats())
    )

    assert all(outcomes[o.cache_key].answer is not None for o in observables)
    # 3 rounds of 0.4 s; one after another would take 4.8 s (a generous margin: machines are shared).
    assert elapsed < 3.6
    assert threatscore.peak_in_flight == 4


def test_duplicates_in_one_request_cost_one_call(threatscore, make_lookup):
    threatscore.answer("198.51.100.1", answers.FOUR_ENGINES)
    outcomes = make_lookup().look_up([ip("198.51.100.1")] * 5, time.monotonic() + 10, RequestStats())
    assert list(outcomes) == ["ip:198.51.100.1"]
    assert threatscore.calls_for("198.51.100.1") == 1


def test_output_follows_input_order_whatever_order_the_answers_arrive_in(threatscore, make_client):
    rng = random.Random(4)
    sent = [{"type": "ip", "value": f"198.51.100.{index}"} for index in rng.sample(range(100), 16)]
    for item in sent:
        score = rng.choice([0.1, 0.6, 0.95])
        threatscore.answer(
            item["value"], answers.with_scores(score, aggregate=score), delay=rng.uniform(0, 0.3)
        )

    body = post(make_client(THREATSCORE_MAX_CONCURRENCY="16"), DELIBERATE, sent)

    assert observables_in(body) == sent


def test_an_observable_unanswered_at_the_deadline_gets_an_error_and_the_others_are_kept(
    threatscore, make_client
):
    threatscore.answer("198.51.100.1", answers.FOUR_ENGINES)
    threatscore.answer("198.51.100.2", answers.FOUR_ENGINES, delay=5)  # hangs past the deadline
    threatscore.answer("198.51.100.3", answers.FOUR_ENGINES, delay=0.2)
    client = make_client(RELAY_DEADLINE="1", THREATSCORE_TIMEOUT="10")
    sent = [{"type": "ip", "value": f"198.51.100.{index}"} for index in (1, 2, 3)]

    body, elapsed = timed(lambda: post(client, OBSERVE, sent))

    assert elapsed < 1 + 0.5
    assert observables_in(body) == [sent[0], sent[2]]
    assert body["errors"] == [
        {
            "type": "fatal",
            "code": "timeout",
            "message": "198.51.100.2: Threatscore did not answer before the relay's deadline",
        }
    ]


def test_lookups_queued_behind_others_still_end_at_the_deadline(threatscore, make_lookup):
    for observable in ips(4):
        threatscore.answer(observable.value, answers.FOUR_ENGINES, delay=0.8)

    outcomes, elapsed = timed(
        lambda: make_lookup(max_concurrency=2).look_up(ips(4), time.monotonic() + 1, RequestStats())
    )

    assert elapsed < 1 + 0.5
    answered = [key for key, outcome in outcomes.items() if outcome.error is None]
    timed_out = [key for key, outcome in outcomes.items() if outcome.error is not None]
    assert answered == ["ip:198.51.100.0", "ip:198.51.100.1"]
    assert timed_out == ["ip:198.51.100.2", "ip:198.51.100.3"]
    assert all(outcomes[key].error.code == "timeout" for key in timed_out)


def test_one_retried_observable_does_not_slow_the_others_past_the_deadline(threatscore, make_client):
    threatscore.answer("198.51.100.1", answers.FOUR_ENGINES)
    threatscore.answer("198.51.100.2", "", status=503)
    client = make_client(RELAY_DEADLINE="1", THREATSCORE_RETRIES="50")
    sent = [{"type": "ip", "value": "198.51.100.1"}, {"type": "ip", "value": "198.51.100.2"}]

    body, elapsed = timed(lambda: post(client, OBSERVE, sent))

    assert elapsed < 1 + 0.5
    assert observables_in(body) == [sent[0]]
    assert [error["message"][:14] for error in body["errors"]] == ["198.51.100.2: "]
    assert 2 <= threatscore.calls_for("198.51.100.2") < 51


# --- single flight ------------------------------------------------------------------------------


def test_concurrent_lookups_of_one_observable_share_one_upstream_call(threatscore, make_lookup):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, delay=0.5)
    lookup = make_lookup(cache=NoCache())  # shared even without a cache

    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [
            pool.submit(lookup.look_up, [ip("198.51.100.7")], time.monotonic() + 10, RequestStats())
            for _ in range(20)
        ]
        results = [future.result() for future in futures]

    assert threatscore.calls_for("198.51.100.7") == 1
    assert all(result["ip:198.51.100.7"].answer == results[0]["ip:198.51.100.7"].answer for result in results)
    assert results[0]["ip:198.51.100.7"].answer is not None


@pytest.mark.process
def test_concurrent_requests_to_the_real_relay_share_one_upstream_call(threatscore, start_relay_process):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, delay=0.5)
    base_url = start_relay_process()

    def observe(_: int) -> dict:
        with requests.Session() as session:
            response = session.post(
                f"{base_url}/observe/observables", json=[{"type": "ip", "value": "198.51.100.7"}], timeout=10
            )
            return response.json()

    with ThreadPoolExecutor(max_workers=16) as pool:
        bodies = list(pool.map(observe, range(16)))

    assert threatscore.calls_for("198.51.100.7") == 1
    assert all(body["data"]["verdicts"]["count"] == 1 for body in bodies)


# --- the answer cache, through the relay --------------------------------------------------------


def test_observe_right_after_deliberate_costs_no_upstream_call(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer("bad.example", answers.FOUR_ENGINES)
    sent = [{"type": "ip", "value": "198.51.100.7"}, {"type": "domain", "value": "Bad.Example."}]

    deliberated = post(client, DELIBERATE, sent)
    observed = post(client, OBSERVE, sent)

    assert threatscore.total_calls == 2
    assert observables_in(observed) == observables_in(deliberated) == sent
    assert observed["data"]["judgements"]["count"] == 10


def test_health_probes_past_the_answer_cache_and_shares_its_answer_with_it(threatscore, make_client):
    client = make_client(HEALTH_CACHE_SECONDS="0")
    threatscore.answer("127.0.0.100", answers.NO_DATA_NESTED_EMPTY)
    assert post(client, "/health") == post(client, "/health") == {"data": {"status": "ok"}}
    assert threatscore.calls_for("127.0.0.100") == 2  # a real probe each time
    post(client, OBSERVE, [{"type": "ip", "value": "127.0.0.100"}])
    assert threatscore.calls_for("127.0.0.100") == 2  # observe reads what the probe cached
    threatscore.answer("127.0.0.100", answers.ERROR_500, status=500)
    assert post(client, "/health")["errors"][0]["code"] == "health check failed"


def test_a_recent_health_probe_is_reused_for_health_cache_seconds(threatscore, make_client):
    client = make_client(HEALTH_CACHE_SECONDS="0.5")
    threatscore.answer("127.0.0.100", answers.NO_DATA_NESTED_EMPTY)
    assert post(client, "/health") == post(client, "/health") == {"data": {"status": "ok"}}
    assert threatscore.calls_for("127.0.0.100") == 1  # the second check reused the first probe
    time.sleep(0.6)
    threatscore.answer("127.0.0.100", answers.ERROR_500, status=500)
    assert post(client, "/health")["errors"][0]["code"] == "health check failed"
    assert threatscore.calls_for("127.0.0.100") > 1


def test_no_data_is_cached_for_the_negative_ttl(threatscore, make_client):
    client = make_client(CACHE_TTL="3600", CACHE_NEGATIVE_TTL="0.5")
    sent = [{"type": "ip", "value": "203.0.113.9"}]  # unknown to the fake: 404 "Observable not found"

    assert post(client, OBSERVE, sent) == post(client, OBSERVE, sent) == {"data": {}}
    assert threatscore.calls_for("203.0.113.9") == 1

    time.sleep(0.6)
    post(client, OBSERVE, sent)
    assert threatscore.calls_for("203.0.113.9") == 2


def test_found_answers_are_cached_for_the_cache_ttl(threatscore, make_client):
    client = make_client(CACHE_TTL="0.5", CACHE_NEGATIVE_TTL="3600")
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    sent = [{"type": "ip", "value": "198.51.100.7"}]

    post(client, OBSERVE, sent)
    post(client, OBSERVE, sent)
    assert threatscore.calls_for("198.51.100.7") == 1

    time.sleep(0.6)
    post(client, OBSERVE, sent)
    assert threatscore.calls_for("198.51.100.7") == 2


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (500, answers.ERROR_500, "service unavailable"),
        (503, "", "service unavailable"),
        (200, answers.RESULTS_UNDER_OTHER_KEY, "key error"),
        (429, answers.ERROR_500, "too many requests"),
    ],
)
def test_errors_are_never_cached(threatscore, make_client, status, body, code):
    client = make_client(THREATSCORE_RETRIES="0")
    threatscore.answer("198.51.100.8", body, status=status)
    sent = [{"type": "ip", "value": "198.51.100.8"}]

    assert post(client, OBSERVE, sent)["errors"][0]["code"] == code
    threatscore.answer("198.51.100.8", answers.FOUR_ENGINES)  # Threatscore recovers
    assert post(client, OBSERVE, sent)["data"]["verdicts"]["count"] == 1
    assert threatscore.calls_for("198.51.100.8") == 2


def test_caching_can_be_switched_off(threatscore, make_client):
    client = make_client(CACHE_TTL="0", CACHE_NEGATIVE_TTL="0")
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    for _ in range(3):
        post(client, OBSERVE, [{"type": "ip", "value": "198.51.100.7"}])
    assert threatscore.calls_for("198.51.100.7") == 3


def test_redis_cache_is_shared_by_relay_instances(threatscore, make_client, redis_server, relay_env):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    sent = [{"type": "ip", "value": "198.51.100.7"}, {"type": "ip", "value": "203.0.113.9"}]

    first_instance = make_client(REDIS_URL=redis_server.url)
    second_instance = make_client(REDIS_URL=redis_server.url)
    first = post(first_instance, OBSERVE, sent)
    second = post(second_instance, OBSERVE, sent)

    assert threatscore.total_calls == 2  # the second instance asked Redis, not Threatscore
    assert observables_in(first) == observables_in(second) == sent[:1]
    assert second["data"]["judgements"]["count"] == first["data"]["judgements"]["count"] == 5
    with redis_server.client() as direct:
        names = RelayRedis(relay_env)
        assert sorted(direct.keys("*")) == sorted(
            [names.answer_key("ip:198.51.100.7"), names.answer_key("ip:203.0.113.9")]
        )


def test_with_redis_down_requests_are_answered_from_threatscore(
    threatscore, make_client, caplog: pytest.LogCaptureFixture
):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    client = make_client(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    sent = [{"type": "ip", "value": "198.51.100.7"}]

    with caplog.at_level(logging.WARNING, logger="relay.redis_link"):
        body, elapsed = timed(lambda: post(client, OBSERVE, sent))

    assert set(body) == {"data"} and observables_in(body) == sent
    assert threatscore.calls_for("198.51.100.7") == 1
    assert elapsed < 2
    assert "Redis read at 127.0.0.1" in caplog.text


def test_redis_dying_between_requests_costs_no_request_and_the_memory_tier_answers(
    threatscore, make_client, redis_server
):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer("198.51.100.8", answers.FOUR_ENGINES)
    client = make_client(REDIS_URL=redis_server.url)
    first = post(client, OBSERVE, [{"type": "ip", "value": "198.51.100.7"}])

    redis_server.kill()

    sent = [{"type": "ip", "value": "198.51.100.7"}, {"type": "ip", "value": "198.51.100.8"}]
    body = post(client, OBSERVE, sent)
    assert observables_in(body) == sent
    assert threatscore.calls_for("198.51.100.7") == 1  # held by the memory tier
    assert threatscore.calls_for("198.51.100.8") == 1
    again = post(client, OBSERVE, sent)  # Redis still down: the memory tier kept storing
    assert threatscore.total_calls == 2
    assert again["data"]["judgements"]["docs"][:5] == first["data"]["judgements"]["docs"]


# --- deadlines are each request's own -------------------------------------------------------------


def test_a_request_joining_a_shorter_deadlined_lookup_still_gets_its_answer(threatscore, make_lookup):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, delay=1.5)
    lookup = make_lookup()
    with ThreadPoolExecutor(max_workers=2) as pool:
        hurried = pool.submit(lookup.look_up, [ip("198.51.100.7")], time.monotonic() + 1, RequestStats())
        time.sleep(0.1)  # joins the hurried request's upstream call
        patient = pool.submit(lookup.look_up, [ip("198.51.100.7")], time.monotonic() + 20, RequestStats())
        assert hurried.result()["ip:198.51.100.7"].error.code == "timeout"
        outcome = patient.result()["ip:198.51.100.7"]
    assert outcome.error is None and outcome.answer is not None


class SlowCache(NoCache):
    """A shared cache that takes its time to answer (a struggling Redis)."""

    def get(self, key, deadline=None):
        time.sleep(0.02)
        return None


def test_a_slow_cache_does_not_carry_a_request_past_its_deadline(threatscore, make_lookup):
    observables = [ip(f"198.51.{index // 250}.{index % 250}") for index in range(200)]
    outcomes, elapsed = timed(
        lambda: make_lookup(cache=SlowCache()).look_up(observables, time.monotonic() + 0.5, RequestStats())
    )
    assert elapsed < 1.5  # 200 cache reads one after another would take 4 s
    assert len(outcomes) == 200
    assert any(outcome.error and outcome.error.code == "timeout" for outcome in outcomes.values())


def test_health_answers_by_the_deadline_even_when_the_probe_trickles(threatscore, make_client):
    client = make_client(RELAY_DEADLINE="1", THREATSCORE_TIMEOUT="1.5")
    threatscore.answer("127.0.0.100", answers.FOUR_ENGINES, fault="trickle", trickle_every=0.2)
    body, elapsed = timed(lambda: post(client, "/health"))
    assert body["errors"][0]["code"] == "health check failed"
    assert "deadline" in body["errors"][0]["message"]
    assert elapsed < 1.6


def test_a_request_joining_a_hung_flight_waits_only_until_its_own_deadline(threatscore, make_lookup):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, delay=1.9)  # the read timeout is 2 s
    lookup = make_lookup()
    with ThreadPoolExecutor(max_workers=1) as pool:
        patient = pool.submit(lookup.look_up, [ip("198.51.100.7")], time.monotonic() + 20, RequestStats())
        give_up_at = time.monotonic() + 10
        while threatscore.calls_for("198.51.100.7") == 0 and time.monotonic() < give_up_at:
            time.sleep(0.01)  # until the patient request's call has reached the upstream
        hurried, elapsed = timed(
            lambda: lookup.look_up([ip("198.51.100.7")], time.monotonic() + 0.3, RequestStats())
        )
        assert hurried["ip:198.51.100.7"].error.code == "timeout"
        assert elapsed < 0.3 + 0.9  # not the rest of the flight it joined
        assert patient.result()["ip:198.51.100.7"].answer is not None
    assert threatscore.calls_for("198.51.100.7") == 1  # it joined, and asked nothing of its own


def test_an_outcome_keeps_when_threatscore_was_asked_also_from_the_cache(threatscore, make_lookup):
    from relay.cache import MemoryCache

    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    lookup = make_lookup(cache=MemoryCache(max_entries=10, ttl=60, negative_ttl=60))
    before = time.time()
    fetched = lookup.look_up([ip("198.51.100.7")], time.monotonic() + 10, RequestStats())["ip:198.51.100.7"]
    cached = lookup.look_up([ip("198.51.100.7")], time.monotonic() + 10, RequestStats())["ip:198.51.100.7"]
    assert before <= fetched.fetched_at.timestamp() <= time.time()
    assert cached.fetched_at == fetched.fetched_at
    assert threatscore.calls_for("198.51.100.7") == 1
