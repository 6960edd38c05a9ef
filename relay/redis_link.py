"""The relay's link to Redis (Memorystore): what every instance shares.

One client per process, used by the answer cache, the single flight across
instances, the shared rate limit and whatever else the instances share. Three promises:

- No Redis call outlives the time it is given. redis-py's timeouts apply per
  socket operation, so a Redis that trickles its answer a byte at a time is
  never cut off by them; here every socket read and write is also bounded by
  the instant the current call must be over (`within`), whatever arrives.
- A Redis that is down or slow costs one failed call per outage, not one per
  lookup: after a failure Redis is skipped for a short while, then tried again;
  one warning when the outage starts, one line when Redis answers again.
- Nothing read from Redis is trusted unless it proves itself: every user names
  its keys with `namespaced` and stores values made by `seal`, read back with
  `unseal` (`relay.redis_trust`: this deployment's namespace, a keyed MAC).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from relay.config import ConfigError, Settings
from relay.redis_trust import RedisTrust, Unsealed

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Memorystore answers in about a millisecond: these only bound a dead or hung Redis.
REDIS_CONNECT_TIMEOUT = 0.5
REDIS_READ_TIMEOUT = 0.5
# PING a pooled connection idle this long before using it (instances sleep between requests).
REDIS_HEALTH_CHECK_INTERVAL = 30
# One Redis call may use this share of the time a lookup has left (and never more than
# REDIS_READ_TIMEOUT): past it Redis counts as slow, and the lookup carries on without it.
REDIS_SHARE_OF_REMAINING = 0.1
REDIS_MIN_CALL_SECONDS = 0.02
# After a failure, Redis is skipped this long instead of each lookup paying a timeout.
REDIS_FAILURE_COOLDOWN = 2.0


class RedisUnavailableError(Exception):
    """Redis is down, slow, or being skipped after a failure: carry on without it."""


_budget = threading.local()


@contextmanager
def within(give_up_at: float) -> Iterator[None]:
    """Every Redis socket operation of this thread must end by `give_up_at` (`time.monotonic()`)."""
    previous = getattr(_budget, "give_up_at", None)
    _budget.give_up_at = give_up_at if previous is None else min(previous, give_up_at)
    try:
        yield
    finally:
        _budget.give_up_at = previous


def _seconds_left(configured: float | None) -> float | None:
    """The socket timeout for the next operation: the configured one, cut to the call's time."""
    give_up_at = getattr(_budget, "give_up_at", None)
    if give_up_at is None:
        return configured
    left = give_up_at - time.monotonic()
    if left <= 0:
        raise TimeoutError("the Redis call ran out of its time")
    return left if configured is None else min(configured, left)


class _BoundedSocket:
    """A socket whose every read and write ends by the current call's `within` instant."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._timeout = sock.gettimeout()

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def recv(self, size: int, *flags: int) -> bytes:
        self._sock.settimeout(_seconds_left(self._timeout))
        return self._sock.recv(size, *flags)

    def recv_into(self, buffer, *args) -> int:
        self._sock.settimeout(_seconds_left(self._timeout))
        return self._sock.recv_into(buffer, *args)

    def sendall(self, data, *flags: int) -> None:
        self._sock.settimeout(_seconds_left(self._timeout))
        self._sock.sendall(data, *flags)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def _bounded(connection_class: type) -> type:
    """`connection_class` whose sockets are `_BoundedSocket`s, and whose connect is bounded too."""

    class Bounded(connection_class):  # type: ignore[misc, valid-type]
        def _connect(self):
            configured = self.socket_connect_timeout
            self.socket_connect_timeout = _seconds_left(configured)
            try:
                return _BoundedSocket(super()._connect())
            finally:
                self.socket_connect_timeout = configured

    Bounded.__name__ = Bounded.__qualname__ = f"Bounded{connection_class.__name__}"
    return Bounded


def make_redis_client(url: str) -> redis.Redis:
    """A client with short timeouts, no retries, and every call bounded by `within`.

    It connects lazily: building it never fails because Redis is down.
    """
    # Imported here: only instances configured with Redis pay for the import at cold start.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(
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
    pool = client.connection_pool
    pool.connection_class = _bounded(pool.connection_class)
    return client


def describe_server(client: redis.Redis) -> tuple[str, str | None]:
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


class RedisLink:
    """The process's Redis client, and whether Redis is usable now.

    `call` runs one Redis operation within its share of the lookup's time and
    raises `RedisUnavailableError` when it fails or Redis is being skipped; it
    never raises anything else from Redis.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        trust: RedisTrust | None = None,
        cooldown: float = REDIS_FAILURE_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.trust = RedisTrust.for_settings(Settings()) if trust is None else trust
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._skip_until = float("-inf")
        self._in_outage = False
        self.server, self._password = describe_server(client)

    def namespaced(self, name: str) -> str:
        """The Redis key of `name` in this deployment's namespace."""
        return self.trust.namespaced(name)

    def seal(self, key: str | bytes, data: object, ttl: float, at: float | None = None) -> bytes | None:
        """`data` sealed for the (namespaced) key `key`, living `ttl` s from `at` (default now)."""
        return self.trust.seal(key, data, ttl, at)

    def unseal(self, key: str | bytes, raw: bytes | None) -> Unsealed | None:
        """What `seal` stored under `key`, or None: a miss, whatever `raw` holds."""
        return self.trust.unseal(key, raw)

    @property
    def available(self) -> bool:
        """False while Redis is skipped after a failure."""
        return self._clock() >= self._skip_until

    def call(self, operation: str, fn: Callable[[redis.Redis], T], deadline: float | None) -> T:
        """`fn(client)`, given at most its share of the time left before `deadline`."""
        if not self.available:
            raise RedisUnavailableError(operation)
        now = time.monotonic()
        budget = REDIS_READ_TIMEOUT
        if deadline is not None:
            budget = min(budget, max(REDIS_MIN_CALL_SECONDS, REDIS_SHARE_OF_REMAINING * (deadline - now)))
            budget = min(budget, deadline - now)
        if budget <= 0:
            raise RedisUnavailableError(operation)
        try:
            with within(now + budget):
                result = fn(self.client)
        except Exception as exc:  # noqa: BLE001 - Redis must never fail a lookup
            self._failed(operation, exc)
            raise RedisUnavailableError(operation) from None
        self._answered()
        return result

    def _answered(self) -> None:
        if not self._in_outage:
            return
        with self._lock:
            if not self._in_outage:
                return
            self._in_outage = False
        logger.info("Redis at %s answers again: shared cache, flights and rate limit resumed", self.server)

    def _failed(self, operation: str, exc: Exception) -> None:
        with self._lock:
            self._skip_until = self._clock() + self._cooldown
            starting = not self._in_outage
            self._in_outage = True
        if not starting:
            return  # one warning per outage, not one per lookup
        message = str(exc)[:200]
        if self._password:
            message = message.replace(self._password, "***")
        logger.warning(
            "Redis %s at %s failed (%s: %s); carrying on with the memory tier and per-instance"
            " limits, Redis tried again every %g s",
            operation,
            self.server,
            type(exc).__name__,
            message,
            self._cooldown,
        )


def build_redis_link(settings: Settings) -> RedisLink | None:
    """The link to `settings.redis_url`, with this deployment's namespace and signing key."""
    if not settings.redis_url:
        return None
    trust = RedisTrust.for_settings(settings)
    if trust.publicly_known_key:
        logger.warning(
            "REDIS_URL without REDIS_SIGNING_KEY, RELAY_SECRET or RELAY_ACCESS_KEYS: the relay's Redis"
            " entries are signed with a key anyone could know, so whoever reaches Redis can forge"
            " answers. Set REDIS_SIGNING_KEY (for local use only without it)."
        )
    return RedisLink(make_redis_client(settings.redis_url), trust=trust)
