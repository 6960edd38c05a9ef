"""Answer cache: remembers Threatscore answers per observable key.

An answer is a JSON-serialisable dict, or `None` for "Threatscore has no
data". Each kind has its own lifetime (`cache_ttl`, `cache_negative_ttl`);
a lifetime of 0 means that kind is not stored. Errors are never cached.

Backends: `MemoryCache` (one function instance), `RedisCache` (shared by all
instances; a Redis failure is a miss, never an error) and `NoCache`.
`SingleFlight` lets concurrent lookups of one key share a single upstream call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from cachetools import TLRUCache

from relay.config import ConfigError, Settings

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Bump the version when the stored format changes, so that old entries are never read.
REDIS_KEY_PREFIX = "threatscore-relay:v1:"

# A dead Redis must cost a lookup little: Memorystore answers in about a millisecond.
REDIS_CONNECT_TIMEOUT = 0.5
REDIS_READ_TIMEOUT = 0.5
# PING a pooled connection idle this long before using it (instances sleep between requests).
REDIS_HEALTH_CHECK_INTERVAL = 30
# After a Redis failure, lookups skip Redis this long instead of each paying a timeout.
REDIS_FAILURE_COOLDOWN = 5.0


@dataclass(frozen=True)
class CacheHit:
    """A cached answer. `answer is None` is a cached "no data" from Threatscore."""

    answer: dict | None


class AnswerCache(Protocol):
    def get(self, key: str) -> CacheHit | None:
        """The cached answer for `key`, or None on a miss."""

    def put(self, key: str, answer: dict | None) -> None:
        """Remember `answer` (None = "no data", kept for the negative TTL)."""

    def forget(self, key: str) -> None:
        """Drop what is remembered for `key` (an answer the relay could not map)."""


class NoCache:
    """Caching disabled: every lookup is a miss."""

    def get(self, key: str) -> CacheHit | None:
        return None

    def put(self, key: str, answer: dict | None) -> None:
        return None

    def forget(self, key: str) -> None:
        return None


class MemoryCache:
    """In-process cache bounded in entries and in time.

    Answers are stored and returned as the same objects: callers must not
    mutate them.
    """

    def __init__(
        self,
        max_entries: int,
        ttl: float,
        negative_ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        # TLRU: each entry expires at its own time (found vs no data), and
        # the least recently used one is evicted when max_entries is reached.
        self._entries: TLRUCache[str, CacheHit] = TLRUCache(
            maxsize=max_entries, ttu=self._expires_at, timer=clock
        )
        # cachetools caches are not thread-safe, and even a read reorders entries.
        self._lock = threading.Lock()

    def _expires_at(self, key: str, hit: CacheHit, now: float) -> float:
        return now + _ttl_for(hit.answer, self._ttl, self._negative_ttl)

    def get(self, key: str) -> CacheHit | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, answer: dict | None) -> None:
        with self._lock:
            if _ttl_for(answer, self._ttl, self._negative_ttl) <= 0:
                # Not stored; an older entry of the other kind is stale now.
                self._entries.pop(key, None)
                return
            self._entries[key] = CacheHit(answer)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)


class RedisCache:
    """Cache shared by all function instances, stored in Redis as JSON.

    It never raises: a Redis failure is logged (without credentials) and is a
    miss, or a put that does nothing. After a failure Redis is skipped for
    `cooldown` seconds, so that a dead Redis costs one timeout, not one per
    observable.
    """

    def __init__(
        self,
        client: redis.Redis,
        ttl: float,
        negative_ttl: float,
        *,
        cooldown: float = REDIS_FAILURE_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._client = client
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._cooldown = cooldown
        self._clock = clock
        # Unsynchronised on purpose: a race costs at most one extra attempt or warning.
        self._skip_until = float("-inf")
        self._server, self._password = _describe_server(client)

    def get(self, key: str) -> CacheHit | None:
        if self._skipping():
            return None
        try:
            raw = self._client.get(_redis_key(key))
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a lookup
            self._failed("read", exc)
            return None
        if raw is None:
            return None
        hit = _decode(raw)
        if hit is None:
            # Not something this version wrote; the next put replaces it.
            # The key names an observable (request data): it is not logged.
            logger.warning("Ignoring an undecodable Redis cache entry")
        return hit

    def put(self, key: str, answer: dict | None) -> None:
        ttl = _ttl_for(answer, self._ttl, self._negative_ttl)
        if ttl <= 0:
            # Not stored; an older entry of the other kind expires on its own TTL.
            return
        if self._skipping():
            return
        try:
            value = json.dumps(answer, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            logger.warning("Not caching an answer: not JSON-serialisable (%s)", type(exc).__name__)
            return
        try:
            # PX (milliseconds) so that a fractional TTL such as 0.5 s is honoured.
            self._client.set(_redis_key(key), value.encode(), px=max(1, round(ttl * 1000)))
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a lookup
            self._failed("write", exc)

    def forget(self, key: str) -> None:
        if self._skipping():
            return
        try:
            self._client.delete(_redis_key(key))
        except Exception as exc:  # noqa: BLE001 - the cache must never fail a lookup
            self._failed("delete", exc)

    @property
    def server(self) -> str:
        """Where the cache is, for log lines: `host:port/db`, never the password."""
        return self._server

    def _skipping(self) -> bool:
        return self._clock() < self._skip_until

    def _failed(self, operation: str, exc: Exception) -> None:
        self._skip_until = self._clock() + self._cooldown
        message = str(exc)
        if self._password:
            message = message.replace(self._password, "***")
        logger.warning(
            "Redis cache %s at %s failed (%s: %s); treated as a miss, Redis skipped for %g s",
            operation,
            self._server,
            type(exc).__name__,
            message,
            self._cooldown,
        )


def _decode(raw: bytes) -> CacheHit | None:
    """The hit stored as `raw`, or None when it is not a JSON object or null."""
    try:
        answer = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None
    if answer is None or isinstance(answer, dict):
        return CacheHit(answer)
    return None


def _ttl_for(answer: dict | None, ttl: float, negative_ttl: float) -> float:
    return negative_ttl if answer is None else ttl


def _redis_key(key: str) -> bytes:
    # surrogatepass: a lone surrogate (valid in a JSON string) must not make encoding fail.
    return (REDIS_KEY_PREFIX + key).encode("utf-8", "surrogatepass")


def _describe_server(client: redis.Redis) -> tuple[str, str | None]:
    """`host:port/db` for log lines, and the password to keep out of them."""
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return "redis", None
    password = kwargs.get("password")
    if kwargs.get("path"):
        where = f"unix:{kwargs['path']}"
    else:
        where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    return f"{where}/{kwargs.get('db', 0)}", password if isinstance(password, str) and password else None


def build_cache(settings: Settings) -> AnswerCache:
    """The cache the relay uses: Redis when REDIS_URL is set, else process memory."""
    if settings.cache_ttl <= 0 and settings.cache_negative_ttl <= 0:
        logger.info("Answer cache: disabled (CACHE_TTL and CACHE_NEGATIVE_TTL are 0)")
        return NoCache()
    if settings.redis_url:
        client = make_redis_client(settings.redis_url)
        cache = RedisCache(client, settings.cache_ttl, settings.cache_negative_ttl)
        logger.info("Answer cache: Redis at %s", cache.server)
        return cache
    logger.info("Answer cache: in memory, at most %d entries", settings.cache_max_entries)
    return MemoryCache(settings.cache_max_entries, settings.cache_ttl, settings.cache_negative_ttl)


def make_redis_client(url: str) -> redis.Redis:
    """The Redis client `build_cache` uses: short timeouts, no retries.

    It connects lazily: building it never fails because Redis is down.
    """
    # Imported here: only instances configured with Redis pay for the import at cold start.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
            socket_timeout=REDIS_READ_TIMEOUT,
            health_check_interval=REDIS_HEALTH_CHECK_INTERVAL,
            # No retries: a dead Redis costs one connect or read timeout. A connection the
            # server closed (restart, failover) is replaced when it is taken from the pool.
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError:
        # The URL is not repeated: it may contain a password.
        raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL") from None


@dataclass
class _Call:
    done: threading.Event
    result: object = None
    error: BaseException | None = None


class SingleFlight:
    """Concurrent callers for the same key share one call (within one process).

    The first caller runs `fn`; the others wait for it and receive the same
    result object, or the same exception re-raised. Once the call finishes the
    key is forgotten, so the next caller runs `fn` again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def do(self, key: str, fn: Callable[[], T]) -> T:
        with self._lock:
            call = self._calls.get(key)
            leading = call is None
            if call is None:
                call = self._calls[key] = _Call(threading.Event())
        if not leading:
            call.done.wait()
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
