"""Looking up the observables of one request: concurrently, within a deadline.

Each observable ends with an answer (possibly "no data") or with the error
that explains why not; one failure never costs the others their results.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from relay.errors import DeadlineExceededError, InternalError, RelayError
from relay.observables import Observable
from relay.threatscore import ScoreSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    answer: dict | None = None  # None with no error: Threatscore has no data
    error: RelayError | None = None


def look_up(
    source: ScoreSource, observables: list[Observable], max_concurrency: int, deadline: float
) -> dict[str, Outcome]:
    """Outcomes by `Observable.cache_key`; `deadline` is a `time.monotonic()` instant."""
    if not observables:
        return {}
    executor = ThreadPoolExecutor(
        max_workers=min(max_concurrency, len(observables)), thread_name_prefix="threatscore"
    )
    try:
        futures = {executor.submit(_outcome, source, observable): observable for observable in observables}
        done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        outcomes = {}
        for future, observable in futures.items():
            if future in done:
                outcomes[observable.cache_key] = future.result()
            else:
                outcomes[observable.cache_key] = Outcome(
                    error=DeadlineExceededError("Threatscore did not answer before the relay's deadline")
                )
        return outcomes
    finally:
        # Late lookups finish in the background; nobody waits for them.
        executor.shutdown(wait=False, cancel_futures=True)


def _outcome(source: ScoreSource, observable: Observable) -> Outcome:
    try:
        return Outcome(answer=source.score(observable.lookup_value))
    except RelayError as error:
        return Outcome(error=error)
    except Exception:  # a bug must cost one observable, never the whole answer
        logger.exception("unexpected failure while looking up an observable")
        return Outcome(error=InternalError("the relay failed to process Threatscore's answer"))
