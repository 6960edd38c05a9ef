"""Settings: read once from the environment into one typed, validated object.

This is the only module that looks at environment variables. Everything else
receives a `Settings` instance.

Each setting is declared once, on its `Settings` field, with `setting(...)`:
its environment variable, the parser that reads it, its default and whether it
is a secret. `Settings.from_env` and `declared_settings()` (the command line's
`settings`, the README's table test) read those declarations; nothing else
lists the settings.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

AUTH_MODES = ("jwks", "secret", "none")
# Threatscore's APIs: `v3` (Cyberprotect's current one) and `score` (2020-2022).
THREATSCORE_APIS = ("v3", "score")
# Where each API lives and where its web console links go, unless THREATSCORE_API_URL /
# THREATSCORE_UI_URL say otherwise.
BACKEND_DEFAULT_URLS = {
    "v3": ("https://api.threatscore.cyberprotect.cloud", "https://console.threatscore.cyberprotect.cloud"),
    "score": ("https://threatscore.cyberprotect.cloud", "https://threatscore.cyberprotect.cloud"),
}
DEFAULT_JWKS_HOSTS = (
    "visibility.amp.cisco.com",
    "visibility.eu.amp.cisco.com",
    "visibility.apjc.amp.cisco.com",
)
MIN_SECRET_LENGTH = 32
# The most entities of one type an answer may hold, whatever a token's CTR_ENTITIES_LIMIT
# claim or the setting says (Cisco's own relays cap it so too).
MAX_ENTITIES_LIMIT = 1000
DAY = 24 * 3600.0


class ConfigError(ValueError):
    """A setting has a value the relay cannot start with."""


# --- Parsers: text from the environment -> a typed value, or ConfigError ---------


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ConfigError(f"must be a positive integer, got {raw!r}")
    return value


def non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ConfigError(f"must be zero or more, got {raw!r}")
    return value


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"must be a positive number, got {raw!r}")
    return value


def non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"must be zero or more, got {raw!r}")
    return value


# Every number a setting holds has a sane range: no configured value may make every request
# fail (a validity of 10^9 days overflows every date; a deadline of a microsecond times out
# every lookup) or let one request take the process (a body of gigabytes, a million threads).


def int_from(low: int, high: int) -> Callable[[str], int]:
    """The parser of a whole number from `low` to `high`."""

    def parse(raw: str) -> int:
        value = positive_int(raw) if low >= 1 else non_negative_int(raw)
        if not low <= value <= high:
            raise ConfigError(f"must be from {low} to {high}, got {raw!r}")
        return value

    return parse


def seconds_from(low: float, high: float) -> Callable[[str], float]:
    """The parser of a number of seconds from `low` to `high` (0 allowed when `low` is 0)."""

    def parse(raw: str) -> float:
        value = positive_float(raw) if low > 0 else non_negative_float(raw)
        if not low <= value <= high:
            raise ConfigError(f"must be from {low:g} to {high:g} seconds, got {raw!r}")
        return value

    return parse


MIN_TIMEOUT, MAX_TIMEOUT = 0.1, 60.0
_timeout_seconds = seconds_from(MIN_TIMEOUT, MAX_TIMEOUT)


def timeouts(raw: str) -> tuple[float, float]:
    """`5` (connect and read) or `3,10` (connect, read)."""
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) == 1:
        value = _timeout_seconds(parts[0])
        return value, value
    if len(parts) == 2:
        return _timeout_seconds(parts[0]), _timeout_seconds(parts[1])
    raise ConfigError(f"must be SECONDS or CONNECT,READ, got {raw!r}")


def text(raw: str) -> str:
    return raw


def boolean(raw: str) -> bool:
    word = raw.lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"must be true or false, got {raw[:20]!r}")


def http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def is_loopback_url(url: str) -> bool:
    """Whether `url` names this machine (127.0.0.0/8, ::1, localhost): tests, a local simulator."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def upstream_url(raw: str) -> str:
    """An upstream's URL: https, for plain http is read (and changed) by anyone on the way;
    plain http only to a loopback address."""
    url = http_url(raw)
    if urlsplit(url).scheme != "https" and not is_loopback_url(url):
        raise ConfigError(f"must be an https:// URL (plain http only to a loopback address), got {raw!r}")
    return url


def url_template(raw: str) -> str:
    if "{host}" not in raw:
        raise ConfigError("must contain {host}")
    http_url(raw.replace("{host}", "example.com"))
    return raw


_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]{1,100}")


def function_name(raw: str) -> str:
    """A function's name as the platform gives it, which may lead the request path."""
    if not _PATH_SEGMENT.fullmatch(raw) or raw in (".", ".."):
        raise ConfigError(f"must be one path segment (letters, digits, - _ . ~), got {raw[:100]!r}")
    return raw


def auth_mode(raw: str) -> str:
    mode = raw.lower()
    if mode not in AUTH_MODES:
        raise ConfigError(f"must be one of {', '.join(AUTH_MODES)}, got {raw!r}")
    return mode


def threatscore_api(raw: str) -> str:
    api = raw.lower()
    if api not in THREATSCORE_APIS:
        raise ConfigError(f"must be one of {', '.join(THREATSCORE_APIS)}, got {raw!r}")
    return api


def header_name(raw: str) -> str:
    # An HTTP token (RFC 9110): what a header's name may be made of.
    if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", raw):
        raise ConfigError(f"must be an HTTP header name, got {raw!r}")
    return raw


def host_list(raw: str) -> tuple[str, ...]:
    hosts = tuple(host.strip().lower() for host in raw.split(",") if host.strip())
    if not hosts:
        raise ConfigError("needs at least one host")
    for host in hosts:
        if "/" in host or "@" in host or " " in host:
            raise ConfigError(f"{host!r} is not a host[:port]")
    return hosts


def audience_list(raw: str) -> tuple[str, ...]:
    # A trailing slash does not make a different audience.
    return tuple(aud.strip().rstrip("/") for aud in raw.split(",") if aud.strip())


def secret_text(raw: str) -> str:
    if len(raw) < MIN_SECRET_LENGTH:
        raise ConfigError(f"must be at least {MIN_SECRET_LENGTH} characters long")
    return raw


TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
MIN_ACCESS_KEY_LENGTH = 32
MAX_KEYS_PER_TENANT = 2  # the key in use and its successor, while the module's setting is changed


def access_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """`soc=KEY1,mssp-client-2=KEY2`: (tenant, key) pairs. Messages name tenants and
    positions, never a key."""
    pairs: list[tuple[str, str]] = []
    for position, item in enumerate(raw.split(","), start=1):
        item = item.strip()
        tenant, equals, key = item.partition("=")
        tenant, key = tenant.strip(), key.strip()
        if not equals or "=" in key:
            raise ConfigError(f"entry {position} is not TENANT=KEY (a key has no ',' or '=')")
        if not TENANT_NAME.fullmatch(tenant):
            raise ConfigError(
                f"entry {position}: a tenant name is 1 to 63 lower-case letters, digits and hyphens"
            )
        if len(key) < MIN_ACCESS_KEY_LENGTH:
            raise ConfigError(
                f"the key of tenant {tenant} (entry {position}) is shorter than"
                f" {MIN_ACCESS_KEY_LENGTH} characters"
            )
        if any(key == known for _, known in pairs):
            raise ConfigError(f"entry {position} repeats a key already given (each key names one tenant)")
        pairs.append((tenant, key))
    for tenant in {tenant for tenant, _ in pairs}:
        if sum(1 for name, _ in pairs if name == tenant) > MAX_KEYS_PER_TENANT:
            raise ConfigError(f"tenant {tenant} has more than {MAX_KEYS_PER_TENANT} keys (two: for rotation)")
    return tuple(pairs)


def project_id(raw: str) -> str:
    """A Google Cloud project id (optionally domain-scoped, `example.com:my-project`)."""
    if not re.fullmatch(r"(?:[a-z0-9.-]{1,63}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]", raw):
        raise ConfigError(f"is not a project id, got {raw!r}")
    return raw


def log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def parse_setting(name: str, parse: Callable[[str], Any], raw: str) -> Any:
    """`raw` read by `parse`, any error naming the setting (and never repeating a secret's value)."""
    try:
        return parse(raw.strip())
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    except ValueError:
        raise ConfigError(f"{name}: invalid value") from None


# --- The declarations -------------------------------------------------------------


def setting(env: str, parse: Callable[[str], Any], default: Any, *, secret: bool = False) -> Any:
    """A `Settings` field read from the variable `env` by `parse`; a secret is kept out of repr."""
    return dataclasses.field(
        default=default, repr=not secret, metadata={"env": env, "parse": parse, "secret": secret}
    )


@dataclass(frozen=True)
class DeclaredSetting:
    """One setting as declared: for listing them (command line, README table)."""

    env: str
    field: str
    default: Any
    secret: bool


def setting_names() -> frozenset[str]:
    """The environment variables the relay reads (a test, the demo or a benchmark sets its own)."""
    return frozenset(declared.env for declared in declared_settings())


def declared_settings() -> list[DeclaredSetting]:
    return [
        DeclaredSetting(f.metadata["env"], f.name, f.default, f.metadata["secret"])
        for f in dataclasses.fields(Settings)
    ]


@dataclass(frozen=True)
class Settings:
    # Threatscore
    threatscore_api: str = setting("THREATSCORE_API", threatscore_api, "v3")
    # None: the chosen API's own address (BACKEND_DEFAULT_URLS), filled in by __post_init__.
    threatscore_api_url: str = setting("THREATSCORE_API_URL", upstream_url, None)
    threatscore_ui_url: str = setting("THREATSCORE_UI_URL", http_url, None)
    # For licensed accounts given a key: sent as `Authorization: Bearer <key>`, or as the
    # value of the header THREATSCORE_API_KEY_HEADER names.
    threatscore_api_key: str | None = setting("THREATSCORE_API_KEY", text, None, secret=True)
    threatscore_api_key_header: str | None = setting("THREATSCORE_API_KEY_HEADER", header_name, None)
    # (connect, read) seconds: `THREATSCORE_TIMEOUT=5` or `3,10`.
    threatscore_timeout: tuple[float, float] = setting("THREATSCORE_TIMEOUT", timeouts, (3.0, 5.0))
    threatscore_max_concurrency: int = setting("THREATSCORE_MAX_CONCURRENCY", int_from(1, 100), 10)
    threatscore_retries: int = setting("THREATSCORE_RETRIES", int_from(0, 100), 2)
    threatscore_max_body_bytes: int = setting(
        "THREATSCORE_MAX_BODY_BYTES", int_from(1024, 64 * 1024 * 1024), 5 * 1024 * 1024
    )
    # Lookups per second sent to Threatscore by all instances together (shared through
    # Redis when REDIS_URL is set, else per instance); 0: no limit.
    threatscore_rate_limit: int = setting("THREATSCORE_RATE_LIMIT", int_from(0, 10_000), 0)
    # The longest a 429's Retry-After holds the relay back (a longer one is cut to this, and logged).
    threatscore_max_retry_after: float = setting(
        "THREATSCORE_MAX_RETRY_AFTER", seconds_from(0.0, 3600.0), 60.0
    )
    # The circuit breaker: this many failed lookups in a row (after their retries), on any
    # instance, open it; 0 turns it off. While open, lookups that need Threatscore fail at once;
    # after BREAKER_COOL_DOWN seconds one lookup (across all instances) tries Threatscore again.
    breaker_failures: int = setting("BREAKER_FAILURES", int_from(0, 1000), 5)
    breaker_cool_down: float = setting("BREAKER_COOL_DOWN", seconds_from(1.0, 3600.0), 30.0)
    health_observable: str = setting("HEALTH_OBSERVABLE", text, "127.0.0.100")
    # A /health probe's result is reused this long (concurrent checks share one probe); 0: never.
    health_cache_seconds: float = setting("HEALTH_CACHE_SECONDS", seconds_from(0.0, 300.0), 5.0)

    # CTIM
    ctr_entities_limit: int = setting("CTR_ENTITIES_LIMIT", int_from(1, MAX_ENTITIES_LIMIT), 100)
    ctim_valid_days: int = setting("CTIM_VALID_DAYS", int_from(1, 3650), 7)

    # Requests
    relay_deadline: float = setting("RELAY_DEADLINE", seconds_from(1.0, 600.0), 20.0)
    max_body_bytes: int = setting("RELAY_MAX_BODY_BYTES", int_from(64, 32 * 1024 * 1024), 1024 * 1024)
    max_observables: int = setting("RELAY_MAX_OBSERVABLES", int_from(1, 10_000), 1000)
    max_value_length: int = setting("RELAY_MAX_VALUE_LENGTH", int_from(8, 8192), 1024)
    # Send Threatscore what can only be internal (relay.internal) too; by default it is never sent.
    lookup_internal: bool = setting("RELAY_LOOKUP_INTERNAL", boolean, False)

    # Authentication
    relay_auth: str = setting("RELAY_AUTH", auth_mode, "jwks")
    jwks_hosts: tuple[str, ...] = setting("RELAY_JWKS_HOSTS", host_list, DEFAULT_JWKS_HOSTS)
    jwks_url_template: str = setting(
        "RELAY_JWKS_URL_TEMPLATE", url_template, "https://{host}/.well-known/jwks"
    )
    jwks_timeout: float = setting("RELAY_JWKS_TIMEOUT", seconds_from(MIN_TIMEOUT, MAX_TIMEOUT), 5.0)
    jwks_cache_ttl: float = setting("RELAY_JWKS_CACHE_TTL", seconds_from(1.0, 7 * DAY), 3600.0)
    jwks_refetch_interval: float = setting("RELAY_JWKS_REFETCH_INTERVAL", seconds_from(0.0, 3600.0), 30.0)
    jwt_leeway: float = setting("RELAY_JWT_LEEWAY", seconds_from(0.0, 3600.0), 60.0)
    audience: tuple[str, ...] = setting("RELAY_AUDIENCE", audience_list, ())
    secret: str | None = setting("RELAY_SECRET", secret_text, None, secret=True)
    # The XDR organisations let in (jwks mode): `tenant=KEY,...`; a token's ACCESS_KEY claim
    # (the module's custom_ACCESS_KEY) must be one of the keys.
    access_keys: tuple[tuple[str, str], ...] = setting("RELAY_ACCESS_KEYS", access_keys, (), secret=True)
    # jwks mode without access keys: any organisation's module may use the relay (one tenant).
    any_organisation: bool = setting("RELAY_ANY_ORGANISATION", boolean, False)

    # Cache
    cache_ttl: float = setting("CACHE_TTL", seconds_from(0.0, 30 * DAY), 3600.0)
    cache_negative_ttl: float = setting("CACHE_NEGATIVE_TTL", seconds_from(0.0, 30 * DAY), 600.0)
    cache_max_entries: int = setting("CACHE_MAX_ENTRIES", int_from(1, 10_000_000), 10000)
    # The memory cache (the tier in front of Redis with REDIS_URL) holds at most this many
    # bytes of answers, counted as their JSON size.
    cache_max_bytes: int = setting("CACHE_MAX_BYTES", int_from(64 * 1024, 16 * 1024**3), 32 * 1024 * 1024)
    # With REDIS_URL: how long the memory tier keeps an answer (Redis keeps it for CACHE_TTL).
    cache_memory_ttl: float = setting("CACHE_MEMORY_TTL", seconds_from(0.0, 30 * DAY), 60.0)
    # By default each tenant's answers, flights and "no data" are its own; true: one cache for all.
    cache_shared_between_tenants: bool = setting("CACHE_SHARED_BETWEEN_TENANTS", boolean, False)
    # A secret: the URL may carry Redis's password.
    redis_url: str | None = setting("REDIS_URL", text, None, secret=True)
    # The key of the MAC on every Redis entry; unset: derived from RELAY_SECRET / RELAY_ACCESS_KEYS.
    redis_signing_key: str | None = setting("REDIS_SIGNING_KEY", secret_text, None, secret=True)

    # Logging
    log_level: str = setting("LOG_LEVEL", log_level, "INFO")
    # Names the trace of each log line (projects/ID/traces/...); `make deploy` sets it.
    google_cloud_project: str | None = setting("GOOGLE_CLOUD_PROJECT", project_id, None)

    # Set by Google Cloud, not by the operator: the function's names, one of which may lead
    # the request path (`/relay/observe/observables`); no other first segment is accepted.
    # K_SERVICE also names the service in Error Reporting.
    function_target: str = setting("FUNCTION_TARGET", function_name, "relay")
    service_name: str = setting("K_SERVICE", function_name, "relay")

    def __post_init__(self) -> None:
        # Defaults that depend on the backend. Note that `dataclasses.replace(settings,
        # threatscore_api=...)` keeps the URLs already filled in: give them too.
        default_api_url, default_ui_url = BACKEND_DEFAULT_URLS[self.threatscore_api]
        if self.threatscore_api_url is None:
            object.__setattr__(self, "threatscore_api_url", default_api_url)
        if self.threatscore_ui_url is None:
            object.__setattr__(self, "threatscore_ui_url", default_ui_url)
        # Rules between settings; each setting's own rules are its parser's.
        # (THREATSCORE_API_KEY never goes over plain http to another machine: THREATSCORE_API_URL's
        # parser refuses such a URL, key or no key.)
        for host in self.jwks_hosts if self.relay_auth == "jwks" else ():
            key_url = self.jwks_url_template.replace("{host}", host)
            if urlsplit(key_url).scheme != "https" and not is_loopback_url(key_url):
                raise ConfigError(
                    "RELAY_JWKS_URL_TEMPLATE must be an https:// URL"
                    f" (plain http only to a loopback address, not {host})"
                )
        if self.access_keys and self.any_organisation:
            raise ConfigError(
                "RELAY_ACCESS_KEYS and RELAY_ANY_ORGANISATION=true contradict each other: set one of them"
            )
        if self.relay_auth == "secret":
            if not self.secret:
                raise ConfigError("RELAY_AUTH=secret needs RELAY_SECRET")
            if len(self.secret) < MIN_SECRET_LENGTH:
                raise ConfigError(f"RELAY_SECRET must be at least {MIN_SECRET_LENGTH} characters long")

    @property
    def function_names(self) -> tuple[str, ...]:
        """The names that may lead a request's path."""
        names = (self.function_target, self.service_name)
        return tuple(dict.fromkeys(name for name in names if name))

    @property
    def threatscore_connect_timeout(self) -> float:
        return self.threatscore_timeout[0]

    @property
    def threatscore_read_timeout(self) -> float:
        return self.threatscore_timeout[1]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build and validate settings from `environ` (default: the process environment).

        A variable that is unset or blank keeps the default.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for declared in dataclasses.fields(cls):
            name = declared.metadata["env"]
            raw = environ.get(name)
            if raw is not None and raw.strip():
                values[declared.name] = parse_setting(name, declared.metadata["parse"], raw)
        return cls(**values)
