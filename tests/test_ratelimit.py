"""Tests for relay.ratelimit without Redis (per instance) and with a real redis-server;
the many-instance behaviour is in tests/test_instances.py."""

from __future__ import annotations

import time

import pytest

from relay.errors import TooManyRequestsError
from relay.ratelimit import HOLD_BACK_NAME, Pacing
from relay.redis_link import RedisLink, make_redis_client
from tests.conftest import RedisServer

pytestmark = pytest.mark.timeout(60)


class RecordedSleep:
    """Stands in for time.sleep: records the waits instead of sleeping them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_no_limit_never_waits() -> None:
    sleep = RecordedSleep()
    pacing = Pacing(0, None, sleep=sleep)
    for _ in range(1000):
        pacing.before_attempt(time.monotonic() + 1)
    assert sleep.waits == []


def test_per_instance_turns_are_spread_and_refused_past_the_deadline() -> None:
    pacing = Pacing(10, None)
    deadline = time.monotonic() + 0.35
    granted, refused = 0, []
    for _ in range(10):
        try:
            pacing.before_attempt(deadline)
            granted += 1
        except TooManyRequestsError as error:
            refused.append(error.message)
    # One turn per 0.1 s: 0, 0.1, 0.2 (0.3 leaves too little before the deadline).
    assert 3 <= granted <= 4
    assert len(refused) == 10 - granted
    assert all("relay's own rate limit of 10" in message for message in refused)


def test_a_429_holds_this_instance_back_without_redis() -> None:
    sleep = RecordedSleep()
    pacing = Pacing(0, None, sleep=sleep)
    pacing.rate_limited(2.0)
    pacing.before_attempt(time.monotonic() + 10)
    assert len(sleep.waits) == 1 and 1.5 < sleep.waits[0] <= 2.0
    with pytest.raises(TooManyRequestsError, match="Retry-After"):
        pacing.before_attempt(time.monotonic() + 1)  # still held: the wait was not slept


def test_a_429_is_shared_through_redis_and_a_foreign_value_is_ignored(redis_server: RedisServer) -> None:
    sleep = RecordedSleep()
    first = Pacing(0, RedisLink(make_redis_client(redis_server.url)))
    second = Pacing(0, RedisLink(make_redis_client(redis_server.url)), sleep=sleep)
    first.rate_limited(3.0)
    with pytest.raises(TooManyRequestsError, match="Retry-After"):
        second.before_attempt(time.monotonic() + 1)
    second.before_attempt(time.monotonic() + 10)
    assert len(sleep.waits) == 1 and 2.0 < sleep.waits[0] <= 3.0
    hold_back_key = first._link.namespaced(HOLD_BACK_NAME)
    with redis_server.client() as direct:
        assert 0 < direct.pttl(hold_back_key) <= 3000
        sealed = direct.get(hold_back_key)
        forged = [
            b"inf",
            b"nan",
            b"soon",
            b"-1",
            b"9999999999",
            sealed[:64] + b'.{"v":3,"at":0,"ttl":1e9,"data":1e12}',
        ]
        for foreign in forged:
            direct.set(hold_back_key, foreign)
            Pacing(0, RedisLink(make_redis_client(redis_server.url))).before_attempt(time.monotonic() + 1)


def test_the_shared_limit_survives_a_redis_restart(redis_server: RedisServer) -> None:
    pacing = Pacing(1000, RedisLink(make_redis_client(redis_server.url), cooldown=0))
    pacing.before_attempt(time.monotonic() + 5)
    redis_server.kill()
    pacing.before_attempt(time.monotonic() + 5)  # per instance meanwhile
    redis_server.start()  # empty: the limiter's Lua scripts are loaded again
    pacing.before_attempt(time.monotonic() + 5)
    with redis_server.client() as direct:
        namespace = pacing._link.namespaced("rate-limit").encode()
        assert any(namespace in key for key in direct.keys("*"))


def test_a_hold_back_is_never_longer_than_the_bound(redis_server: RedisServer) -> None:
    sleep = RecordedSleep()
    link = RedisLink(make_redis_client(redis_server.url))
    pacing = Pacing(0, link, sleep=sleep, max_hold_back=2.0)
    assert pacing.rate_limited(86400.0) == 2.0
    key = link.namespaced(HOLD_BACK_NAME)
    with redis_server.client() as direct:
        assert 0 < direct.pttl(key) <= 2000
        # Even a sealed entry for a day from now (a relay of this deployment with a larger
        # bound wrote it): read as the bound.
        direct.set(key, link.seal(key, time.time() + 86400, 86400))
    other = Pacing(0, RedisLink(make_redis_client(redis_server.url)), sleep=sleep, max_hold_back=2.0)
    other.before_attempt(time.monotonic() + 10)
    assert len(sleep.waits) == 1 and 1.0 < sleep.waits[0] <= 2.0
