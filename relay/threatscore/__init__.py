"""The Threatscore side: one shared transport (`transport`), one module per API (`score`, `v3`).

Every API's client is an `AnswerSource` (`fetch(value)`): what the lookups depend on.
`build_source` picks the client of the configured API (THREATSCORE_API).
"""

from __future__ import annotations

from typing import Protocol

import requests

from relay.config import Settings
from relay.threatscore.score import ScoreClient
from relay.threatscore.transport import MIN_ATTEMPT_SECONDS, USER_AGENT, Pacing
from relay.threatscore.v3 import V3Client

__all__ = ["MIN_ATTEMPT_SECONDS", "USER_AGENT", "ScoreClient", "AnswerSource", "V3Client", "build_source"]

CLIENTS = {"v3": V3Client, "score": ScoreClient}


class AnswerSource(Protocol):
    def fetch(self, value: str, deadline: float | None = None) -> dict | None:
        """The normalised answer for `value`, None for "no data"; raises `RelayError`.

        `deadline` (a `time.monotonic()` instant) bounds the whole lookup, retries included.
        """


def build_source(settings: Settings, session: requests.Session, pacing: Pacing | None = None) -> AnswerSource:
    """The client of the API that THREATSCORE_API names; `pacing`: the rate limit and 429
    hold-back (relay.ratelimit), if any."""
    return CLIENTS[settings.threatscore_api](settings, session, pacing=pacing)
