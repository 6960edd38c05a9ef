"""A Threatscore outage as an operator lives it: three relay processes sharing one
redis-server, in front of the simulator answering 503 (or 429) to everything.

What is measured: how fast a batch answers once the circuit breaker is open, and how
many calls Threatscore sees across all instances. Waiting for a cool-down is waiting
for the instant the breaker's shared entry names, not a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from relay.breaker import OPEN_UNTIL_NAME, Breaker
from relay.errors import BreakerOpenError, UpstreamUnavailableError
from relay.ratelimit import HOLD_BACK_NAME
from relay.redis_link import RedisLink, make_redis_client
from simulator import Scripted
from tests import answers
from tests.conftest import RedisServer, RelayRedis
from tests.relay_process import RelayProcess, free_port
from tests.test_instances import all_at_once, answered, errors_by_code, ip, observe, timed

pytestmark = pytest.mark.timeout(180)

OUTAGE = Scripted(status=503, body={"error": "down for maintenance"})
FAILURES = 3
COOL_DOWN = 2.0


@pytest.fixture
def instances(launch_relay, redis_server: RedisServer) -> Callable[..., list[RelayProcess]]:
    def start(count: int, **env: str) -> list[RelayProcess]:
        # The batches are in the benchmarking range (198.18.0.0/15), internal by default.
        return [
            launch_relay(REDIS_URL=redis_server.url, RELAY_LOOKUP_INTERNAL="true", **env)
            for _ in range(count)
        ]

    return start


def batch(prefix: str, count: int = 50) -> list[dict]:
    return [ip(f"{prefix}.{index}") for index in range(1, count + 1)]


@pytest.fixture
def names(relay_env, redis_server: RedisServer) -> RelayRedis:
    """The Redis names and seals the instances use (the settings that make them are shared)."""
    return RelayRedis({**relay_env, "REDIS_URL": redis_server.url})


def open_until(redis_server: RedisServer, names: RelayRedis) -> float:
    key = names.namespaced(OPEN_UNTIL_NAME)
    with redis_server.client() as direct:
        unsealed = names.link.unseal(key, direct.get(key))
    return 0.0 if unsealed is None else float(unsealed.data)


def wait_for_the_cool_down(redis_server: RedisServer, names: RelayRedis) -> None:
    until = open_until(redis_server, names)
    assert until, "the breaker is not open"
    time.sleep(max(0.0, until - time.time()) + 0.05)


def log_messages(relays: list[RelayProcess]) -> list[str]:
    return [record["message"] for relay in relays for record in relay.log_records()]


def request_lines(relays: list[RelayProcess]) -> list[dict]:
    return [
        record
        for relay in relays
        for record in relay.log_records()
        if record.get("logger") == "relay.request"
    ]


def health(url: str) -> dict:
    return requests.post(url + "/health", timeout=60).json()


def test_a_503_outage_on_three_instances_fails_fast_costs_one_probe_per_cool_down_and_recovers(
    threatscore, instances, redis_server: RedisServer, names: RelayRedis
):
    threatscore.answer("192.0.2.77", answers.FOUR_ENGINES)
    relays = instances(
        3, BREAKER_FAILURES=str(FAILURES), BREAKER_COOL_DOWN=str(COOL_DOWN), HEALTH_CACHE_SECONDS="0"
    )
    first, second, third = relays
    assert answered(observe(first.url, [ip("192.0.2.77")])) == ["192.0.2.77"]  # cached before the outage

    threatscore.fallback(lambda _value: OUTAGE)
    opening = observe(first.url, batch("198.18.1"))
    calls_to_open = threatscore.total_calls - 1
    assert set(errors_by_code(opening)) == {"service unavailable"}
    assert open_until(redis_server, names) > time.time()  # open, for every instance
    # What opened it: the failed lookups (each with its retries) until the breaker opened, and the
    # ones already in flight then (one request asks 10 at a time), not 50 lookups x 3 attempts.
    asked = [
        value for value in (f"198.18.1.{index}" for index in range(1, 51)) if threatscore.calls_for(value)
    ]
    assert len(asked) <= FAILURES + 10
    assert calls_to_open <= 3 * len(asked)

    # Open: new observables on every instance fail at once, at no cost; cached ones are served.
    bodies_and_times = all_at_once(
        [
            lambda url=relay.url, n=n: timed(lambda: observe(url, batch(f"198.18.{10 + n}")))
            for n, relay in enumerate(relays)
        ]
    )
    for body, elapsed in bodies_and_times:
        assert elapsed < 1.0
        [message, *_] = errors_by_code(body)["service unavailable"]
        assert "Threatscore has been failing" in message and "tries again at" in message
        assert len(body["errors"]) == 50
    assert threatscore.total_calls - 1 == calls_to_open
    assert answered(observe(third.url, [ip("192.0.2.77"), *batch("198.18.20", 5)])) == ["192.0.2.77"]
    [health_error] = health(second.url)["errors"]
    assert health_error["code"] == "health check failed"
    assert "circuit breaker is open" in health_error["message"]

    # After the cool-down: one probe across all three instances; it fails, the breaker opens again.
    wait_for_the_cool_down(redis_server, names)
    all_at_once(
        [lambda url=relay.url, n=n: observe(url, batch(f"198.18.{30 + n}")) for n, relay in enumerate(relays)]
    )
    assert threatscore.total_calls - 1 == calls_to_open + 1
    assert open_until(redis_server, names) > time.time()

    # Threatscore is back: the next probe closes the breaker, and lookups go through again.
    threatscore.fallback(None)
    wait_for_the_cool_down(redis_server, names)
    all_at_once(
        [lambda url=relay.url, n=n: observe(url, batch(f"198.18.{40 + n}")) for n, relay in enumerate(relays)]
    )
    # (once the probe's answer closed it, the lookups still to start went to Threatscore too)
    assert open_until(redis_server, names) == 0.0
    assert observe(second.url, batch("198.18.50")) == {"data": {}}  # "no data" for all, no error
    assert health(third.url) == {"data": {"status": "ok"}}

    # Each change of state logged once, whichever instance saw it.
    messages = log_messages(relays)
    assert sum("circuit breaker opened:" in message for message in messages) == 1
    assert sum("circuit breaker opened again" in message for message in messages) == 1
    assert sum("circuit breaker probing" in message for message in messages) == 2
    assert sum("circuit breaker closed" in message for message in messages) == 1
    # The request log line says that lookups were cut short, and by what.
    cut = [line for line in request_lines(relays) if line.get("cut_short")]
    assert cut and all(set(line["cut_short"]) == {"breaker"} for line in cut)
    assert any("cut short: 50 by the breaker" in line["message"] for line in cut)


def test_without_redis_each_instance_has_its_own_breaker(threatscore, launch_relay):
    relay = launch_relay(
        RELAY_LOOKUP_INTERNAL="true", BREAKER_FAILURES="2", BREAKER_COOL_DOWN="60", THREATSCORE_RETRIES="0"
    )
    threatscore.fallback(lambda _value: OUTAGE)
    body = observe(relay.url, [ip("198.18.60.1")])
    body = observe(relay.url, [ip("198.18.60.2")])
    assert threatscore.total_calls == 2
    body, elapsed = timed(lambda: observe(relay.url, batch("198.18.61")))
    assert elapsed < 1.0 and threatscore.total_calls == 2
    assert all("tries again at" in message for message in errors_by_code(body)["service unavailable"])


def test_refusals_not_found_and_429_do_not_open_the_breaker(threatscore, launch_relay):
    relay = launch_relay(
        RELAY_LOOKUP_INTERNAL="true",
        BREAKER_FAILURES="2",
        THREATSCORE_RETRIES="0",
        THREATSCORE_MAX_RETRY_AFTER="0",
    )
    threatscore.fallback(lambda _value: Scripted(status=403, body={"error": {"message": "not allowed"}}))
    observe(relay.url, batch("198.18.70", 5))
    threatscore.fallback(lambda _value: Scripted(status=429, body={"error": "slow down"}))
    observe(relay.url, batch("198.18.71", 5))
    threatscore.fallback(None)  # 404 "Observable not found": no data
    observe(relay.url, batch("198.18.72", 5))
    assert threatscore.total_calls == 15  # every lookup was asked: the breaker never opened
    assert not any(
        "circuit breaker" in message for message in log_messages([relay]) if "opens after" not in message
    )


def test_an_absurd_retry_after_holds_every_instance_back_only_for_the_bound(
    threatscore, instances, redis_server: RedisServer, names: RelayRedis
):
    threatscore.answer("198.51.100.60", {"error": "slow down"}, status=429, headers={"Retry-After": "86400"})
    for last in (61, 62, 63, 64):
        threatscore.answer(f"198.51.100.{last}", answers.FOUR_ENGINES)
    bound = {"THREATSCORE_MAX_RETRY_AFTER": "6", "RELAY_DEADLINE": "1", "HEALTH_CACHE_SECONDS": "0"}
    first, second = instances(2, **bound)

    throttled = observe(first.url, [ip("198.51.100.60")])
    assert "86400" in errors_by_code(throttled)["too many requests"][0]
    with redis_server.client() as direct:
        assert (
            0 < direct.pttl(names.namespaced(HOLD_BACK_NAME)) <= 6000
        )  # not 86,400 s, not urllib3's 21,600 s
    held = observe(second.url, [ip("198.51.100.61")])
    assert "holds back" in errors_by_code(held)["too many requests"][0]
    [health_error] = health(second.url)["errors"]
    assert "holding back after an HTTP 429" in health_error["message"]
    late = instances(1, **bound)[0]  # an instance started after the 429 holds back too...
    assert "holds back" in errors_by_code(observe(late.url, [ip("198.51.100.61")]))["too many requests"][0]
    assert threatscore.calls_for("198.51.100.61") == 0
    held_line = [line for line in request_lines([second]) if line.get("cut_short")]
    assert held_line and held_line[0]["cut_short"] == {"hold-back": 1}

    with redis_server.client() as direct:  # ...but only until the bound, not for hours
        while direct.exists(names.namespaced(HOLD_BACK_NAME)):
            time.sleep(0.1)
    time.sleep(0.1)
    for last, relay in zip((62, 63, 64), (first, second, late), strict=True):
        assert answered(observe(relay.url, [ip(f"198.51.100.{last}")])) == [f"198.51.100.{last}"]
    warnings = [message for message in log_messages([first]) if "Retry-After" in message]
    assert warnings == [
        "Threatscore asked the relay to wait 86400 s (HTTP 429 Retry-After); holding back 6 s only"
        " (THREATSCORE_MAX_RETRY_AFTER)"
    ]


def test_a_hanging_threatscore_opens_the_breaker_by_its_timeouts(threatscore, launch_relay):
    threatscore.fallback(lambda _value: Scripted(body={"scores": []}, delay=30))  # never in time
    relay = launch_relay(
        RELAY_LOOKUP_INTERNAL="true", BREAKER_FAILURES="5", THREATSCORE_TIMEOUT="1", RELAY_DEADLINE="10"
    )

    first, first_took = timed(lambda: observe(relay.url, batch("198.18.80")))
    second, second_took = timed(lambda: observe(relay.url, batch("198.18.81")))

    # The first request waits one read timeout (10 lookups at a time), not its whole deadline...
    assert first_took < 10 - 2
    assert "timeout" in errors_by_code(first) and "service unavailable" in errors_by_code(first)
    # ...and the next one not at all.
    assert second_took < 1.0
    assert set(errors_by_code(second)) == {"service unavailable"}


def test_lookups_cut_short_by_a_large_batchs_deadline_do_not_open_the_breaker(threatscore, launch_relay):
    threatscore.fallback(lambda _value: Scripted(body={"scores": []}, delay=0.5))  # healthy, slow-ish
    relay = launch_relay(
        RELAY_LOOKUP_INTERNAL="true",
        BREAKER_FAILURES="2",
        RELAY_DEADLINE="1.2",
        THREATSCORE_MAX_CONCURRENCY="5",
    )

    body = observe(relay.url, batch("198.18.90", 40))  # more than fits in the deadline

    assert set(errors_by_code(body)) == {"timeout"}
    threatscore.fallback(None)
    assert observe(relay.url, batch("198.18.91", 5)) == {"data": {}}  # the breaker stayed closed


def test_while_redis_is_down_each_instance_keeps_its_own_breaker(caplog):
    breaker = Breaker(2, 60, RedisLink(make_redis_client(f"redis://127.0.0.1:{free_port()}/0")))
    failure = UpstreamUnavailableError("Threatscore is unavailable (HTTP 503)")
    for _ in range(2):
        breaker.record(breaker.admit(time.monotonic() + 5), failure, time.monotonic() + 5)
    with pytest.raises(BreakerOpenError, match="tries again at"):
        breaker.admit(time.monotonic() + 5)
    assert not breaker.may_retry()
    assert "circuit breaker is open" in (breaker.describe() or "")
