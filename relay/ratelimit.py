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
  attempt: all of them hold back, not only the one that got the 429.

Both live under this deployment's namespace (`RedisLink.namespaced`), and the
hold-back is sealed (`RedisLink.seal`): one that does not prove itself is ignored.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable

from relay.config import Settings
from relay.errors import TooManyRequestsError
from relay.redis_link import RedisLink, RedisUnavailableError
from relay.redis_trust import Unsealed

logger = logging.getLogger(__name__)

# Names within the deployment's Redis namespace (`RedisLink.namespaced`).
RATE_LIMIT_NAME = "rate-limit"
HOLD_BACK_NAME = "hold-back-until"
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
    ):
        self._link = link
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

    def rate_limited(self, retry_after: float) -> None:
        """Threatscore answered 429 asking to wait `retry_after` s: every instance holds back."""
        until = time.time() + retry_after
        with self._hold_lock:
            self._hold_until_here = max(self._hold_until_here, until)
        if self._link is None or retry_after <= 0:
            return
        name = self._link.namespaced(HOLD_BACK_NAME)
        value = self._link.seal(name, until, retry_after)
        if value is None:
            return
        with contextlib.suppress(RedisUnavailableError):
            self._link.call(
                "write", lambda client: client.set(name, value, px=max(1, round(retry_after * 1000))), None
            )

    def _hold_back(self, deadline: float | None) -> None:
        until = self._hold_until_here
        if self._link is not None:
            name = self._link.namespaced(HOLD_BACK_NAME)
            try:
                raw = self._link.call("read", lambda client: client.get(name), deadline)
            except RedisUnavailableError:
                raw = None
            until = max(until, _as_time(self._link.unseal(name, raw)))
        wait = until - time.time()
        if wait <= 0:
            return
        if not _fits(wait, deadline):
            raise TooManyRequestsError(
                f"Threatscore asked the relay to wait {wait:.1f} s (HTTP 429 Retry-After),"
                " longer than the relay's deadline allows"
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


def _as_time(unsealed: Unsealed | None) -> float:
    """The instant a sealed hold-back names (epoch seconds), or 0.0."""
    value = None if unsealed is None else unsealed.data
    if not isinstance(value, int | float) or isinstance(value, bool):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _fits(wait: float, deadline: float | None) -> bool:
    return deadline is None or time.monotonic() + wait + MIN_ATTEMPT_SECONDS < deadline


def build_pacing(settings: Settings, link: RedisLink | None) -> Pacing:
    if settings.threatscore_rate_limit:
        where = f"shared through Redis at {link.server}" if link else "per instance"
        limit = settings.threatscore_rate_limit
        logger.info("Threatscore rate limit: %d lookups per second, %s", limit, where)
    return Pacing(settings.threatscore_rate_limit, link, settings.redis_url)
