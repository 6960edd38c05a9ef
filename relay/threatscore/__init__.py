"""The Threatscore side: one shared transport (`transport`), one module per API (`score`).

Every API's client is a `ScoreSource`: what the lookups depend on.
"""

from __future__ import annotations

from typing import Protocol

from relay.threatscore.score import ScoreClient
from relay.threatscore.transport import MIN_ATTEMPT_SECONDS, USER_AGENT

__all__ = ["MIN_ATTEMPT_SECONDS", "USER_AGENT", "ScoreClient", "ScoreSource"]


class ScoreSource(Protocol):
    def score(self, value: str, deadline: float | None = None) -> dict | None:
        """The normalised answer for `value`, None for "no data"; raises `RelayError`.

        `deadline` (a `time.monotonic()` instant) bounds the whole lookup, retries included.
        """
