"""Tenants kept apart: one `Lookup` per tenant.

A tenant is whoever an access key lets in (`relay.auth`). By default each
tenant's lookups go through their own scope of the cache (memory tier and
Redis), their own single flight and their own locks across instances, so that
what one tenant looks up (whether, and when) never shows in another's answers
or timings. With `CACHE_SHARED_BETWEEN_TENANTS=true` all tenants share one.
Whatever the setting, the Threatscore client, and so the rate limit and the
hold-back, are the deployment's: one licence, one limit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from relay.breaker import Breaker
from relay.cache import AnswerCache, ScopedCache, SharedFlight, tenant_scope
from relay.lookup import Lookup
from relay.ratelimit import Pacing
from relay.threatscore import AnswerSource


class TenantLookups:
    """The `Lookup` of each tenant, made on its first request (tenants are few: one per
    configured access key's name)."""

    def __init__(self, make: Callable[[str], Lookup], shared_between_tenants: bool = False):
        self._make = make
        self._shared = shared_between_tenants
        self._lookups: dict[str, Lookup] = {}
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        source: AnswerSource,
        cache: AnswerCache,
        max_concurrency: int,
        shared_flight: SharedFlight | None = None,
        shared_between_tenants: bool = False,
        breaker: Breaker | None = None,
        pacing: Pacing | None = None,
    ) -> TenantLookups:
        def make(tenant: str) -> Lookup:
            scope = tenant_scope(tenant, shared_between_tenants)
            flight = None if shared_flight is None else shared_flight.scoped(scope)
            # One breaker and one hold-back for the deployment: Threatscore fails for every tenant.
            return Lookup(source, ScopedCache(cache, scope), max_concurrency, flight, breaker, pacing)

        return cls(make, shared_between_tenants)

    @classmethod
    def single(cls, lookup: Lookup) -> TenantLookups:
        """Every tenant through `lookup` (a relay built around one lookup, as tests do)."""
        return cls(lambda _tenant: lookup, shared_between_tenants=True)

    def of(self, tenant: str) -> Lookup:
        key = "" if self._shared else tenant
        lookup = self._lookups.get(key)
        if lookup is None:
            with self._lock:
                lookup = self._lookups.get(key)
                if lookup is None:
                    lookup = self._lookups[key] = self._make(tenant)
        return lookup
