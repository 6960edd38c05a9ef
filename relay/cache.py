"""Answer cache: remembers Threatscore answers per observable key.

An answer is a JSON-serialisable dict, or `None` for "Threatscore has no
data", kept with the time Threatscore was asked (the mapping's lookup time, so
that every instance maps a cached answer to the same entities). Each kind has
its own lifetime (`cache_ttl`, `cache_negative_ttl`); a lifetime of 0 means
that kind is not stored. Errors are never cached.

Backends: `MemoryCache` (one function instance, bounded in entries and bytes),
`RedisCache` (shared by all instances; a Redis failure is a miss, never an
error), `TieredCache` (a short-lived memory tier in front of Redis, which
carries on alone while Redis is down) and `NoCache`. `SingleFlight` lets
concurrent lookups of one key within an instance share a single upstream call;
`SharedFlight` does the same across instances with a Redis lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import orjson
from cachetools import TLRUCache

from relay.config import Settings
from relay.redis_link import RedisLink, RedisUnavailableError, build_redis_link

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The stored format: bump it when what is stored changes, so that old entries are never read.
CACHE_FORMAT = 2
REDIS_KEY_PREFIX = f"threatscore-relay:v{CACHE_FORMAT}:"
REDIS_LOCK_PREFIX = f"threatscore-relay:v{CACHE_FORMAT}:lock:"


@dataclass(frozen=True)
class CacheHit:
    """A cached answer. `answer is None` is a cached "no data" from Threatscore.

    `fetched_at`: when Threatscore was asked (seconds since the epoch).
    """

    answer: dict | None
    fetched_at: float


class AnswerCache(Protocol):
    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        """The cached answer for `key`, or None on a miss; by `deadline` (`time.monotonic()`)."""

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        """Remember `hit` (answer None = "no data", kept for the negative TTL)."""

    def forget(self, key: str) -> None:
        """Drop what is remembered for `key` (an answer the relay could not map)."""


class NoCache:
    """Caching disabled: every lookup is a miss."""

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        return None

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        return None

    def forget(self, key: str) -> None:
        return None


def encoded_size(answer: dict | None) -> int:
    """What an answer weighs in a cache: the length of its JSON form."""
    try:
        return len(orjson.dumps(answer))
    except TypeError:  # e.g. a lone surrogate: json escapes it
        return len(json.dumps(answer, separators=(",", ":")))


@dataclass(frozen=True)
class _Entry:
    hit: CacheHit
    size: int
    lifetime: float  # seconds in this cache, from the moment it is stored


class MemoryCache:
    """In-process cache bounded in entries, in bytes (each answer's JSON size) and in time.

    `max_lifetime`, when set, bounds how long an entry stays here whatever its
    kind's TTL (the memory tier in front of Redis). An entry never outlives
    its kind's TTL counted from `fetched_at`. Answers are stored and returned
    as the same objects: callers must not mutate them.
    """

    def __init__(
        self,
        max_entries: int,
        ttl: float,
        negative_ttl: float,
        *,
        max_bytes: int = 32 * 1024 * 1024,
        max_lifetime: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_lifetime = max_lifetime
        self._wall_clock = wall_clock
        # TLRU: each entry expires at its own time, and the least recently used ones are
        # evicted when the bytes would pass max_bytes (entries are bounded in `put`).
        self._entries: TLRUCache[str, _Entry] = TLRUCache(
            maxsize=max_bytes, ttu=self._expires_at, timer=clock, getsizeof=lambda entry: entry.size
        )
        # cachetools caches are not thread-safe, and even a read reorders entries.
        self._lock = threading.Lock()

    @staticmethod
    def _expires_at(key: str, entry: _Entry, now: float) -> float:
        return now + entry.lifetime

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else entry.hit

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        lifetime = _ttl_for(hit.answer, self._ttl, self._negative_ttl)
        lifetime -= max(0.0, self._wall_clock() - hit.fetched_at)  # an answer from Redis has aged
        if self._max_lifetime is not None:
            lifetime = min(lifetime, self._max_lifetime)
        size = encoded_size(hit.answer) + len(key)
        with self._lock:
            if lifetime <= 0 or size > self._max_bytes:
                # Not stored; an older entry of the other kind is stale now.
                self._entries.pop(key, None)
                return
            self._entries.pop(key, None)
            self._entries.expire()
            while len(self._entries) >= self._max_entries:
                self._entries.popitem()  # the least recently used
            self._entries[key] = _Entry(hit, size, lifetime)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)

    @property
    def bytes_held(self) -> int:
        with self._lock:
            self._entries.expire()
            return int(self._entries.currsize)


class RedisCache:
    """Cache shared by all function instances, stored in Redis as versioned JSON.

    It never raises: a Redis failure or a slow Redis is a miss, or a put that
    does nothing (`RedisLink` warns once per outage). An entry that is not what
    this version writes (other format, wrong shape, not JSON) is a miss, and
    the next put replaces it.
    """

    def __init__(self, link: RedisLink, ttl: float, negative_ttl: float):
        self.link = link
        self._ttl = ttl
        self._negative_ttl = negative_ttl

    def forget(self, key: str) -> None:
        with contextlib.suppress(RedisUnavailableError):
            self.link.call("delete", lambda client: client.delete(redis_key(key)), None)

    @property
    def server(self) -> str:
        """Where the cache is, for log lines: `host:port/db`, never the password."""
        return self.link.server

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        try:
            raw = self.link.call("read", lambda client: client.get(redis_key(key)), deadline)
        except RedisUnavailableError:
            return None
        return None if raw is None else decode_entry(raw)

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        ttl = _ttl_for(hit.answer, self._ttl, self._negative_ttl) - max(0.0, time.time() - hit.fetched_at)
        if ttl <= 0:
            # Not stored; an older entry of the other kind expires on its own TTL.
            return
        value = encode_entry(hit)
        if value is None:
            return
        # PX (milliseconds) so that a fractional TTL such as 0.5 s is honoured.
        with contextlib.suppress(RedisUnavailableError):
            self.link.call(
                "write",
                lambda client: client.set(redis_key(key), value, px=max(1, round(ttl * 1000))),
                deadline,
            )


class TieredCache:
    """A small memory tier in front of Redis.

    Hot observables cost no Redis round trip; while Redis is down or slow the
    memory tier carries on alone (and keeps storing), and Redis is used again
    once it answers.
    """

    def __init__(self, memory: MemoryCache, shared: RedisCache):
        self.memory = memory
        self.shared = shared

    @property
    def server(self) -> str:
        return self.shared.server

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        hit = self.memory.get(key)
        if hit is not None:
            return hit
        hit = self.shared.get(key, deadline)
        if hit is not None:
            self.memory.put(key, hit)
        return hit

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        self.memory.put(key, hit)
        self.shared.put(key, hit, deadline)

    def forget(self, key: str) -> None:
        self.memory.forget(key)
        self.shared.forget(key)


def encode_entry(hit: CacheHit) -> bytes | None:
    """`{"v": format, "at": fetched_at, "answer": ...}`, or None when it cannot be encoded."""
    entry = {"v": CACHE_FORMAT, "at": hit.fetched_at, "answer": hit.answer}
    try:
        return orjson.dumps(entry)
    except TypeError:
        try:  # a lone surrogate, which json escapes and orjson refuses
            return json.dumps(entry, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            logger.warning("Not caching an answer: not JSON-serialisable (%s)", type(exc).__name__)
            return None


def decode_entry(raw: bytes) -> CacheHit | None:
    """The hit stored as `raw`, or None when it is not an entry this version wrote."""
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):  # also UnicodeDecodeError
        entry = None
    if (
        isinstance(entry, dict)
        and entry.keys() == {"v", "at", "answer"}
        and entry["v"] == CACHE_FORMAT
        and isinstance(entry["at"], int | float)
        and not isinstance(entry["at"], bool)
        and (entry["answer"] is None or isinstance(entry["answer"], dict))
    ):
        return CacheHit(entry["answer"], float(entry["at"]))
    # The key names an observable (request data): it is not logged.
    logger.info("Ignoring a Redis cache entry this version did not write; it will be replaced")
    return None


def _ttl_for(answer: dict | None, ttl: float, negative_ttl: float) -> float:
    return negative_ttl if answer is None else ttl


def redis_key(key: str) -> bytes:
    # surrogatepass: a lone surrogate (valid in a JSON string) must not make encoding fail.
    return (REDIS_KEY_PREFIX + key).encode("utf-8", "surrogatepass")


def redis_lock_key(key: str) -> str:
    return REDIS_LOCK_PREFIX + key.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def build_cache(settings: Settings, link: RedisLink | None = None) -> AnswerCache:
    """The cache the relay uses: a memory tier in front of Redis when REDIS_URL is set,
    else process memory alone."""
    if settings.cache_ttl <= 0 and settings.cache_negative_ttl <= 0:
        logger.info("Answer cache: disabled (CACHE_TTL and CACHE_NEGATIVE_TTL are 0)")
        return NoCache()
    if link is None:
        link = build_redis_link(settings.redis_url)
    bounds = {"max_entries": settings.cache_max_entries, "max_bytes": settings.cache_max_bytes}
    if link is not None:
        memory = MemoryCache(
            ttl=settings.cache_ttl,
            negative_ttl=settings.cache_negative_ttl,
            max_lifetime=settings.cache_memory_ttl,
            **bounds,
        )
        cache = TieredCache(memory, RedisCache(link, settings.cache_ttl, settings.cache_negative_ttl))
        logger.info(
            "Answer cache: Redis at %s, behind a memory tier of %d entries, %d bytes, %g s",
            cache.server,
            settings.cache_max_entries,
            settings.cache_max_bytes,
            settings.cache_memory_ttl,
        )
        return cache
    logger.info(
        "Answer cache: in memory, at most %d entries and %d bytes",
        settings.cache_max_entries,
        settings.cache_max_bytes,
    )
    return MemoryCache(ttl=settings.cache_ttl, negative_ttl=settings.cache_negative_ttl, **bounds)


# --- single flight -------------------------------------------------------------------------


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

    def __init__(self, cache: RedisCache, sleep: Callable[[float], None] = time.sleep):
        self._cache = cache
        self._link = cache.link
        self._sleep = sleep

    def run(self, key: str, deadline: float, ask: Callable[[], T], answered: Callable[[CacheHit], T]) -> T:
        """`ask()` under the lock, or `answered(hit)` with another instance's answer.

        Redis down (or gone mid-wait): `ask()` without the lock. Past the deadline
        while waiting: `FlightWaitTimeoutError`.
        """
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
            if hit is not None:
                return answered(hit)
            if not self._link.available:
                return ask()

    def _acquire(self, key: str, deadline: float):
        """The lock, False when another instance holds it, None when Redis is unavailable."""
        hold_for = max(0.05, deadline - time.monotonic())
        try:
            lock = self._link.client.lock(redis_lock_key(key), timeout=hold_for, blocking=False)
            acquired = self._link.call("lock", lambda _client: lock.acquire(), deadline)
        except RedisUnavailableError:
            return None
        return lock if acquired else False

    def _release(self, lock: redis.lock.Lock, deadline: float) -> None:
        # Past the deadline too: a lock left behind would hold the others for its whole TTL.
        # When Redis fails meanwhile, the lock expires on its own.
        with contextlib.suppress(RedisUnavailableError):
            self._link.call("unlock", lambda _client: lock.release(), max(deadline, time.monotonic() + 0.5))

    def _wait_for_answer(self, key: str, deadline: float) -> CacheHit | None:
        """Another instance's answer; None when the lock is gone without one, or Redis is."""
        pause = POLL_FIRST
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise FlightWaitTimeoutError(key)
            self._sleep(min(pause, left))
            pause = min(POLL_MAX, pause * 2)
            try:
                raw, locked = self._link.call("read", lambda client: _answer_and_lock(client, key), deadline)
            except RedisUnavailableError:
                return None
            if raw is not None:
                hit = decode_entry(raw)
                if hit is not None:
                    return hit
            if not locked:
                return None


def build_shared_flight(cache: AnswerCache) -> SharedFlight | None:
    """Single flight across instances: only where the cache is shared through Redis."""
    return SharedFlight(cache.shared) if isinstance(cache, TieredCache) else None


def _answer_and_lock(client: redis.Redis, key: str) -> tuple[bytes | None, bool]:
    pipe = client.pipeline(transaction=False)
    pipe.get(redis_key(key))
    pipe.exists(redis_lock_key(key))
    raw, locked = pipe.execute()
    return raw, bool(locked)
