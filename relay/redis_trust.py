"""What the relay keeps in Redis proves itself: one mechanism for every Redis user.

Whoever reaches Redis (anyone holding its password, another deployment sharing
it) can write anything there. So:

- every key is namespaced by the deployment's answer source (`namespaced`):
  backend, Threatscore URL and the identity of its API key (a hash, never the
  key), so that two deployments sharing one Redis never read each other's
  answers, locks, hold-backs or rate-limit windows;
- every value is sealed (`seal`): `MAC.JSON`, where the JSON holds the format
  version, when it was written, how long it lives and the data, and the MAC is
  HMAC-SHA256 with the deployment's signing key over the Redis key and the
  JSON. Binding the key means an entry copied from one key to another (the
  Clean answer of one IP put under a malicious one) does not verify either;
- `unseal` gives back the data only when the MAC verifies, the JSON parses, the
  version is this one, the times are finite numbers and the entry is younger
  than its own time to live. Anything else is a miss, logged at most once per
  reason per minute, never an error.

The signing key is `REDIS_SIGNING_KEY`; unset, it is derived from the secrets
the relay has (`RELAY_SECRET`, `RELAY_ACCESS_KEYS`); with neither, a key anyone
could know, and a loud warning at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from relay.config import Settings

logger = logging.getLogger(__name__)

# Bump it when what is stored changes: entries of another version are never read.
FORMAT = 3
KEY_PREFIX = "threatscore-relay"
# An entry dated this far in the future was not written by a relay with a sane clock.
MAX_CLOCK_SKEW = 300.0
# A reason for a miss is logged at most once per this many seconds.
MISS_LOG_INTERVAL = 60.0
_MAC_HEX_LENGTH = 64
# Known to anyone who reads this file: only for a relay that has no secret at all.
PUBLIC_SIGNING_KEY = b"threatscore-relay: a key anyone could know"


@dataclass(frozen=True)
class Unsealed:
    """A verified entry: its data, and when it was written (or the instant its life counts from)."""

    data: Any
    at: float


def sealed_instant(unsealed: Unsealed | None) -> float:
    """The instant (epoch seconds) a sealed entry holds, or 0.0 for nothing it can prove."""
    value = None if unsealed is None else unsealed.data
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return 0.0
    return float(value)


class RedisTrust:
    """Namespaces the relay's Redis keys and seals and verifies their values. Thread-safe."""

    def __init__(
        self,
        signing_key: bytes,
        namespace: str,
        *,
        publicly_known_key: bool = False,
        clock: Callable[[], float] = time.time,
    ):
        self._signing_key = signing_key
        self.namespace = namespace
        self.publicly_known_key = publicly_known_key
        self._clock = clock
        self._miss_log = _OncePerInterval(MISS_LOG_INTERVAL)

    @classmethod
    def for_settings(cls, settings: Settings) -> RedisTrust:
        key, public = signing_key_for(settings)
        return cls(key, namespace_for(settings), publicly_known_key=public)

    def namespaced(self, name: str) -> str:
        """The Redis key of `name` for this deployment (e.g. `hold-back-until`)."""
        return self.namespace + name

    def seal(self, key: str | bytes, data: Any, ttl: float, at: float | None = None) -> bytes | None:
        """`data` (JSON-serialisable) sealed for the Redis key `key`, living `ttl` seconds from
        `at` (default: now). None when it cannot be encoded (nothing is stored then)."""
        entry = {"v": FORMAT, "at": self._clock() if at is None else at, "ttl": ttl, "data": data}
        try:
            payload = orjson.dumps(entry)
        except TypeError:
            try:  # a lone surrogate, which json escapes and orjson refuses
                payload = json.dumps(entry, separators=(",", ":"), allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                logger.warning("Not storing a Redis entry: not JSON-serialisable (%s)", type(exc).__name__)
                return None
        return self._mac(key, payload).encode() + b"." + payload

    def unseal(self, key: str | bytes, raw: bytes | None) -> Unsealed | None:
        """What `seal` stored under `key`, or None (a miss) when `raw` does not prove itself."""
        if raw is None:
            return None
        if not isinstance(raw, bytes) or raw[_MAC_HEX_LENGTH : _MAC_HEX_LENGTH + 1] != b".":
            return self._miss("not sealed by this version of the relay", logging.INFO)
        mac, payload = raw[:_MAC_HEX_LENGTH], raw[_MAC_HEX_LENGTH + 1 :]
        if not hmac.compare_digest(mac, self._mac(key, payload).encode()):
            return self._miss(
                "its MAC does not verify (forged, or written with another REDIS_SIGNING_KEY)", logging.WARNING
            )
        try:
            entry = json.loads(payload, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return self._miss("not JSON", logging.WARNING)
        if not isinstance(entry, dict) or entry.keys() != {"v", "at", "ttl", "data"}:
            return self._miss("not an entry of this shape", logging.WARNING)
        if entry["v"] != FORMAT:
            return self._miss("of another format version", logging.INFO)
        at, ttl = entry["at"], entry["ttl"]
        if not (_finite_number(at) and _finite_number(ttl) and ttl > 0):
            return self._miss("its times are not finite numbers", logging.WARNING)
        now = self._clock()
        if at > now + MAX_CLOCK_SKEW:
            return self._miss("dated in the future", logging.WARNING)
        if now >= at + ttl:
            return self._miss("older than its own time to live", logging.WARNING)
        return Unsealed(entry["data"], float(at))

    def _mac(self, key: str | bytes, payload: bytes) -> str:
        key_bytes = key if isinstance(key, bytes) else key.encode("utf-8", "surrogatepass")
        return hmac.new(self._signing_key, key_bytes + b"\n" + payload, hashlib.sha256).hexdigest()

    def _miss(self, reason: str, level: int) -> None:
        # The key names an observable (request data): it is not logged.
        if self._miss_log.due(reason):
            logger.log(level, "Ignoring a Redis entry: %s (a miss; at most one such line a minute)", reason)
        return None


def signing_key_for(settings: Settings) -> tuple[bytes, bool]:
    """(the key of the MAC, whether anyone could know it)."""
    if settings.redis_signing_key:
        return settings.redis_signing_key.encode(), False
    secrets = [settings.secret or "", *sorted(key for _tenant, key in settings.access_keys)]
    if any(secrets):
        material = "\n".join(secrets).encode()
        return hmac.new(b"threatscore-relay redis signing key", material, hashlib.sha256).digest(), False
    return PUBLIC_SIGNING_KEY, True


def namespace_for(settings: Settings) -> str:
    """`threatscore-relay:v3:<answer source>:`: a hash of the backend, its URL and its API key."""
    source = "\n".join(
        (
            settings.threatscore_api,
            settings.threatscore_api_url,
            settings.threatscore_api_key_header or "",
            settings.threatscore_api_key or "",
        )
    )
    digest = hashlib.sha256(b"threatscore-relay answer source\n" + source.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}:v{FORMAT}:{digest}:"


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _OncePerInterval:
    """Whether a line about `reason` is due: once per `interval` seconds per reason."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, reason: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self._interval:
                return False
            self._last[reason] = now
            return True
