"""The memory tier: answers in the process, bounded in entries, bytes and time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from cachetools import TLRUCache

from relay.cache.base import CacheHit, ttl_for


def encoded_size(answer: dict | None) -> int:
    """What an answer weighs in a cache: the length of its JSON form."""
    try:
        return len(orjson.dumps(answer))
    except TypeError:  # e.g. a lone surrogate: json escapes it
        return len(json.dumps(answer, separators=(",", ":")))


@dataclass(frozen=True)
class _Entry:
    hit: CacheHit
    size: int
    lifetime: float  # seconds in this cache, from the moment it is stored


class MemoryCache:
    """In-process cache bounded in entries, in bytes (each answer's JSON size) and in time.

    `max_lifetime`, when set, bounds how long an entry stays here whatever its
    kind's TTL (the memory tier in front of Redis). An entry never outlives
    its kind's TTL counted from `fetched_at`. Answers are stored and returned
    as the same objects: callers must not mutate them.
    """

    def __init__(
        self,
        max_entries: int,
        ttl: float,
        negative_ttl: float,
        *,
        max_bytes: int = 32 * 1024 * 1024,
        max_lifetime: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_lifetime = max_lifetime
        self._wall_clock = wall_clock
        # TLRU: each entry expires at its own time, and the least recently used ones are
        # evicted when the bytes would pass max_bytes (entries are bounded in `put`).
        self._entries: TLRUCache[str, _Entry] = TLRUCache(
            maxsize=max_bytes, ttu=self._expires_at, timer=clock, getsizeof=lambda entry: entry.size
        )
        # cachetools caches are not thread-safe, and even a read reorders entries.
        self._lock = threading.Lock()

    @staticmethod
    def _expires_at(key: str, entry: _Entry, now: float) -> float:
        return now + entry.lifetime

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else entry.hit

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        lifetime = ttl_for(hit.answer, self._ttl, self._negative_ttl)
        lifetime -= max(0.0, self._wall_clock() - hit.fetched_at)  # an answer from Redis has aged
        if self._max_lifetime is not None:
            lifetime = min(lifetime, self._max_lifetime)
        size = encoded_size(hit.answer) + len(key)
        with self._lock:
            if lifetime <= 0 or size > self._max_bytes:
                # Not stored; an older entry of the other kind is stale now.
                self._entries.pop(key, None)
                return
            self._entries.pop(key, None)
            self._entries.expire()
            while len(self._entries) >= self._max_entries:
                self._entries.popitem()  # the least recently used
            self._entries[key] = _Entry(hit, size, lifetime)

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)

    @property
    def bytes_held(self) -> int:
        with self._lock:
            self._entries.expire()
            return int(self._entries.currsize)
