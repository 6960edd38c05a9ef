"""Keeping the relay polite to Threatscore: one rate limit and one hold-back for all instances.

`Pacing.before_attempt` runs before every HTTP attempt to Threatscore (the
transport calls it), `Pacing.rate_limited` when Threatscore answers 429 with
`Retry-After`:

- `THREATSCORE_RATE_LIMIT` lookups per second, for all instances together: a
  moving window kept in Redis by the `limits` library (its Lua scripts, one
  round trip per turn), so that no second ever grants more than the limit.
  Without Redis, or while it is down, each instance holds the limit alone. A
  lookup over the budget waits for its turn until its deadline allows no
  more, then fails with the relay's own `too many requests`.
- A 429 with `Retry-After` from Threatscore is written to Redis (one key,
  expiring when the wait does), and every instance reads it before each
  attempt: all of them hold back, not only the one that got the 429. The wait
  is never longer than THREATSCORE_MAX_RETRY_AFTER, whatever Threatscore asks
  (a `Retry-After: 86400` would otherwise stop every lookup for a day), nor
  whatever an entry in Redis says.
- While the circuit breaker (relay.breaker) is not closed, a failed attempt
  is not retried.

Both live under this deployment's namespace (`RedisLink.namespaced`), and the
hold-back is sealed (`RedisLink.seal`): one that does not prove itself is ignored.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable

from relay.breaker import Breaker
from relay.config import Settings
from relay.errors import HoldBackError, TooManyRequestsError
from relay.redis_link import RedisLink, RedisUnavailableError
from relay.redis_trust import sealed_instant

logger = logging.getLogger(__name__)

# Names within the deployment's Redis namespace (`RedisLink.namespaced`).
RATE_LIMIT_NAME = "rate-limit"
HOLD_BACK_NAME = "hold-back-until"
DEFAULT_MAX_HOLD_BACK = 60.0
# An attempt needs at least this long before the deadline to be worth a turn.
MIN_ATTEMPT_SECONDS = 0.05
# Waiters wake a little after a turn frees up, spread out so that they do not all ask at once.
WAKE_JITTER = 0.03


class Pacing:
    def __init__(
        self,
        per_second: int,
        link: RedisLink | None,
        redis_url: str | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_hold_back: float = DEFAULT_MAX_HOLD_BACK,
        breaker: Breaker | None = None,
    ):
        self._link = link
        self.max_hold_back = max_hold_back
        self._breaker = breaker
        self._sleep = sleep
        self._item = None
        self._shared = None
        if per_second > 0:
            # Imported here: `limits` costs tens of milliseconds at cold start, paid only when used.
            from limits import RateLimitItemPerSecond
            from limits.storage import MemoryStorage
            from limits.strategies import MovingWindowRateLimiter

            self._item = RateLimitItemPerSecond(per_second)
            self._local = MovingWindowRateLimiter(MemoryStorage())
        if link is not None and self._item is not None:
            from limits.storage import RedisStorage

            # The relay's own pool: every call of the limiter is bounded like any Redis call.
            storage = RedisStorage(redis_url or "redis://", connection_pool=link.client.connection_pool)
            self._shared = MovingWindowRateLimiter(storage)
        self._slot_lock = threading.Lock()
        self._next_slot = 0.0  # time.monotonic() of this instance's next turn, at the earliest
        self._hold_lock = threading.Lock()
        self._hold_until_here = 0.0  # epoch seconds; this instance's own view

    @property
    def per_second(self) -> int:
        return 0 if self._item is None else self._item.amount

    def before_attempt(self, deadline: float | None) -> None:
        """Returns when this attempt may go to Threatscore; raises `TooManyRequestsError` when
        it cannot before `deadline` (`time.monotonic()`)."""
        self._hold_back(deadline)
        if self._item is not None:
            self._wait_for_turn(deadline)

    def may_retry(self) -> bool:
        """Whether a failed attempt may be tried again (not while the breaker is open)."""
        return self._breaker is None or self._breaker.may_retry()

    def rate_limited(self, retry_after: float) -> float:
        """Threatscore answered 429 asking to wait `retry_after` s: every instance holds back,
        at most `max_hold_back` s. Returns the wait used."""
        used = min(retry_after, self.max_hold_back)
        now = time.time()
        until = now + used
        with self._hold_lock:
            already = self._hold_until_here > now
            self._hold_until_here = max(self._hold_until_here, until)
        if retry_after > self.max_hold_back and not already:
            # Once per hold-back, not once per lookup that gets the same answer.
            logger.warning(
                "Threatscore asked the relay to wait %g s (HTTP 429 Retry-After); holding back %g s only"
                " (THREATSCORE_MAX_RETRY_AFTER)",
                retry_after,
                used,
            )
        if self._link is None or used <= 0:
            return used
        name = self._link.namespaced(HOLD_BACK_NAME)
        value = self._link.seal(name, until, used)
        if value is None:
            return used
        with contextlib.suppress(RedisUnavailableError):
            self._link.call(
                "write",
                lambda client: client.set(name, value, px=max(1, round(used * 1000))),
                None,
            )
        return used

    def hold_back_until(self, deadline: float | None) -> float:
        """Until when (epoch seconds) the relay holds back, for every instance; in the past: not."""
        until = self._hold_until_here
        if self._link is not None:
            name = self._link.namespaced(HOLD_BACK_NAME)
            try:
                raw = self._link.call("read", lambda client: client.get(name), deadline)
            except RedisUnavailableError:
                raw = None
            until = max(until, sealed_instant(self._link.unseal(name, raw)))
        # Whatever Redis holds (an older relay's entry, a foreign value), never past the bound.
        return min(until, time.time() + self.max_hold_back)

    def describe(self, deadline: float | None) -> str | None:
        """The hold-back's state for /health while it holds; None otherwise."""
        wait = self.hold_back_until(deadline) - time.time()
        if wait <= 0:
            return None
        return f"holding back after an HTTP 429 from Threatscore for another {wait:.0f} s"

    def _hold_back(self, deadline: float | None) -> None:
        wait = self.hold_back_until(deadline) - time.time()
        if wait <= 0:
            return
        if not _fits(wait, deadline):
            raise HoldBackError(
                f"Threatscore asked the relay to wait (HTTP 429 Retry-After): the relay holds back for"
                f" another {wait:.1f} s, longer than the relay's deadline allows"
            )
        self._sleep(wait)

    def _wait_for_turn(self, deadline: float | None) -> None:
        self._wait_for_own_slot(deadline)
        while True:
            granted, reset_at = self._try_turn(deadline)
            if granted:
                return
            wait = max(0.0, reset_at - time.time()) + random.uniform(0, WAKE_JITTER)  # noqa: S311 - jitter
            if not _fits(wait, deadline):
                raise self._over_budget()
            self._sleep(wait)

    def _wait_for_own_slot(self, deadline: float | None) -> None:
        """This instance's turns are spread out, one per 1/limit s at most.

        The moving window alone grants a whole second's turns at once, and again a
        second later: bursts that arrive at Threatscore bunched together. Spacing each
        instance's turns keeps one instance's rate (the limit) and spreads the bursts.
        """
        with self._slot_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            if not _fits(slot - now, deadline):
                raise self._over_budget()
            self._next_slot = slot + 1 / self.per_second
        if slot > now:
            self._sleep(slot - now)

    def _over_budget(self) -> TooManyRequestsError:
        return TooManyRequestsError(
            f"the relay's own rate limit of {self.per_second} Threatscore lookups per second"
            " (THREATSCORE_RATE_LIMIT) was reached, and no turn came before the deadline"
        )

    def _try_turn(self, deadline: float | None) -> tuple[bool, float]:
        """(granted, when the next turn frees up, epoch seconds)."""
        item = self._item
        if self._shared is not None and self._link is not None:
            shared = self._shared
            # The window is the `limits` library's (its Lua scripts): not sealed, but in this
            # deployment's namespace. A forged one can only make the relay wait, never answer wrong.
            key = self._link.namespaced(RATE_LIMIT_NAME)
            try:
                return self._link.call("rate limit", lambda _client: _turn(shared, item, key), deadline)
            except RedisUnavailableError:
                pass  # each instance holds the limit alone meanwhile
        return _turn(self._local, item, RATE_LIMIT_NAME)


def _turn(limiter, item, key: str) -> tuple[bool, float]:
    if limiter.hit(item, key):
        return True, 0.0
    return False, limiter.get_window_stats(item, key).reset_time


def _fits(wait: float, deadline: float | None) -> bool:
    return deadline is None or time.monotonic() + wait + MIN_ATTEMPT_SECONDS < deadline


def build_pacing(settings: Settings, link: RedisLink | None, breaker: Breaker | None = None) -> Pacing:
    if settings.threatscore_rate_limit:
        where = f"shared through Redis at {link.server}" if link else "per instance"
        limit = settings.threatscore_rate_limit
        logger.info("Threatscore rate limit: %d lookups per second, %s", limit, where)
    return Pacing(
        settings.threatscore_rate_limit,
        link,
        settings.redis_url,
        max_hold_back=settings.threatscore_max_retry_after,
        breaker=breaker,
    )
