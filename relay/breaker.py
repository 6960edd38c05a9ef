"""The circuit breaker in front of Threatscore, shared by all instances.

While Threatscore fails (5xx, timeouts, refused or broken connections), asking
it again only costs analysts time and Threatscore calls. The breaker counts
failed lookups (after their retries), on every instance together:

- closed: lookups go to Threatscore; an answer resets the count;
- open (after `BREAKER_FAILURES` failures in a row): lookups that need
  Threatscore fail at once with `service unavailable`, saying when the relay
  tries again; cached answers are still served;
- after `BREAKER_COOL_DOWN` seconds exactly one lookup, across all instances,
  probes Threatscore (a Redis `SET NX`): an answer closes the breaker, a
  failure opens it for another cool-down.

An answer of any kind counts as Threatscore being up: "no data", a refusal
(401/403), a 404 "Observable not found". A 429 is neither (the hold-back of
`relay.ratelimit` deals with it).

With Redis (REDIS_URL) the state lives there; without it, or while Redis is
down, each instance keeps its own. Its keys are in the deployment's namespace
(`RedisLink.namespaced`) and the open-until instant is sealed
(`RedisLink.seal`). The failure count is a plain Redis counter (INCR cannot be
sealed): a forged count can at most open the breaker early, never answer wrong.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from relay.config import Settings
from relay.errors import (
    BreakerOpenError,
    RelayError,
    TooManyRequestsError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
    UpstreamTLSError,
    UpstreamUnavailableError,
)
from relay.redis_link import RedisLink, RedisUnavailableError
from relay.redis_trust import sealed_instant

logger = logging.getLogger(__name__)

# How long a failure count lives without a new failure: a run of failures hours apart is no outage.
FAILURE_COUNT_TTL = 600.0
# An open breaker's Redis entry outlives its cool-down by this much (the probe clears it).
OPEN_ENTRY_GRACE = 3600.0
# A probe's claim expires this long after the relay's deadline (if its instance died meanwhile).
PROBE_CLAIM_GRACE = 5.0


# Names within the deployment's Redis namespace (`RedisLink.namespaced`).
FAILURES_NAME = "breaker:failures"
OPEN_UNTIL_NAME = "breaker:open-until"


def probe_name(period: float) -> str:
    """The claim of the probe that ends the open period `period` (its open-until instant): a
    lookup that read an earlier period can never claim the probe of a later one."""
    return f"breaker:probe:{float(period)!r}"


# Failures of the service, not answers about one observable. A lookup cut short by its
# request's deadline (DeadlineExceededError) is not one: a healthy Threatscore does that to
# the lookups in flight when a large batch's deadline comes. A Threatscore that hangs fails
# lookups by the read timeout (THREATSCORE_TIMEOUT, shorter than RELAY_DEADLINE by default).
SERVICE_FAILURES = (
    UpstreamUnavailableError,
    UpstreamTimeoutError,
    UpstreamConnectionError,
    UpstreamTLSError,
)


def is_service_failure(error: RelayError | None) -> bool:
    return isinstance(error, SERVICE_FAILURES) and not isinstance(error, BreakerOpenError)


@dataclass(frozen=True)
class Ticket:
    """Leave to ask Threatscore: `probe` when this lookup is the one testing an open breaker."""

    probe: bool = False
    period: float = 0.0  # the open-until instant whose probe this is


class _LocalState:
    """The breaker's state in this process (no Redis, or Redis down)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0
        self.open_until = 0.0
        self.probed_period = 0.0
        self.probe_until = 0.0

    def read_open_until(self) -> float:
        return self.open_until

    def count_failure(self) -> int:
        with self._lock:
            self.failures += 1
            return self.failures

    def open(self, until: float) -> bool:
        with self._lock:
            if self.open_until:
                return False
            self.open_until = until
            return True

    def reopen(self, until: float) -> None:
        with self._lock:
            self.open_until = until

    def take_probe(self, period: float, claim: float) -> bool:
        now = time.time()
        with self._lock:
            if self.probed_period == period and self.probe_until > now:
                return False
            self.probed_period, self.probe_until = period, now + claim
            return True

    def release_probe(self, period: float) -> None:
        with self._lock:
            if self.probed_period == period:
                self.probe_until = 0.0

    def close(self) -> bool:
        with self._lock:
            was_open = bool(self.open_until)
            self.failures, self.open_until = 0, 0.0
            return was_open

    def reset_failures(self) -> None:
        self.failures = 0


class _SharedState:
    """The breaker's state in Redis: what every instance reads and writes."""

    def __init__(self, link: RedisLink):
        self._link = link
        self._failures = link.namespaced(FAILURES_NAME)
        self._open_until = link.namespaced(OPEN_UNTIL_NAME)

    def read_open_until(self, deadline: float | None) -> float:
        raw = self._link.call("read", lambda client: client.get(self._open_until), deadline)
        return sealed_instant(self._link.unseal(self._open_until, raw))

    def count_failure(self, deadline: float | None) -> int:
        def count(client) -> int:
            pipe = client.pipeline(transaction=True)
            pipe.incr(self._failures)
            pipe.pexpire(self._failures, int(FAILURE_COUNT_TTL * 1000))
            return int(pipe.execute()[0])

        return self._link.call("write", count, deadline)

    def open(self, until: float, deadline: float | None) -> bool:
        return self._write_open_until(until, deadline, only_if_absent=True)

    def reopen(self, until: float, deadline: float | None) -> None:
        self._write_open_until(until, deadline, only_if_absent=False)

    def _write_open_until(self, until: float, deadline: float | None, only_if_absent: bool) -> bool:
        lifetime = until - time.time() + OPEN_ENTRY_GRACE
        value = self._link.seal(self._open_until, until, lifetime)
        if value is None:
            return False
        key, ttl = self._open_until, _ms(lifetime)
        return bool(
            self._link.call(
                "write", lambda client: client.set(key, value, nx=only_if_absent, px=ttl), deadline
            )
        )

    def take_probe(self, period: float, claim: float, deadline: float | None) -> bool:
        """One claim per open period, across all instances (SET NX): the probe's."""
        key = self._link.namespaced(probe_name(period))  # who probes does not matter, only that one does
        return bool(
            self._link.call("write", lambda client: client.set(key, b"1", nx=True, px=_ms(claim)), deadline)
        )

    def release_probe(self, period: float, deadline: float | None) -> None:
        key = self._link.namespaced(probe_name(period))
        self._link.call("write", lambda client: client.delete(key), deadline)

    def close(self, deadline: float | None) -> bool:
        def close(client) -> int:
            pipe = client.pipeline(transaction=True)
            pipe.delete(self._open_until)
            pipe.delete(self._failures)
            return int(pipe.execute()[0])

        return bool(self._link.call("write", close, deadline))

    def reset_failures(self, deadline: float | None) -> None:
        self._link.call("write", lambda client: client.delete(self._failures), deadline)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class Breaker:
    """`admit` before a lookup asks Threatscore, `record` after it; `may_retry` before a retry."""

    def __init__(
        self,
        failures: int,
        cool_down: float,
        link: RedisLink | None = None,
        *,
        probe_claim: float = 25.0,
        clock: Callable[[], float] = time.time,
    ):
        self.failures = failures
        self.cool_down = cool_down
        self._probe_claim = probe_claim
        self._clock = clock
        self._local = _LocalState()
        self._shared = _SharedState(link) if link is not None else None
        # This instance's latest view of the shared state (0: closed), for `may_retry` and /health.
        self._open_until_seen = 0.0
        self._last_failures = 0

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    def admit(self, deadline: float | None) -> Ticket:
        """Leave to ask Threatscore, or `BreakerOpenError` at once."""
        if not self.enabled:
            return Ticket()
        open_until = self._run("read_open_until", deadline)
        self._open_until_seen = open_until
        if not open_until:
            return Ticket()
        now = self._clock()
        if now < open_until:
            raise self._open_error(open_until, now)
        if self._run("take_probe", deadline, open_until, self._probe_claim):
            logger.warning(
                "Threatscore circuit breaker probing: the cool-down is over, one lookup asks Threatscore"
            )
            return Ticket(probe=True, period=open_until)
        raise BreakerOpenError(
            "Threatscore has been failing, so the relay is not asking it for now; one lookup is testing"
            f" it at this moment, and the relay tries again within {self._probe_claim:g} s"
        )

    def may_retry(self) -> bool:
        """Whether a failed attempt may be retried: not while the breaker is open or probing
        (a probe is one attempt; lookups in flight when it opened stop at their next retry)."""
        return not (self.enabled and self._open_until_seen)

    def record(self, ticket: Ticket, error: RelayError | None, deadline: float | None) -> None:
        """What the lookup admitted by `ticket` came to: `error` None for any answer."""
        if not self.enabled:
            return
        if is_service_failure(error):
            self._failed(ticket, error, deadline)
        elif error is None or not _neutral(error):
            self._answered(ticket, deadline)
        elif ticket.probe:  # held back (429, rate limit): someone else may probe
            self._run("release_probe", deadline, ticket.period)

    def describe(self) -> str | None:
        """The state for /health when it is not closed; None when closed."""
        if not self.enabled or not self._open_until_seen:
            return None
        now = self._clock()
        if now < self._open_until_seen:
            again = _at(self._open_until_seen, now)
            return f"the circuit breaker is open: Threatscore is tried again at {again}"
        return "the circuit breaker's cool-down is over: one lookup is testing Threatscore, or the next will"

    def refresh(self, deadline: float | None) -> None:
        """Reads the shared state (for /health, which may not have looked anything up)."""
        if self.enabled:
            self._open_until_seen = self._run("read_open_until", deadline)

    def _failed(self, ticket: Ticket, error: RelayError | None, deadline: float | None) -> None:
        until = self._clock() + self.cool_down
        if ticket.probe:
            self._run("reopen", deadline, until)
            self._open_until_seen = until
            logger.warning(
                "Threatscore circuit breaker opened again: the probe failed (%s); next try at %s",
                error.message if error else "",
                _at(until, self._clock()),
            )
            return
        count = self._run("count_failure", deadline)
        self._last_failures = count
        if count < self.failures:
            return
        if self._run("open", deadline, until):
            self._open_until_seen = until
            logger.warning(
                "Threatscore circuit breaker opened: %d lookups in a row failed (last: %s); lookups that"
                " need Threatscore fail at once until %s, cached answers are still served",
                count,
                error.message if error else "",
                _at(until, self._clock()),
            )
        elif not self._open_until_seen:
            self._open_until_seen = self._run("read_open_until", deadline)

    def _answered(self, ticket: Ticket, deadline: float | None) -> None:
        if ticket.probe or self._open_until_seen:
            self._open_until_seen = 0.0
            if self._run("close", deadline):
                logger.warning("Threatscore circuit breaker closed: Threatscore answers again")
            return
        self._run("reset_failures", deadline)

    def _open_error(self, open_until: float, now: float) -> BreakerOpenError:
        return BreakerOpenError(
            f"Threatscore has been failing ({self.failures} or more lookups in a row), so the relay is"
            f" not asking it for now; it tries again at {_at(open_until, now)}"
        )

    def _run(self, operation: str, deadline: float | None, *args):
        """`operation` on the shared state, or on this instance's own while Redis is out."""
        if self._shared is not None:
            try:
                return getattr(self._shared, operation)(*args, deadline)
            except RedisUnavailableError:
                pass
        return getattr(self._local, operation)(*args)


def _neutral(error: RelayError) -> bool:
    """Not an answer, not a failure: the lookup never got Threatscore's word (a 429, the
    relay's own rate limit or hold-back)."""
    return isinstance(error, TooManyRequestsError)


def _at(instant: float, now: float) -> str:
    clock = datetime.fromtimestamp(instant, UTC).strftime("%H:%M:%S UTC")
    return f"{clock} (in {max(0.0, instant - now):.0f} s)"


def build_breaker(settings: Settings, link: RedisLink | None) -> Breaker:
    breaker = Breaker(
        settings.breaker_failures,
        settings.breaker_cool_down,
        link,
        probe_claim=settings.relay_deadline + PROBE_CLAIM_GRACE,
    )
    if breaker.enabled:
        where = f"shared through Redis at {link.server}" if link else "per instance"
        logger.info(
            "Threatscore circuit breaker: opens after %d failed lookups in a row, cool-down %g s, %s",
            settings.breaker_failures,
            settings.breaker_cool_down,
            where,
        )
    return breaker
