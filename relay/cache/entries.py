"""How an answer is stored in Redis: under this deployment's namespaced key, sealed with the
deployment's MAC (`relay.redis_trust`), living as long as its kind's TTL from when Threatscore
was asked.

The sealed data is the answer itself (a dict, or None for "no data"); the seal's own time is
the instant Threatscore was asked, so an entry older than its kind's TTL is a miss even when
Redis kept it (written without expiry, or dated back).
"""

from __future__ import annotations

from relay.cache.base import CacheHit
from relay.redis_link import RedisLink
from relay.redis_trust import FORMAT

# The stored format (the seal's): bump it when what is stored changes.
CACHE_FORMAT = FORMAT


def redis_key(link: RedisLink, key: str) -> bytes:
    """The Redis key of the answer for the cache key `key` (which may carry a tenant scope)."""
    # surrogatepass: a lone surrogate (valid in a JSON string) must not make encoding fail.
    return link.namespaced("answer:" + key).encode("utf-8", "surrogatepass")


def redis_lock_key(link: RedisLink, key: str) -> str:
    """The Redis key of the single-flight lock for `key`."""
    return link.namespaced("lock:" + key.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))


def encode_entry(link: RedisLink, key: str, hit: CacheHit, ttl: float) -> bytes | None:
    """`hit` sealed for `key`, living `ttl` s from when Threatscore was asked; None when it
    cannot be encoded."""
    return link.seal(redis_key(link, key), hit.answer, ttl, at=hit.fetched_at)


def decode_entry(link: RedisLink, key: str, raw: bytes | None) -> CacheHit | None:
    """The hit stored as `raw` under `key`, or None when it does not prove itself."""
    unsealed = link.unseal(redis_key(link, key), raw)
    if unsealed is None:
        return None
    answer = unsealed.data
    if answer is not None and not isinstance(answer, dict):
        return None  # sealed by this deployment, so never seen: not an answer all the same
    return CacheHit(answer, unsealed.at)
