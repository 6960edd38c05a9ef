"""The Redis tier: answers shared by every instance, each entry sealed and namespaced."""

from __future__ import annotations

import contextlib
import time

from relay.cache.base import CacheHit, ttl_for
from relay.cache.entries import decode_entry, encode_entry, redis_key
from relay.redis_link import RedisLink, RedisUnavailableError


class RedisCache:
    """Cache shared by all function instances, stored in Redis through `relay.cache.entries`.

    It never raises: a Redis failure or a slow Redis is a miss, or a put that
    does nothing (`RedisLink` warns once per outage). An entry that does not
    prove itself (another format, a MAC that does not verify, past its TTL,
    not JSON) is a miss, and the next put replaces it.
    """

    def __init__(self, link: RedisLink, ttl: float, negative_ttl: float):
        self.link = link
        self._ttl = ttl
        self._negative_ttl = negative_ttl

    def forget(self, key: str) -> None:
        with contextlib.suppress(RedisUnavailableError):
            self.link.call("delete", lambda client: client.delete(redis_key(self.link, key)), None)

    @property
    def server(self) -> str:
        """Where the cache is, for log lines: `host:port/db`, never the password."""
        return self.link.server

    def get(self, key: str, deadline: float | None = None) -> CacheHit | None:
        name = redis_key(self.link, key)
        try:
            raw = self.link.call("read", lambda client: client.get(name), deadline)
        except RedisUnavailableError:
            return None
        return decode_entry(self.link, key, raw)

    def put(self, key: str, hit: CacheHit, deadline: float | None = None) -> None:
        lifetime = ttl_for(hit.answer, self._ttl, self._negative_ttl)
        ttl = lifetime - max(0.0, time.time() - hit.fetched_at)
        if ttl <= 0:
            # Not stored; an older entry of the other kind expires on its own TTL.
            return
        value = encode_entry(self.link, key, hit, lifetime)
        if value is None:
            return
        name = redis_key(self.link, key)
        # PX (milliseconds) so that a fractional TTL such as 0.5 s is honoured.
        with contextlib.suppress(RedisUnavailableError):
            self.link.call(
                "write", lambda client: client.set(name, value, px=max(1, round(ttl * 1000))), deadline
            )
