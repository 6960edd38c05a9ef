"""Settings: read once from the environment into one typed, validated object.

This is the only module that looks at environment variables. Everything else
receives a `Settings` instance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

AUTH_MODES = ("jwks", "secret", "none")
DEFAULT_JWKS_HOSTS = (
    "visibility.amp.cisco.com",
    "visibility.eu.amp.cisco.com",
    "visibility.apjc.amp.cisco.com",
)
MIN_SECRET_LENGTH = 32


class ConfigError(ValueError):
    """A setting has a value the relay cannot start with."""


@dataclass(frozen=True)
class Settings:
    # Threatscore
    threatscore_api_url: str = "https://threatscore.cyberprotect.cloud"
    threatscore_ui_url: str = "https://threatscore.cyberprotect.cloud"
    threatscore_connect_timeout: float = 3.0
    threatscore_read_timeout: float = 5.0
    threatscore_max_concurrency: int = 10
    threatscore_retries: int = 2
    threatscore_max_body_bytes: int = 5 * 1024 * 1024
    health_observable: str = "127.0.0.100"

    # CTIM
    ctr_entities_limit: int = 100
    ctim_valid_days: int = 7

    # Requests
    relay_deadline: float = 20.0
    max_body_bytes: int = 1024 * 1024
    max_observables: int = 1000
    max_value_length: int = 1024

    # Authentication
    relay_auth: str = "jwks"
    jwks_hosts: tuple[str, ...] = DEFAULT_JWKS_HOSTS
    jwks_url_template: str = "https://{host}/.well-known/jwks"
    jwks_timeout: float = 5.0
    jwks_cache_ttl: float = 3600.0
    jwks_refetch_interval: float = 30.0
    jwt_leeway: float = 60.0
    audience: tuple[str, ...] = ()
    # repr=False: the secret never appears in a log line or a traceback.
    secret: str | None = field(default=None, repr=False)

    # Cache
    cache_ttl: float = 3600.0
    cache_negative_ttl: float = 600.0
    cache_max_entries: int = 10000
    redis_url: str | None = field(default=None, repr=False)

    # Logging
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build and validate settings from `environ` (default: the process environment)."""
        env = _Env(os.environ if environ is None else environ)
        connect, read = env.get("THREATSCORE_TIMEOUT", _timeouts, (3.0, 5.0))
        settings = cls(
            threatscore_api_url=env.get("THREATSCORE_API_URL", _http_url, cls.threatscore_api_url),
            threatscore_ui_url=env.get("THREATSCORE_UI_URL", _http_url, cls.threatscore_ui_url),
            threatscore_connect_timeout=connect,
            threatscore_read_timeout=read,
            threatscore_max_concurrency=env.get(
                "THREATSCORE_MAX_CONCURRENCY", _positive_int, cls.threatscore_max_concurrency
            ),
            threatscore_retries=env.get("THREATSCORE_RETRIES", _non_negative_int, cls.threatscore_retries),
            threatscore_max_body_bytes=env.get(
                "THREATSCORE_MAX_BODY_BYTES", _positive_int, cls.threatscore_max_body_bytes
            ),
            health_observable=env.get("HEALTH_OBSERVABLE", _non_empty, cls.health_observable),
            ctr_entities_limit=env.get("CTR_ENTITIES_LIMIT", _positive_int, cls.ctr_entities_limit),
            ctim_valid_days=env.get("CTIM_VALID_DAYS", _positive_int, cls.ctim_valid_days),
            relay_deadline=env.get("RELAY_DEADLINE", _positive_float, cls.relay_deadline),
            max_body_bytes=env.get("RELAY_MAX_BODY_BYTES", _positive_int, cls.max_body_bytes),
            max_observables=env.get("RELAY_MAX_OBSERVABLES", _positive_int, cls.max_observables),
            max_value_length=env.get("RELAY_MAX_VALUE_LENGTH", _positive_int, cls.max_value_length),
            relay_auth=env.get("RELAY_AUTH", _auth_mode, cls.relay_auth),
            jwks_hosts=env.get("RELAY_JWKS_HOSTS", _host_list, cls.jwks_hosts),
            jwks_url_template=env.get("RELAY_JWKS_URL_TEMPLATE", _url_template, cls.jwks_url_template),
            jwks_timeout=env.get("RELAY_JWKS_TIMEOUT", _positive_float, cls.jwks_timeout),
            jwks_cache_ttl=env.get("RELAY_JWKS_CACHE_TTL", _positive_float, cls.jwks_cache_ttl),
            jwks_refetch_interval=env.get(
                "RELAY_JWKS_REFETCH_INTERVAL", _non_negative_float, cls.jwks_refetch_interval
            ),
            jwt_leeway=env.get("RELAY_JWT_LEEWAY", _non_negative_float, cls.jwt_leeway),
            audience=env.get("RELAY_AUDIENCE", _audience_list, ()),
            secret=env.get("RELAY_SECRET", _non_empty, None),
            cache_ttl=env.get("CACHE_TTL", _non_negative_float, cls.cache_ttl),
            cache_negative_ttl=env.get("CACHE_NEGATIVE_TTL", _non_negative_float, cls.cache_negative_ttl),
            cache_max_entries=env.get("CACHE_MAX_ENTRIES", _positive_int, cls.cache_max_entries),
            redis_url=env.get("REDIS_URL", _non_empty, None),
            log_level=env.get("LOG_LEVEL", _log_level, cls.log_level),
        )
        if settings.relay_auth == "secret":
            if not settings.secret:
                raise ConfigError("RELAY_AUTH=secret needs RELAY_SECRET")
            if len(settings.secret) < MIN_SECRET_LENGTH:
                raise ConfigError(f"RELAY_SECRET must be at least {MIN_SECRET_LENGTH} characters long")
        return settings


class _Env:
    """Reads one variable at a time and names it in any error."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        except ValueError:
            raise ConfigError(f"{name}: invalid value") from None


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ConfigError(f"must be a positive integer, got {raw!r}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ConfigError(f"must be zero or more, got {raw!r}")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"must be a positive number, got {raw!r}")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"must be zero or more, got {raw!r}")
    return value


def _timeouts(raw: str) -> tuple[float, float]:
    """`5` (connect and read) or `3,10` (connect, read)."""
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) == 1:
        value = _positive_float(parts[0])
        return value, value
    if len(parts) == 2:
        return _positive_float(parts[0]), _positive_float(parts[1])
    raise ConfigError(f"must be SECONDS or CONNECT,READ, got {raw!r}")


def _non_empty(raw: str) -> str:
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _url_template(raw: str) -> str:
    if "{host}" not in raw:
        raise ConfigError("must contain {host}")
    _http_url(raw.replace("{host}", "example.com"))
    return raw


def _auth_mode(raw: str) -> str:
    mode = raw.lower()
    if mode not in AUTH_MODES:
        raise ConfigError(f"must be one of {', '.join(AUTH_MODES)}, got {raw!r}")
    return mode


def _host_list(raw: str) -> tuple[str, ...]:
    hosts = tuple(host.strip().lower() for host in raw.split(",") if host.strip())
    if not hosts:
        raise ConfigError("needs at least one host")
    for host in hosts:
        if "/" in host or "@" in host or " " in host:
            raise ConfigError(f"{host!r} is not a host[:port]")
    return hosts


def _audience_list(raw: str) -> tuple[str, ...]:
    # A trailing slash does not make a different audience.
    return tuple(aud.strip().rstrip("/") for aud in raw.split(",") if aud.strip())


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level
