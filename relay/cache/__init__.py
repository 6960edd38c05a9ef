"""Answer cache: remembers Threatscore answers per observable key.

An answer is a JSON-serialisable dict, or `None` for "Threatscore has no
data", kept with the time Threatscore was asked (the mapping's lookup time, so
that every instance maps a cached answer to the same entities). Each kind has
its own lifetime (`cache_ttl`, `cache_negative_ttl`); a lifetime of 0 means
that kind is not stored. Errors are never cached.

One concern per module:

- `base`: `CacheHit`, the `AnswerCache` protocol, `NoCache`;
- `memory`: `MemoryCache` (one function instance, bounded in entries and bytes);
- `redis_tier`: `RedisCache` (shared by all instances; a Redis failure is a miss);
- `entries`: how an answer is stored in Redis (namespaced key, sealed with a MAC);
- `tiered`: `TieredCache`, a short-lived memory tier in front of Redis;
- `scope`: each tenant's own scope of keys (`ScopedCache`);
- `flight`: `SingleFlight` within an instance, `SharedFlight` across instances.
"""

from __future__ import annotations

import logging

from relay.cache.base import AnswerCache, CacheHit, NoCache
from relay.cache.entries import CACHE_FORMAT, decode_entry, encode_entry, redis_key, redis_lock_key
from relay.cache.flight import (
    POLL_FIRST,
    POLL_MAX,
    FlightWaitTimeoutError,
    SharedFlight,
    SingleFlight,
    build_shared_flight,
)
from relay.cache.memory import MemoryCache, encoded_size
from relay.cache.redis_tier import RedisCache
from relay.cache.scope import SHARED_SCOPE, ScopedCache, tenant_scope
from relay.cache.tiered import TieredCache
from relay.config import Settings
from relay.redis_link import RedisLink, build_redis_link

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_FORMAT",
    "POLL_FIRST",
    "POLL_MAX",
    "SHARED_SCOPE",
    "AnswerCache",
    "CacheHit",
    "FlightWaitTimeoutError",
    "MemoryCache",
    "NoCache",
    "RedisCache",
    "ScopedCache",
    "SharedFlight",
    "SingleFlight",
    "TieredCache",
    "build_cache",
    "build_shared_flight",
    "decode_entry",
    "encode_entry",
    "encoded_size",
    "redis_key",
    "redis_lock_key",
    "tenant_scope",
]


def build_cache(settings: Settings, link: RedisLink | None = None) -> AnswerCache:
    """The cache the relay uses: a memory tier in front of Redis when REDIS_URL is set,
    else process memory alone."""
    if settings.cache_ttl <= 0 and settings.cache_negative_ttl <= 0:
        logger.info("Answer cache: disabled (CACHE_TTL and CACHE_NEGATIVE_TTL are 0)")
        return NoCache()
    if link is None:
        link = build_redis_link(settings)
    bounds = {"max_entries": settings.cache_max_entries, "max_bytes": settings.cache_max_bytes}
    if link is not None:
        memory = MemoryCache(
            ttl=settings.cache_ttl,
            negative_ttl=settings.cache_negative_ttl,
            max_lifetime=settings.cache_memory_ttl,
            **bounds,
        )
        cache = TieredCache(memory, RedisCache(link, settings.cache_ttl, settings.cache_negative_ttl))
        logger.info(
            "Answer cache: Redis at %s, behind a memory tier of %d entries, %d bytes, %g s",
            cache.server,
            settings.cache_max_entries,
            settings.cache_max_bytes,
            settings.cache_memory_ttl,
        )
        return cache
    logger.info(
        "Answer cache: in memory, at most %d entries and %d bytes",
        settings.cache_max_entries,
        settings.cache_max_bytes,
    )
    return MemoryCache(ttl=settings.cache_ttl, negative_ttl=settings.cache_negative_ttl, **bounds)
