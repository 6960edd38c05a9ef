"""The two tiers together: a short-lived memory tier in front of Redis."""

from __future__ import annotations

from relay.cache.base import CacheHit
from relay.cache.memory import MemoryCache
from relay.cache.redis_tier import RedisCache


class TieredCache:
    """A small memory tier in front of Redis.

    Hot observables cost no Redis round trip; while Redis is down or slow the
    memory tier carries on alone (and keeps storing), and Redis is used again
    once it answers.
    """

    def __init__(self, memory: MemoryCache, shared: RedisCache):
        self.memory = memory
        self.shared = shared

    @property
    def server(self) -> str:
        return self.shared.server

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        hit = self.memory.get(key)
        if hit is not None:
            return hit
        hit = self.shared.get(key, deadline)
        if hit is not None:
            self.memory.put(key, hit)
        return hit

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        self.memory.put(key, hit)
        self.shared.put(key, hit, deadline)

    def forget(self, key: str) -> None:
        self.memory.forget(key)
        self.shared.forget(key)
