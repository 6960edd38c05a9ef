"""Tenants kept apart: one cache, seen by each tenant through its own scope of keys.

A scope is a prefix of every key the tenant's lookups use: in the memory tier,
in Redis, and in the single flight across instances (`SharedFlight.scoped`).
So one tenant's lookups never find, wait for or reveal another's answers.
With `CACHE_SHARED_BETWEEN_TENANTS=true` every tenant uses the one shared scope.
"""

from __future__ import annotations

from relay.cache.base import AnswerCache, CacheHit

SHARED_SCOPE = "shared/"


def tenant_scope(tenant: str, shared_between_tenants: bool) -> str:
    """The key prefix of `tenant`'s lookups (tenant names have no `/` or `=`)."""
    return SHARED_SCOPE if shared_between_tenants else f"tenant={tenant}/"


class ScopedCache:
    """`cache` with every key under `scope`."""

    def __init__(self, cache: AnswerCache, scope: str):
        self.cache = cache
        self.scope = scope

    @property
    def server(self) -> str | None:
        return getattr(self.cache, "server", None)

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        return self.cache.get(self.scope + key, deadline)

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        self.cache.put(self.scope + key, hit, deadline)

    def forget(self, key: str) -> None:
        self.cache.forget(self.scope + key)
