"""Tests for relay.cache: the memory cache, the Redis cache against a real
redis-server started by these tests, backend selection and single-flight."""

from __future__ import annotations

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
    REDIS_KEY_PREFIX,
    CacheHit,
    MemoryCache,
    NoCache,
    RedisCache,
    SingleFlight,
    build_cache,
    make_redis_client,
)
from relay.config import ConfigError, Settings
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
    return RedisCache(make_redis_client(server.url), ttl, negative_ttl, **kwargs)


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
    cache.put("ip:1.1.1.1", FOUND)
    cache.put("domain:example.com", None)

    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)
    assert cache.get("domain:example.com") == CacheHit(None)
    assert cache.get("ip:8.8.8.8") is None


def test_memory_cache_found_and_no_data_expire_after_their_own_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_entries=10, ttl=100, negative_ttl=10, clock=clock)
    cache.put("ip:1.1.1.1", FOUND)
    cache.put("ip:2.2.2.2", None)

    clock.advance(9.9)
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)
    assert cache.get("ip:2.2.2.2") == CacheHit(None)

    clock.advance(0.1)  # 10 s: the "no data" entry is gone, the answer is not
    assert cache.get("ip:2.2.2.2") is None
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)

    clock.advance(89.9)
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)
    clock.advance(0.1)  # 100 s
    assert cache.get("ip:1.1.1.1") is None


def test_memory_cache_does_not_store_a_kind_whose_ttl_is_zero() -> None:
    cache = MemoryCache(max_entries=10, ttl=60, negative_ttl=0)
    cache.put("ip:2.2.2.2", None)
    assert cache.get("ip:2.2.2.2") is None

    found_only_disabled = MemoryCache(max_entries=10, ttl=0, negative_ttl=60)
    found_only_disabled.put("ip:1.1.1.1", None)
    found_only_disabled.put("ip:1.1.1.1", FOUND)  # newer than the "no data": that must not be served
    assert found_only_disabled.get("ip:1.1.1.1") is None


def test_memory_cache_evicts_the_least_recently_used_entry_at_max_entries() -> None:
    cache = MemoryCache(max_entries=3, ttl=60, negative_ttl=60)
    for key in ("ip:a", "ip:b", "ip:c"):
        cache.put(key, FOUND)
    assert cache.get("ip:a") is not None  # "ip:b" is now the least recently used

    cache.put("ip:d", None)

    assert len(cache) == 3
    assert cache.get("ip:b") is None
    assert [cache.get(key) is not None for key in ("ip:a", "ip:c", "ip:d")] == [True, True, True]


def test_memory_cache_survives_concurrent_use() -> None:
    cache = MemoryCache(max_entries=50, ttl=60, negative_ttl=60)
    wrong: list[str] = []

    def worker(worker_id: int) -> None:
        for i in range(2000):
            key = f"ip:{worker_id}.{i % 100}"
            cache.put(key, {"owner": key})
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
    cache.put("ip:1.1.1.1", FOUND)
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
    cache.put(key, FOUND)
    assert cache.get(key) == CacheHit(FOUND)

    cache.put(key + "-none", None)
    assert cache.get(key + "-none") == CacheHit(None)


def test_redis_entries_are_versioned_json_with_their_own_ttl(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server, ttl=3600, negative_ttl=600)
    cache.put("ip:1.1.1.1", FOUND)
    cache.put("ip:2.2.2.2", None)

    with redis_server.client() as direct:
        assert sorted(direct.keys("*")) == [
            f"{REDIS_KEY_PREFIX}ip:1.1.1.1".encode(),
            f"{REDIS_KEY_PREFIX}ip:2.2.2.2".encode(),
        ]
        assert direct.get(f"{REDIS_KEY_PREFIX}ip:2.2.2.2") == b"null"
        assert 3590 < direct.ttl(f"{REDIS_KEY_PREFIX}ip:1.1.1.1") <= 3600
        assert 590 < direct.ttl(f"{REDIS_KEY_PREFIX}ip:2.2.2.2") <= 600


def test_redis_cache_does_not_store_a_kind_whose_ttl_is_zero(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server, ttl=3600, negative_ttl=0)
    cache.put("ip:2.2.2.2", None)
    cache.put("ip:1.1.1.1", FOUND)

    assert cache.get("ip:2.2.2.2") is None
    with redis_server.client() as direct:
        assert direct.keys("*") == [f"{REDIS_KEY_PREFIX}ip:1.1.1.1".encode()]


def test_two_function_instances_share_entries(redis_server: RedisServer) -> None:
    first_instance = redis_cache(redis_server)
    second_instance = redis_cache(redis_server)

    first_instance.put("ip:1.1.1.1", FOUND)
    second_instance.put("ip:2.2.2.2", None)

    assert second_instance.get("ip:1.1.1.1") == CacheHit(FOUND)
    assert first_instance.get("ip:2.2.2.2") == CacheHit(None)


@pytest.mark.parametrize("stored", [b"\xff\xfe", b"not json", b"[1, 2]", b"42", b'"text"', b""])
def test_a_garbage_value_in_redis_is_a_miss(
    redis_server: RedisServer, stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(redis_server)
    with redis_server.client() as direct:
        direct.set(f"{REDIS_KEY_PREFIX}ip:1.1.1.1", stored)

    assert cache.get("ip:1.1.1.1") is None
    assert "undecodable" in warnings_text(caplog)

    cache.put("ip:1.1.1.1", FOUND)  # and the next answer replaces it
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)


def test_an_answer_that_is_not_json_is_not_cached_and_does_not_raise(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server)
    cache.put("ip:1.1.1.1", {"when": object()})
    assert cache.get("ip:1.1.1.1") is None


def test_refused_redis_is_a_quick_miss_logged_without_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.cache")
    port = free_port()
    cache = build_cache(replace(Settings(), redis_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0"))
    assert isinstance(cache, RedisCache)

    hit, get_seconds = timed(lambda: cache.get("ip:1.1.1.1"))
    _, put_seconds = timed(lambda: cache.put("ip:1.1.1.1", FOUND))

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
    cache.put("ip:1.1.1.1", FOUND)
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)

    redis_server.kill()

    hit, get_seconds = timed(lambda: cache.get("ip:1.1.1.1"))
    _, put_seconds = timed(lambda: cache.put("ip:2.2.2.2", None))
    assert hit is None
    assert get_seconds < QUICK and put_seconds < QUICK
    logged = warnings_text(caplog)
    assert "Redis cache read" in logged and "Redis cache write" in logged


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
        _, put_seconds = timed(lambda: cache.put("ip:2.2.2.2", FOUND))

    assert first is None and second is None
    assert first_seconds < QUICK
    assert second_seconds < 0.1 and put_seconds < 0.1
    assert "TimeoutError" in warnings_text(caplog)


def test_a_restarted_redis_is_used_again_at_once_without_a_warning(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(redis_server)
    cache.put("ip:1.1.1.1", FOUND)  # leaves a pooled connection to the old process

    redis_server.kill()
    redis_server.start()  # same port, empty: as after Memorystore maintenance

    assert cache.get("ip:1.1.1.1") is None
    cache.put("ip:1.1.1.1", FOUND)
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)
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
    cache.put("ip:1.1.1.1", FOUND)  # still cooling down: not written
    assert cache.get("ip:1.1.1.1") is None
    with redis_server.client() as direct:
        assert direct.keys("*") == []
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # no log flood

    clock.advance(0.1)
    cache.put("ip:1.1.1.1", FOUND)
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)


def test_redis_url_with_a_password(
    start_redis: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.cache")
    server = start_redis(password=PASSWORD)
    cache = build_cache(replace(Settings(), redis_url=server.url))
    cache.put("ip:1.1.1.1", FOUND)
    assert cache.get("ip:1.1.1.1") == CacheHit(FOUND)
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

    cache.put("ip:2.2.2.2", None)  # negative TTL 0: not stored
    for key in ("ip:a", "ip:b", "ip:c"):
        cache.put(key, FOUND)
    assert [cache.get(key) is not None for key in ("ip:2.2.2.2", "ip:a", "ip:b", "ip:c")] == [
        False,
        False,
        True,
        True,
    ]


def test_build_cache_uses_redis_when_redis_url_is_set() -> None:
    cache = build_cache(replace(Settings(), redis_url=f"redis://:{PASSWORD}@10.0.0.3:6379/2"))
    assert isinstance(cache, RedisCache)
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
    cache.put("domain:far.example", {"scores": []})
    cache.put("ip:192.0.2.1", None)
    cache.forget("domain:far.example")
    cache.forget("domain:never.example")  # nothing to forget: no error
    assert cache.get("domain:far.example") is None
    assert cache.get("ip:192.0.2.1") == CacheHit(None)


def test_forget_drops_an_entry_from_redis(redis_server: RedisServer) -> None:
    cache = redis_cache(redis_server)
    cache.put("domain:far.example", {"scores": []})
    cache.put("ip:192.0.2.1", {"scores": []})
    cache.forget("domain:far.example")
    assert cache.get("domain:far.example") is None
    assert cache.get("ip:192.0.2.1") == CacheHit({"scores": []})
