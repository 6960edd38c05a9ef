"""One upstream call per observable: within the instance (`SingleFlight`) and across
instances through a short-lived Redis lock (`SharedFlight`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from relay.cache.base import AnswerCache, CacheHit
from relay.cache.entries import decode_entry, redis_key, redis_lock_key
from relay.cache.redis_tier import RedisCache
from relay.cache.tiered import TieredCache
from relay.redis_link import RedisLink, RedisUnavailableError

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

MIN_LOCK_SECONDS = 0.05
# A lock lives at most one lookup's time: never longer than the longest RELAY_DEADLINE (600 s).
MAX_LOCK_MS = 601_000
LOCK_GONE = -2  # PTTL of a key that does not exist
_NOT_A_RELAYS_LOCK = object()


class FlightWaitTimeoutError(Exception):
    """A waiter's own deadline came before the flight it joined landed."""


@dataclass
class _Call:
    done: threading.Event
    result: object = None
    error: BaseException | None = None


class SingleFlight:
    """Concurrent callers for the same key share one call (within one process).

    The first caller runs `fn`; the others wait for it, each until its own
    `wait_until` (`time.monotonic()`; then `FlightWaitTimeoutError`), and receive the
    same result object, or the same exception re-raised. Once the call
    finishes the key is forgotten, so the next caller runs `fn` again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def do(self, key: str, fn: Callable[[], T], wait_until: float | None = None) -> T:
        with self._lock:
            call = self._calls.get(key)
            leading = call is None
            if call is None:
                call = self._calls[key] = _Call(threading.Event())
        if not leading:
            timeout = None if wait_until is None else max(0.0, wait_until - time.monotonic())
            if not call.done.wait(timeout):
                raise FlightWaitTimeoutError(key)
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[return-value]
        try:
            call.result = fn()
            return call.result  # type: ignore[return-value]
        except BaseException as exc:
            # BaseException too: waiters must never mistake a failure for a None result.
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()

    def __len__(self) -> int:
        """Number of keys being computed now."""
        with self._lock:
            return len(self._calls)


# Waiting for another instance's answer: Redis is polled, first after POLL_FIRST seconds,
# then twice as long each time up to POLL_MAX.
POLL_FIRST = 0.01
POLL_MAX = 0.2


class SharedFlight:
    """One upstream call per observable across instances, with a short-lived Redis lock.

    The first miss takes the lock (`SET NX PX`, through redis-py's `Lock`) for
    at most the lookup's own time and asks Threatscore; the others poll Redis
    for the answer, each until its own deadline. When the lock is gone without
    an answer (the holder failed, or died and the lock expired), the next
    waiter takes it and asks.

    Polling rather than pub/sub: a waiter needs no connection of its own, a
    Redis restart loses nothing a waiter depends on, and the first polls are
    10-40 ms apart, well under an upstream call.
    """

    def __init__(self, cache: RedisCache, sleep: Callable[[float], None] = time.sleep, scope: str = ""):
        self._cache = cache
        self._link = cache.link
        self._sleep = sleep
        self._scope = scope

    def scoped(self, scope: str) -> SharedFlight:
        """The same flight for keys under `scope` (a tenant's), as `ScopedCache` names them."""
        return SharedFlight(self._cache, self._sleep, scope)

    def run(self, key: str, deadline: float, ask: Callable[[], T], answered: Callable[[CacheHit], T]) -> T:
        """`ask()` under the lock, or `answered(hit)` with another instance's answer.

        Redis down (or gone mid-wait): `ask()` without the lock. Past the deadline
        while waiting: `FlightWaitTimeoutError`.
        """
        key = self._scope + key
        while True:
            lock = self._acquire(key, deadline)
            if lock is None:  # Redis cannot coordinate: ask, as a lone instance would
                return ask()
            if lock is not False:
                try:
                    return ask()
                finally:
                    self._release(lock, deadline)
            hit = self._wait_for_answer(key, deadline)
            if isinstance(hit, CacheHit):
                return answered(hit)
            if hit is _NOT_A_RELAYS_LOCK or not self._link.available:
                return ask()

    def _acquire(self, key: str, deadline: float):
        """The lock, False when another instance holds it, None when Redis is unavailable."""
        hold_for = max(MIN_LOCK_SECONDS, deadline - time.monotonic())
        try:
            lock = self._link.client.lock(redis_lock_key(self._link, key), timeout=hold_for, blocking=False)
            acquired = self._link.call("lock", lambda _client: lock.acquire(), deadline)
        except RedisUnavailableError:
            return None
        return lock if acquired else False

    def _release(self, lock: redis.lock.Lock, deadline: float) -> None:
        # Past the deadline too: a lock left behind would hold the others for its whole TTL.
        # When Redis fails meanwhile, the lock expires on its own.
        with contextlib.suppress(RedisUnavailableError):
            self._link.call("unlock", lambda _client: lock.release(), max(deadline, time.monotonic() + 0.5))

    def _wait_for_answer(self, key: str, deadline: float) -> CacheHit | object | None:
        """Another instance's answer; None when the lock is gone without one, or Redis is;
        `_NOT_A_RELAYS_LOCK` when the lock is none a relay takes (planted: never waited for)."""
        pause = POLL_FIRST
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FlightWaitTimeoutError(key)
            self._sleep(min(pause, left))
            pause = min(POLL_MAX, pause * 2)
            try:
                raw, lock_ms = self._link.call(
                    "read", lambda client: _answer_and_lock(self._link, client, key), deadline
                )
            except RedisUnavailableError:
                return None
            hit = decode_entry(self._link, key, raw)
            if hit is not None:
                return hit
            if lock_ms == LOCK_GONE:
                return None
            if not _a_lock_of_ours(lock_ms, MAX_LOCK_MS):
                return _NOT_A_RELAYS_LOCK


def build_shared_flight(cache: AnswerCache) -> SharedFlight | None:
    """Single flight across instances: only where the cache is shared through Redis."""
    return SharedFlight(cache.shared) if isinstance(cache, TieredCache) else None


def _answer_and_lock(link: RedisLink, client: redis.Redis, key: str) -> tuple[bytes | None, int]:
    """The stored answer, and the lock's time to live in ms (-2: no lock, -1: one without expiry)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(redis_key(link, key))
    pipe.pttl(redis_lock_key(link, key))
    raw, lock_ms = pipe.execute()
    return raw, int(lock_ms)


def _a_lock_of_ours(lock_ms: int, max_lock_ms: float) -> bool:
    """Whether a lock is one a relay could have taken: the relay's locks always expire, within
    one lookup's time. A lock planted without expiry (or for longer) would hold every lookup of
    the observable until its deadline: it is not waited for."""
    return 0 < lock_ms <= max_lock_ms
