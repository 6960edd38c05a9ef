"""What every answer cache is: `CacheHit`, the `AnswerCache` protocol, and `NoCache`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


def ttl_for(answer: dict | None, ttl: float, negative_ttl: float) -> float:
    """The lifetime of an answer's kind: found answers `ttl`, "no data" `negative_ttl`."""
    return negative_ttl if answer is None else ttl
