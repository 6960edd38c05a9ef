"""Tests for relay.cache: the memory cache, the Redis cache against a real
redis-server started by these tests, backend selection and single-flight."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from relay.cache import (
    CACHE_FORMAT,
    CacheHit,
    FlightWaitTimeoutError,
    MemoryCache,
    NoCache,
    RedisCache,
    ScopedCache,
    SharedFlight,
    SingleFlight,
    TieredCache,
    build_cache,
    encoded_size,
    redis_key,
    redis_lock_key,
    tenant_scope,
)
from relay.config import ConfigError, Settings
from relay.redis_link import RedisLink, make_redis_client
from tests.conftest import FakeClock, RedisServer, free_port

# A deadlock must fail the run, not hang it.
pytestmark = pytest.mark.timeout(60)

FOUND = {
    "scores": [
        {"date": "2020-04-03T10:15:17.281000+00:00", "score": 0.34, "level": "suspicious", "details": []}
    ]
}
PASSWORD = "s3cret"
# What a dead Redis may cost one lookup, at most.
QUICK = 2.0


def redis_cache(server: RedisServer, ttl: float = 3600, negative_ttl: float = 600, **kwargs) -> RedisCache:
    """A RedisCache with its own client, configured as build_cache configures it."""
    return RedisCache(RedisLink(make_redis_client(server.url), **kwargs), ttl, negative_ttl)


def fresh(answer: dict | None) -> CacheHit:
    """An answer Threatscore gave just now."""
    return CacheHit(answer, time.time())


def answer_of(hit: CacheHit | None) -> object:
    return "miss" if hit is None else hit.answer


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def warnings_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# --- memory cache -----------------------------------------------------------------------------


def test_memory_cache_misses_then_hits_found_answers_and_no_data() -> None:
    cache = MemoryCache(max_entries=10, ttl=60, negative_ttl=10)

    assert cache.get("ip:1.1.1.1") is None
    cache.put("ip:1.1.1.1", fresh(FOUND))
    cache.put("domain:example.com", fresh(None))

    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND
    assert answer_of(cache.get("domain:example.com")) is None
    assert cache.get("ip:8.8.8.8") is None


def test_memory_cache_found_and_no_data_expire_after_their_own_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_entries=10, ttl=100, negative_ttl=10, clock=clock, wall_clock=clock)
    cache.put("ip:1.1.1.1", CacheHit(FOUND, clock.now))
    cache.put("ip:2.2.2.2", CacheHit(None, clock.now))

    clock.advance(9.9)
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND
    assert answer_of(cache.get("ip:2.2.2.2")) is None

    clock.advance(0.1)  # 10 s: the "no data" entry is gone, the answer is not
    assert cache.get("ip:2.2.2.2") is None
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND

    clock.advance(89.9)
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND
    clock.advance(0.1)  # 100 s
    assert cache.get("ip:1.1.1.1") is None


def test_an_answer_that_aged_in_redis_stays_in_memory_only_for_what_is_left_of_its_ttl() -> None:
    clock = FakeClock()
    tier = MemoryCache(
        max_entries=10, ttl=100, negative_ttl=10, max_lifetime=30, clock=clock, wall_clock=clock
    )
    tier.put("ip:old", CacheHit(FOUND, clock.now - 90))  # fetched 90 s ago: 10 s left
    tier.put("ip:new", CacheHit(FOUND, clock.now))  # 100 s left, but the tier keeps it 30 s
    tier.put("ip:expired", CacheHit(FOUND, clock.now - 100))

    assert tier.get("ip:expired") is None
    clock.advance(9.9)
    assert tier.get("ip:old") is not None
    clock.advance(0.1)
    assert tier.get("ip:old") is None
    clock.advance(19.9)
    assert tier.get("ip:new") is not None
    clock.advance(0.1)
    assert tier.get("ip:new") is None


def test_memory_cache_is_bounded_in_bytes_dropping_the_least_recently_used() -> None:
    big = {"scores": [{"engine": "x" * 10_000}]}
    size = encoded_size(big) + len("ip:0")
    cache = MemoryCache(max_entries=1000, ttl=60, negative_ttl=60, max_bytes=3 * size + 10)
    for index in range(3):
        cache.put(f"ip:{index}", fresh(big))
    assert cache.get("ip:0") is not None  # "ip:1" is now the least recently used

    cache.put("ip:3", fresh(big))

    assert len(cache) == 3
    assert cache.bytes_held <= 3 * size + 10
    assert cache.get("ip:1") is None
    assert [cache.get(f"ip:{index}") is not None for index in (0, 2, 3)] == [True, True, True]


def test_an_answer_larger_than_the_whole_memory_cache_is_not_stored_and_does_not_raise() -> None:
    cache = MemoryCache(max_entries=10, ttl=60, negative_ttl=60, max_bytes=1000)
    cache.put("ip:1", fresh(FOUND))
    cache.put("ip:2", fresh({"scores": ["x" * 5000]}))
    assert cache.get("ip:2") is None
    assert answer_of(cache.get("ip:1")) == FOUND


def test_memory_cache_does_not_store_a_kind_whose_ttl_is_zero() -> None:
    cache = MemoryCache(max_entries=10, ttl=60, negative_ttl=0)
    cache.put("ip:2.2.2.2", fresh(None))
    assert cache.get("ip:2.2.2.2") is None

    found_only_disabled = MemoryCache(max_entries=10, ttl=0, negative_ttl=60)
    found_only_disabled.put("ip:1.1.1.1", fresh(None))
    found_only_disabled.put("ip:1.1.1.1", fresh(FOUND))  # newer than the "no data": that must not be served
    assert found_only_disabled.get("ip:1.1.1.1") is None


def test_memory_cache_evicts_the_least_recently_used_entry_at_max_entries() -> None:
    cache = MemoryCache(max_entries=3, ttl=60, negative_ttl=60)
    for key in ("ip:a", "ip:b", "ip:c"):
        cache.put(key, fresh(FOUND))
    assert cache.get("ip:a") is not None  # "ip:b" is now the least recently used

    cache.put("ip:d", fresh(None))

    assert len(cache) == 3
    assert cache.get("ip:b") is None
    assert [cache.get(key) is not None for key in ("ip:a", "ip:c", "ip:d")] == [True, True, True]


def test_memory_cache_survives_concurrent_use() -> None:
    cache = MemoryCache(max_entries=50, ttl=60, negative_ttl=60)
    wrong: list[str] = []

    def worker(worker_id: int) -> None:
        for i in range(2000):
            key = f"ip:{worker_id}.{i % 100}"
            cache.put(key, fresh({"owner": key}))
            hit = cache.get(key)
            # It may have been evicted by another thread, but never mixed up.
            if hit is not None and hit.answer != {"owner": key}:
                wrong.append(key)

    with ThreadPoolExecutor(max_workers=16) as pool:
        for future in [pool.submit(worker, n) for n in range(16)]:
            future.result()  # re-raises any exception from inside the cache

    assert wrong == []
    assert len(cache) <= 50


def test_no_cache_never_hits() -> None:
    cache = NoCache()
    cache.put("ip:1.1.1.1", fresh(FOUND))
    assert cache.get("ip:1.1.1.1") is None


# --- Redis cache ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["ip:1.1.1.1", "domain:bücher.例え.jp", "url:http://x/\ud800", "domain:a b\r\n*1\r\n"],
    ids=["ascii", "unicode", "lone-surrogate", "protocol-chars"],
)
def test_redis_cache_round_trips_found_answers_and_no_data(redis_server: RedisServer, key: str) -> None:
    cache = redis_cache(redis_server)

    assert cache.get(key) is None
    cache.put(key, fresh(FOUND))
    assert answer_of(cache.get(key)) == FOUND

    cache.put(key + "-none", fresh(None))
    assert answer_of(cache.get(key + "-none")) is None


def test_redis_entries_are_sealed_versioned_json_with_their_own_ttl(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server, ttl=3600, negative_ttl=600)
    cache.put("ip:1.1.1.1", fresh(FOUND))
    cache.put("ip:2.2.2.2", fresh(None))
    found, no_data = redis_key(cache.link, "ip:1.1.1.1"), redis_key(cache.link, "ip:2.2.2.2")

    with redis_server.client() as direct:
        assert sorted(direct.keys("*")) == [found, no_data]
        assert found.startswith(f"threatscore-relay:v{CACHE_FORMAT}:".encode())
        mac, _, payload = direct.get(no_data).partition(b".")
        assert len(mac) == 64  # HMAC-SHA256, hex
        stored = json.loads(payload)
        assert stored.keys() == {"v", "at", "ttl", "data"}
        assert stored["v"] == CACHE_FORMAT and stored["data"] is None and stored["ttl"] == 600
        assert abs(stored["at"] - time.time()) < 60
        assert 3590 < direct.ttl(found) <= 3600
        assert 590 < direct.ttl(no_data) <= 600


def test_redis_cache_does_not_store_a_kind_whose_ttl_is_zero(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server, ttl=3600, negative_ttl=0)
    cache.put("ip:2.2.2.2", fresh(None))
    cache.put("ip:1.1.1.1", fresh(FOUND))

    assert cache.get("ip:2.2.2.2") is None
    with redis_server.client() as direct:
        assert direct.keys("*") == [redis_key(cache.link, "ip:1.1.1.1")]


def test_two_function_instances_share_entries(redis_server: RedisServer) -> None:
    first_instance = redis_cache(redis_server)
    second_instance = redis_cache(redis_server)

    first_instance.put("ip:1.1.1.1", fresh(FOUND))
    second_instance.put("ip:2.2.2.2", fresh(None))

    assert answer_of(second_instance.get("ip:1.1.1.1")) == FOUND
    assert answer_of(first_instance.get("ip:2.2.2.2")) is None


FOREIGN_ENTRIES = [
    b"\xff\xfe",
    b"not json",
    b"[1, 2]",
    b"42",
    b'"text"',
    b"",
    b"null",  # what version 1 stored for "no data"
    b'{"scores": []}',  # a bare answer, as version 1 stored it
    b'{"v": 1, "at": 1700000000, "answer": {}}',  # another format
    b'{"v": 2, "at": "yesterday", "answer": {}}',
    b'{"v": 2, "at": true, "answer": {}}',
    b'{"v": 2, "at": 1700000000, "answer": [1]}',
    b'{"v": 2, "at": 1700000000, "answer": {}, "extra": 1}',
    b'{"v": 2, "at": NaN, "answer": {}}',
    b"[" * 100_000,  # nested past the parser's recursion limit
    b"0" * 64 + b'.{"v": 3, "at": 1700000000, "ttl": 3600, "data": {}}',  # a MAC of nobody's
]


@pytest.mark.parametrize("stored", FOREIGN_ENTRIES)
def test_an_entry_this_version_did_not_write_is_a_miss_and_is_replaced(
    redis_server: RedisServer, stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(redis_server)
    with redis_server.client() as direct:
        direct.set(redis_key(cache.link, "ip:1.1.1.1"), stored)

    assert cache.get("ip:1.1.1.1") is None
    # Not an error, and the relay's own words only.
    assert all(record.levelno < logging.ERROR for record in caplog.records)
    assert "1.1.1.1" not in caplog.text

    cache.put("ip:1.1.1.1", fresh(FOUND))  # and the next answer replaces it
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND


def test_an_answer_that_is_not_json_is_not_cached_and_does_not_raise(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server)
    cache.put("ip:1.1.1.1", fresh({"when": object()}))
    assert cache.get("ip:1.1.1.1") is None


def test_refused_redis_is_a_quick_miss_logged_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.cache")
    port = free_port()
    cache = build_cache(replace(Settings(), redis_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0"))
    assert isinstance(cache, TieredCache)

    hit, get_seconds = timed(lambda: cache.get("ip:1.1.1.1"))
    _, put_seconds = timed(lambda: cache.put("ip:1.1.1.1", fresh(FOUND)))

    assert hit is None
    assert get_seconds < QUICK and put_seconds < QUICK
    logged = warnings_text(caplog)
    assert f"127.0.0.1:{port}" in logged
    assert PASSWORD not in logged
    assert PASSWORD not in caplog.text


def test_redis_killed_mid_test_is_a_quick_miss(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(redis_server, cooldown=0)  # every call tries Redis
    cache.put("ip:1.1.1.1", fresh(FOUND))
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND

    redis_server.kill()

    hit, get_seconds = timed(lambda: cache.get("ip:1.1.1.1"))
    _, put_seconds = timed(lambda: cache.put("ip:2.2.2.2", fresh(None)))
    assert hit is None
    assert get_seconds < QUICK and put_seconds < QUICK
    logged = warnings_text(caplog)
    assert "Redis read at" in logged
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1  # one per outage


def test_redis_that_accepts_but_never_answers_costs_one_short_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nothing ever replies
        port = silent.getsockname()[1]
        cache = build_cache(replace(Settings(), redis_url=f"redis://127.0.0.1:{port}/0"))

        first, first_seconds = timed(lambda: cache.get("ip:1.1.1.1"))
        # After a failure Redis is skipped for a while: no further timeouts.
        second, second_seconds = timed(lambda: cache.get("ip:2.2.2.2"))
        _, put_seconds = timed(lambda: cache.put("ip:2.2.2.2", fresh(FOUND)))

    assert first is None and second is None
    assert first_seconds < QUICK
    assert second_seconds < 0.1 and put_seconds < 0.1
    assert "TimeoutError" in warnings_text(caplog)


def test_a_restarted_redis_is_used_again_at_once_without_a_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(redis_server)
    cache.put("ip:1.1.1.1", fresh(FOUND))  # leaves a pooled connection to the old process

    redis_server.kill()
    redis_server.start()  # same port, empty: as after Memorystore maintenance

    assert cache.get("ip:1.1.1.1") is None
    cache.put("ip:1.1.1.1", fresh(FOUND))
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND
    assert warnings_text(caplog) == ""


def test_redis_is_skipped_for_the_cooldown_after_a_failure_then_used_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    cache = redis_cache(redis_server, cooldown=5, clock=clock)
    redis_server.kill()
    assert cache.get("ip:1.1.1.1") is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    redis_server.start()  # same port, back up (and empty)
    clock.advance(4.9)
    cache.put("ip:1.1.1.1", fresh(FOUND))  # still cooling down: not written
    assert cache.get("ip:1.1.1.1") is None
    with redis_server.client() as direct:
        assert direct.keys("*") == []
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # no log flood

    clock.advance(0.1)
    caplog.set_level(logging.INFO, logger="relay.redis_link")
    cache.put("ip:1.1.1.1", fresh(FOUND))
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND
    assert "answers again" in caplog.text  # one line when the outage ends


def test_redis_url_with_a_password(
    start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.cache")
    server = start_redis(password=PASSWORD)
    cache = build_cache(replace(Settings(), redis_url=server.url))
    cache.put("ip:1.1.1.1", fresh(FOUND))
    assert answer_of(cache.get("ip:1.1.1.1")) == FOUND
    assert f"Redis at 127.0.0.1:{server.port}/0" in caplog.text

    wrong = build_cache(replace(Settings(), redis_url=f"redis://:wr0ng-pa55@127.0.0.1:{server.port}/0"))
    assert wrong.get("ip:1.1.1.1") is None
    logged = warnings_text(caplog)
    assert "AuthenticationError" in logged
    assert "wr0ng-pa55" not in caplog.text and PASSWORD not in caplog.text


# --- backend selection ------------------------------------------------------------------------


def test_build_cache_uses_memory_by_default_with_the_configured_bounds() -> None:
    settings = replace(Settings(), cache_max_entries=2, cache_ttl=60, cache_negative_ttl=0)
    cache = build_cache(settings)
    assert isinstance(cache, MemoryCache)

    cache.put("ip:2.2.2.2", fresh(None))  # negative TTL 0: not stored
    for key in ("ip:a", "ip:b", "ip:c"):
        cache.put(key, fresh(FOUND))
    assert [cache.get(key) is not None for key in ("ip:2.2.2.2", "ip:a", "ip:b", "ip:c")] == [
        False,
        False,
        True,
        True,
    ]


def test_build_cache_uses_redis_when_redis_url_is_set() -> None:
    cache = build_cache(replace(Settings(), redis_url=f"redis://:{PASSWORD}@10.0.0.3:6379/2"))
    assert isinstance(cache, TieredCache)
    assert cache.server == "10.0.0.3:6379/2"


@pytest.mark.parametrize("redis_url", [None, "redis://10.0.0.3:6379/0"])
def test_build_cache_is_disabled_when_both_ttls_are_zero(redis_url: str | None) -> None:
    settings = replace(Settings(), cache_ttl=0, cache_negative_ttl=0, redis_url=redis_url)
    assert isinstance(build_cache(settings), NoCache)


def test_build_cache_rejects_a_bad_redis_url_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as raised:
        build_cache(replace(Settings(), redis_url=f"https://user:{PASSWORD}@10.0.0.3/"))
    assert "REDIS_URL" in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_importing_the_cache_does_not_import_redis() -> None:
    # Cold start: only instances configured with Redis pay for importing it.
    probe = "import sys, relay.cache; print('redis' in sys.modules)"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- single-flight ----------------------------------------------------------------------------


def test_single_flight_shares_one_call_among_50_threads() -> None:
    flight = SingleFlight()
    calls = 0
    started = threading.Event()
    release = threading.Event()
    everyone_ready = threading.Barrier(50)

    def slow_lookup() -> dict:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(10)
        return {"answer": calls}

    def caller() -> dict:
        everyone_ready.wait(10)
        return flight.do("ip:1.1.1.1", slow_lookup)

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(caller) for _ in range(50)]
        assert started.wait(10)
        time.sleep(0.3)  # let the 49 others reach do() and block there
        release.set()
        results = [future.result() for future in futures]

    assert calls == 1
    assert all(result is results[0] for result in results)
    assert results[0] == {"answer": 1}
    assert len(flight) == 0


def test_single_flight_raises_the_same_exception_in_every_waiter() -> None:
    flight = SingleFlight()
    release = threading.Event()
    started = threading.Event()
    failure = ValueError("Threatscore is down")
    everyone_ready = threading.Barrier(10)

    def failing_lookup() -> dict:
        started.set()
        release.wait(10)
        raise failure

    def caller() -> dict:
        everyone_ready.wait(10)
        return flight.do("ip:1.1.1.1", failing_lookup)

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(caller) for _ in range(10)]
        assert started.wait(10)
        time.sleep(0.3)
        release.set()
        errors = [future.exception(10) for future in futures]

    assert all(error is failure for error in errors)
    assert len(flight) == 0


def test_single_flight_runs_different_keys_in_parallel() -> None:
    flight = SingleFlight()
    # Both lookups must be running at the same time to get past this barrier.
    both_running = threading.Barrier(2, timeout=5)

    def lookup(name: str) -> Callable[[], str]:
        def run() -> str:
            both_running.wait()
            return name

        return run

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(flight.do, "ip:1.1.1.1", lookup("first"))
        second = pool.submit(flight.do, "ip:2.2.2.2", lookup("second"))
        assert (first.result(10), second.result(10)) == ("first", "second")
    assert len(flight) == 0


def test_single_flight_forgets_a_key_once_its_call_finishes() -> None:
    flight = SingleFlight()
    calls: list[str] = []

    def lookup() -> str:
        calls.append("call")
        return "answer"

    def failing_lookup() -> str:
        calls.append("failing call")
        raise RuntimeError("boom")

    assert flight.do("ip:1.1.1.1", lookup) == "answer"
    assert len(flight) == 0
    with pytest.raises(RuntimeError):
        flight.do("ip:1.1.1.1", failing_lookup)
    assert len(flight) == 0
    assert flight.do("ip:1.1.1.1", lookup) == "answer"

    assert calls == ["call", "failing call", "call"]
    assert len(flight) == 0


def test_forget_drops_an_entry_from_memory() -> None:
    cache = MemoryCache(max_entries=10, ttl=60, negative_ttl=60)
    now = time.time()
    cache.put("domain:far.example", CacheHit({"scores": []}, now))
    cache.put("ip:192.0.2.1", CacheHit(None, now))
    cache.forget("domain:far.example")
    cache.forget("domain:never.example")  # nothing to forget: no error
    assert cache.get("domain:far.example") is None
    assert cache.get("ip:192.0.2.1") == CacheHit(None, now)


def test_forget_drops_an_entry_from_redis_and_from_the_memory_tier(redis_server: RedisServer) -> None:
    shared = redis_cache(redis_server)
    tiered = TieredCache(MemoryCache(max_entries=10, ttl=60, negative_ttl=60), shared)
    now = time.time()
    tiered.put("domain:far.example", CacheHit({"scores": []}, now))
    tiered.put("ip:192.0.2.1", CacheHit({"scores": []}, now))
    tiered.forget("domain:far.example")
    assert tiered.get("domain:far.example") is None
    assert shared.get("domain:far.example") is None
    assert tiered.get("ip:192.0.2.1") == CacheHit({"scores": []}, now)


def test_a_waiter_gives_up_at_its_own_deadline_while_the_flight_goes_on() -> None:
    flight = SingleFlight()
    release = threading.Event()
    leading = threading.Event()

    def slow_call() -> str:
        leading.set()
        release.wait(timeout=30)
        return "answer"

    with ThreadPoolExecutor(max_workers=1) as pool:
        leader = pool.submit(flight.do, "ip:1", slow_call)
        assert leading.wait(timeout=10)
        started = time.monotonic()
        with pytest.raises(FlightWaitTimeoutError):
            flight.do("ip:1", lambda: "never run", wait_until=time.monotonic() + 0.2)
        assert time.monotonic() - started < QUICK
        release.set()
        assert leader.result(timeout=10) == "answer"
    assert len(flight) == 0


# --- a misbehaving Redis: no call outlives the time it is given ----------------------------------


def test_a_redis_that_trickles_its_answer_is_cut_off_at_the_calls_share_of_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.test_instances import TricklingRedis

    trickling = TricklingRedis(every=0.02)
    try:
        cache = build_cache(replace(Settings(), redis_url=trickling.url))
        hit, seconds = timed(lambda: cache.get("ip:1.1.1.1", time.monotonic() + 3))
        # Skipped for a while afterwards: the next lookups pay nothing.
        _, next_seconds = timed(lambda: cache.get("ip:2.2.2.2", time.monotonic() + 3))
    finally:
        trickling.stop()
    assert hit is None
    assert seconds < 1.0  # its share: 0.3 s of a 3-s deadline (each byte came within the read timeout)
    assert next_seconds < 0.1
    assert "TimeoutError" in warnings_text(caplog)


# --- tenants: each its own scope of one cache ------------------------------------------------------


def test_each_tenants_scope_of_one_cache_is_its_own_unless_shared() -> None:
    memory = MemoryCache(max_entries=10, ttl=60, negative_ttl=60)
    soc, client = (
        ScopedCache(memory, tenant_scope("soc", False)),
        ScopedCache(memory, tenant_scope("client", False)),
    )
    soc.put("ip:1.1.1.1", fresh(FOUND))
    assert client.get("ip:1.1.1.1") is None
    assert answer_of(soc.get("ip:1.1.1.1")) == FOUND
    client.put("ip:1.1.1.1", fresh(None))  # "no data" too is the tenant's own
    assert answer_of(soc.get("ip:1.1.1.1")) == FOUND and answer_of(client.get("ip:1.1.1.1")) is None
    client.forget("ip:1.1.1.1")
    assert answer_of(soc.get("ip:1.1.1.1")) == FOUND

    shared_a, shared_b = (
        ScopedCache(memory, tenant_scope("soc", True)),
        ScopedCache(memory, tenant_scope("b", True)),
    )
    shared_a.put("ip:2.2.2.2", fresh(FOUND))
    assert answer_of(shared_b.get("ip:2.2.2.2")) == FOUND


def test_a_tenants_redis_entries_and_locks_are_under_its_scope(redis_server: RedisServer) -> None:
    shared = redis_cache(redis_server)
    ScopedCache(shared, tenant_scope("soc", False)).put("ip:1.1.1.1", fresh(FOUND))
    flight = SharedFlight(shared).scoped(tenant_scope("soc", False))
    seen = []

    def ask() -> str:
        with redis_server.client() as direct:
            seen.extend(sorted(direct.keys("*")))
        return "asked"

    assert flight.run("ip:9.9.9.9", time.monotonic() + 5, ask, lambda hit: "answered") == "asked"
    assert seen == [
        redis_key(shared.link, "tenant=soc/ip:1.1.1.1"),
        redis_lock_key(shared.link, "tenant=soc/ip:9.9.9.9").encode(),
    ]
