"""Looking up the observables of one request: cache first, then Threatscore,
concurrently, within a deadline.

Each observable ends with an answer (possibly "no data") or with the error
that explains why not; one failure never costs the others their results.

`Lookup` is built once per process. What it shares between requests is the
answer cache and the single flight (so that concurrent requests for one
observable cost one upstream call: within the instance by `SingleFlight`,
across instances by `SharedFlight` when Redis is there); everything about one
request stays in the arguments of `look_up`. A request waits for a flight it
shares only until its own deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime

from relay.breaker import Breaker, Ticket
from relay.cache import AnswerCache, CacheHit, FlightWaitTimeoutError, SharedFlight, SingleFlight
from relay.errors import BreakerOpenError, DeadlineExceededError, HoldBackError, InternalError, RelayError
from relay.logs import RequestStats
from relay.observables import Observable
from relay.ratelimit import Pacing
from relay.threatscore import MIN_ATTEMPT_SECONDS, AnswerSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    answer: dict | None = None  # None with no error: Threatscore has no data
    error: RelayError | None = None
    # When Threatscore was asked for this answer (from the cache: when it was first asked).
    fetched_at: datetime | None = None

    @classmethod
    def from_hit(cls, hit: CacheHit) -> Outcome:
        return cls(answer=hit.answer, fetched_at=datetime.fromtimestamp(hit.fetched_at, UTC))


NOT_IN_TIME = "Threatscore did not answer before the relay's deadline"


class Lookup:
    def __init__(
        self,
        source: AnswerSource,
        cache: AnswerCache,
        max_concurrency: int,
        shared_flight: SharedFlight | None = None,
        breaker: Breaker | None = None,
        pacing: Pacing | None = None,
    ):
        self._breaker = breaker  # lookups fail at once while Threatscore keeps failing
        self._pacing = pacing  # the 429 hold-back, for /health's words
        self._source = source
        self._cache = cache
        self._max_concurrency = max_concurrency
        self._flight = SingleFlight()
        self._shared_flight = shared_flight

    def look_up(
        self, observables: list[Observable], deadline: float, stats: RequestStats
    ) -> dict[str, Outcome]:
        """Outcomes by `Observable.cache_key`; `deadline` is a `time.monotonic()` instant.

        `stats` (the request's own) counts the cache hits and the upstream calls.

        Returns by the deadline: an observable still unanswered then gets a
        timeout error, and its upstream call finishes in the background.
        """
        outcomes: dict[str, Outcome] = {}
        misses: dict[str, Observable] = {}
        for observable in observables:
            key = observable.cache_key
            if key in outcomes or key in misses:
                continue
            # In the request's own thread: an all-cached request starts no thread at all.
            # Past the deadline (a slow shared cache), the rest only collect their timeouts.
            hit = self._cache.get(key, deadline) if time.monotonic() < deadline else None
            if hit is not None:
                stats.count_cache_hit()
                outcomes[key] = Outcome.from_hit(hit)
            else:
                misses[key] = observable
        if misses:
            outcomes.update(self._fetch_all(list(misses.values()), deadline, stats, self._shared_lookup))
        return outcomes

    def forget(self, key: str) -> None:
        """Drop the cached answer for `key`: the relay could not map it, so the next lookup
        asks Threatscore again instead of failing the same way until it expires."""
        self._cache.forget(key)

    def probe(self, observable: Observable, deadline: float, stats: RequestStats) -> Outcome:
        """A real upstream call whatever the cache holds (the health check), answered by the
        deadline like any lookup; a good answer refreshes the cache that observe and
        deliberate read."""
        return self._fetch_all([observable], deadline, stats, self._asked)[observable.cache_key]

    def holding_back(self, deadline: float) -> list[str]:
        """What keeps lookups from Threatscore now (the breaker, the 429 hold-back), in words."""
        notes = []
        if self._breaker is not None:
            self._breaker.refresh(deadline)
            note = self._breaker.describe()
            if note:
                notes.append(note)
        if self._pacing is not None:
            note = self._pacing.describe(deadline)
            if note:
                notes.append(note)
        return notes

    def _asked(self, observable: Observable, deadline: float, stats: RequestStats) -> Outcome:
        ticket = Ticket()
        if self._breaker is not None:
            try:
                ticket = self._breaker.admit(deadline)
            except BreakerOpenError as error:
                stats.count_cut_short("breaker")
                return Outcome(error=error)
        stats.count_upstream_call()
        fetched_at = time.time()
        outcome = _fetched(self._source, observable, deadline, fetched_at)
        if isinstance(outcome.error, HoldBackError):
            stats.count_cut_short("hold-back")
        if self._breaker is not None:
            self._breaker.record(ticket, outcome.error, deadline)
        if outcome.error is None:  # errors are never cached: the next lookup asks again
            self._cache.put(observable.cache_key, CacheHit(outcome.answer, fetched_at), deadline)
        return outcome

    def _fetch_all(
        self,
        observables: list[Observable],
        deadline: float,
        stats: RequestStats,
        fetch: Callable[[Observable, float, RequestStats], Outcome],
    ) -> dict[str, Outcome]:
        # A pool per request, not per process: a request's hung lookups then occupy only its
        # own threads (never another request's), the concurrency bound is per request as
        # documented, and no thread is started in gunicorn's master before it forks the worker.
        # Starting a few threads costs well under a millisecond next to an upstream call.
        executor = ThreadPoolExecutor(
            max_workers=min(self._max_concurrency, len(observables)), thread_name_prefix="threatscore"
        )
        try:
            futures = {
                executor.submit(fetch, observable, deadline, stats): observable for observable in observables
            }
            done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
            outcomes = {}
            for future, observable in futures.items():
                if future in done:
                    outcomes[observable.cache_key] = future.result()
                else:
                    outcomes[observable.cache_key] = Outcome(error=DeadlineExceededError(NOT_IN_TIME))
            return outcomes
        finally:
            # Late lookups finish in the background (their timeouts end at the deadline);
            # nobody waits for them, and lookups not started yet never start.
            executor.shutdown(wait=False, cancel_futures=True)

    def _shared_lookup(self, observable: Observable, deadline: float, stats: RequestStats) -> Outcome:
        """One upstream call per observable at a time, whichever requests ask for it.

        Only the request whose flight it is counts the call (or the late hit) in its stats.
        """
        outcome = self._joined(observable, deadline, stats)
        if (
            isinstance(outcome.error, DeadlineExceededError)
            and time.monotonic() < deadline - MIN_ATTEMPT_SECONDS
        ):
            # The flight it joined belonged to a request with less time left: this request
            # still has time of its own, so it asks again (leading a flight of its own).
            outcome = self._joined(observable, deadline, stats)
        return outcome

    def _joined(self, observable: Observable, deadline: float, stats: RequestStats) -> Outcome:
        """The in-instance flight for this observable, waited for until this request's deadline."""
        try:
            return self._flight.do(
                observable.cache_key, lambda: self._cached_or_fetched(observable, deadline, stats), deadline
            )
        except FlightWaitTimeoutError:
            return Outcome(error=DeadlineExceededError(NOT_IN_TIME))

    def _cached_or_fetched(self, observable: Observable, deadline: float, stats: RequestStats) -> Outcome:
        # Asked again: a flight for this key may have finished since the request's first look.
        hit = self._cache.get(observable.cache_key, deadline)
        if hit is not None:
            stats.count_cache_hit()
            return Outcome.from_hit(hit)
        if self._shared_flight is None:
            return self._asked(observable, deadline, stats)

        def answered_elsewhere(hit: CacheHit) -> Outcome:
            stats.count_cache_hit()
            self._cache.put(observable.cache_key, hit, deadline)  # into the memory tier
            return Outcome.from_hit(hit)

        try:
            return self._shared_flight.run(
                observable.cache_key,
                deadline,
                lambda: self._asked(observable, deadline, stats),
                answered_elsewhere,
            )
        except FlightWaitTimeoutError:
            return Outcome(error=DeadlineExceededError(NOT_IN_TIME))


def _fetched(source: AnswerSource, observable: Observable, deadline: float, fetched_at: float) -> Outcome:
    try:
        answer = source.fetch(observable.lookup_value, deadline)
    except RelayError as error:
        return Outcome(error=error)
    except Exception:  # a bug must cost one observable, never the whole answer
        logger.exception("unexpected failure while looking up an observable")
        return Outcome(error=InternalError("the relay failed to process Threatscore's answer"))
    return Outcome(answer=answer, fetched_at=datetime.fromtimestamp(fetched_at, UTC))
