"""Who is calling: checks the bearer token of each request.

Three modes, chosen by `Settings.relay_auth`:

- `jwks`: XDR's RS256 configuration token, verified with keys fetched from an
  allow-listed key server (never from whatever host the token names).
- `secret`: an HS256 token signed with the relay's shared secret.
- `none`: no check at all (local development).

Every failure is an `AuthorizationError` whose reason says what was wrong,
never what the token, the secret or a key contains.

Each accepted call belongs to a tenant. In `jwks` mode a token must carry an
`ACCESS_KEY` claim (the module's `custom_ACCESS_KEY` setting, which XDR puts in
every token it signs) equal to one of `RELAY_ACCESS_KEYS`; the key's tenant is
the caller's. With `RELAY_ANY_ORGANISATION=true` instead, every organisation's
token is accepted, all of them one tenant. `secret` and `none` modes have one
tenant: the operator signs or runs everything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from relay import bounded_fetch
from relay.bounded_fetch import FetchError, bounded_session, fetch
from relay.config import MAX_ENTITIES_LIMIT, ConfigError, Settings
from relay.errors import AuthorizationError
from relay.version import VERSION

logger = logging.getLogger(__name__)

JWKS_ALGORITHM = "RS256"
HMAC_ALGORITHM = "HS256"
ENTITIES_LIMIT_CLAIM = "CTR_ENTITIES_LIMIT"
JWKS_HOST_CLAIM = "jwks_host"
ACCESS_KEY_CLAIM = "ACCESS_KEY"
# The tenant of `secret` and `none` modes, and of RELAY_ANY_ORGANISATION=true.
DEFAULT_TENANT = "default"
ANY_ORGANISATION_TENANT = "any-organisation"

# A real key set is a few kilobytes; anything much larger is not one.
MAX_KEY_SET_BYTES = 256 * 1024

# Only echo a token's jwks_host in a message when it looks like host[:port].
_PRINTABLE_HOST = re.compile(r"^[a-z0-9.-]{1,253}(:[0-9]{1,5})?$")
_SMALL_NUMBER = re.compile(r"[0-9]{1,9}")  # int() of a huge digit string would raise


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request."""

    entities_limit: int | None
    claims: Mapping[str, Any]
    # Whose call it is: its cache, flights and "no data" are its own (`relay.tenants`).
    tenant: str = DEFAULT_TENANT


class Authenticator(ABC):
    """Checks the Authorization header of a request. One per process, thread-safe."""

    # Whether `authenticate` compares the token with the URL the request arrived at;
    # building that URL costs a little on every request, so the router asks first.
    needs_request_url = False

    def authenticate(self, authorization: str | None, request_url: str) -> Caller:
        """The caller, or `AuthorizationError` (and nothing else) when the call is not authorized."""
        try:
            claims = self._verified_claims(authorization, request_url)
            tenant = self._tenant(claims)
        except AuthorizationError as error:
            logger.info("Authorization failed: %s", error.reason)
            raise
        except Exception as error:
            # A bug must still answer "authorization error". Log where it happened
            # but not the exception text, which could quote the token or a key.
            where = traceback.extract_tb(error.__traceback__)[-1]
            logger.error(
                "Unexpected %s while checking a token (%s:%s)",
                type(error).__name__,
                where.filename,
                where.lineno,
            )
            raise AuthorizationError("internal error while checking the token") from None
        return Caller(
            entities_limit=entities_limit_from(claims), claims=MappingProxyType(dict(claims)), tenant=tenant
        )

    def _tenant(self, claims: Mapping[str, Any]) -> str:
        """The tenant of a verified token's caller; raises `AuthorizationError`."""
        return DEFAULT_TENANT

    @abstractmethod
    def _verified_claims(self, authorization: str | None, request_url: str) -> Mapping[str, Any]:
        """The token's claims once every check passed; raises `AuthorizationError`."""


def build_authenticator(settings: Settings, session: requests.Session | None = None) -> Authenticator:
    """The authenticator for `settings.relay_auth`; `session` is used to fetch key sets."""
    if settings.relay_auth == "jwks":
        return JwksAuthenticator(settings, session)
    if settings.access_keys:
        # Not an error: they may still derive the Redis signing key.
        logger.info(
            "RELAY_ACCESS_KEYS are checked in jwks mode only; RELAY_AUTH=%s has one tenant",
            settings.relay_auth,
        )
    if settings.relay_auth == "secret":
        return SecretAuthenticator(settings)
    if settings.relay_auth == "none":
        logger.warning(
            "RELAY_AUTH=none: calls are not authenticated; anyone who can reach the relay may use it"
        )
        return AllowAllAuthenticator()
    raise ConfigError(f"RELAY_AUTH: unknown mode {settings.relay_auth!r}")


class AccessKeys:
    """`RELAY_ACCESS_KEYS`: which tenant a token's ACCESS_KEY claim names, if any.

    Compared in constant time: the SHA-256 digests of the presented key and of
    every configured key, every one of them compared whatever matched, so the
    time taken says nothing about the keys (not even their lengths).
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self._digests = tuple((tenant, _digest(key)) for tenant, key in pairs)
        if not self._digests:
            raise ConfigError("RELAY_ACCESS_KEYS: no key given")

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(tenant for tenant, _ in self._digests))

    def tenant_of(self, claims: Mapping[str, Any]) -> str:
        """The tenant of the key in `claims`; `AuthorizationError` saying it is missing or wrong."""
        presented = claims.get(ACCESS_KEY_CLAIM)
        if presented is None or presented == "":
            raise AuthorizationError(
                "access key missing: set the module's Relay access key (custom_ACCESS_KEY) in XDR"
            )
        digest = _digest(presented if isinstance(presented, str) else json.dumps(presented))
        found = None
        for tenant, known in self._digests:
            if hmac.compare_digest(digest, known) and found is None:
                found = tenant
        if found is None:
            raise AuthorizationError(
                "wrong access key: the module's Relay access key is not one this relay accepts"
            )
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class AllowAllAuthenticator(Authenticator):
    """RELAY_AUTH=none: every call is accepted, with no claims."""

    def _verified_claims(self, authorization: str | None, request_url: str) -> Mapping[str, Any]:
        return {}


class SecretAuthenticator(Authenticator):
    """RELAY_AUTH=secret: an HS256 token signed with the relay's secret."""

    def __init__(self, settings: Settings):
        # Settings refuses secret mode without a long enough secret.
        self._secret = settings.secret
        self._leeway = settings.jwt_leeway
        self._audiences = tuple(normalised_url(aud) for aud in settings.audience)

    def _verified_claims(self, authorization: str | None, request_url: str) -> Mapping[str, Any]:
        token = bearer_token(authorization)
        require_algorithm(unverified_header(token), HMAC_ALGORITHM)
        claims = verified_claims(token, self._secret, HMAC_ALGORITHM, self._leeway)
        # An operator-minted token names an audience only when the relay asks for one.
        if self._audiences:
            check_audience(claims, self._audiences, below_allowed=False)
        return claims


class JwksAuthenticator(Authenticator):
    """RELAY_AUTH=jwks: XDR's RS256 token, keys from an allow-listed key server."""

    def __init__(
        self,
        settings: Settings,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._allowed_hosts = frozenset(host.strip().lower() for host in settings.jwks_hosts)
        self._audiences = tuple(normalised_url(aud) for aud in settings.audience)
        self._leeway = settings.jwt_leeway
        self._keys = JwksKeyCache(
            url_template=settings.jwks_url_template,
            session=session if session is not None else bounded_session(),
            timeout=settings.jwks_timeout,
            ttl=settings.jwks_cache_ttl,
            refetch_interval=settings.jwks_refetch_interval,
            clock=clock,
        )
        self.needs_request_url = not self._audiences
        if settings.access_keys:
            self._access_keys: AccessKeys | None = AccessKeys(settings.access_keys)
        elif settings.any_organisation:
            self._access_keys = None
            logger.warning(
                "RELAY_ANY_ORGANISATION=true: ANY XDR organisation whose module names this relay's URL"
                " may use it (and the Threatscore licence behind it); all of them share one tenant."
                " Set RELAY_ACCESS_KEYS to let in only your own organisations."
            )
        else:
            raise ConfigError(
                "RELAY_AUTH=jwks needs RELAY_ACCESS_KEYS (tenant=KEY,...: the access keys of the XDR"
                " organisations allowed in, each module's custom_ACCESS_KEY), or"
                " RELAY_ANY_ORGANISATION=true to accept any organisation's token"
            )
        self._audience_warning_lock = threading.Lock()
        self._audience_warning_logged = False

    def _verified_claims(self, authorization: str | None, request_url: str) -> Mapping[str, Any]:
        token = bearer_token(authorization)
        header = unverified_header(token)
        require_algorithm(header, JWKS_ALGORITHM)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthorizationError("token has no kid")
        # The unverified payload only picks the key server, and only among allowed ones.
        host = self._allowed_key_host(unverified_claims(token))
        key = self._keys.key_for(host, kid)
        claims = verified_claims(token, key, JWKS_ALGORITHM, self._leeway)
        if self._audiences:
            check_audience(claims, self._audiences, below_allowed=False)
        else:
            self._warn_audience_from_request_once(request_url)
            check_audience(claims, (normalised_url(request_url),), below_allowed=True)
        return claims

    def _tenant(self, claims: Mapping[str, Any]) -> str:
        if self._access_keys is None:
            return ANY_ORGANISATION_TENANT
        return self._access_keys.tenant_of(claims)

    def _allowed_key_host(self, claims: Mapping[str, Any]) -> str:
        host = claims.get(JWKS_HOST_CLAIM)
        if not isinstance(host, str) or not host.strip():
            raise AuthorizationError("jwks_host claim missing")
        host = host.strip().lower()
        if host not in self._allowed_hosts:
            shown = f" ({host})" if _PRINTABLE_HOST.match(host) else ""
            raise AuthorizationError(f"key host not allowed{shown}; the relay trusts RELAY_JWKS_HOSTS only")
        return host

    def _warn_audience_from_request_once(self, request_url: str) -> None:
        with self._audience_warning_lock:
            if self._audience_warning_logged:
                return
            self._audience_warning_logged = True
        logger.warning(
            "RELAY_AUDIENCE is not set: token audiences are compared with the request URL (%s), "
            "which behind a proxy may differ from the URL registered in XDR. "
            "Set RELAY_AUDIENCE to the registered URL.",
            normalised_url(request_url),
        )


@dataclass
class _HostKeys:
    """What is known about one key server. Guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: Mapping[str, jwt.PyJWK] | None = None
    fetched_at: float = float("-inf")  # last successful fetch
    attempted_at: float = float("-inf")  # start of the last fetch, successful or not
    completed: int = 0  # fetches finished; a change tells a waiting thread one just ended
    failure: str | None = None  # reason of the last attempt, when it failed


class JwksKeyCache:
    """RS256 keys per key server: fetched on demand, kept for `ttl` seconds.

    An unknown kid triggers at most one refetch per `refetch_interval` per host,
    so rotated keys are picked up but a flood of made-up kids is not a flood
    of fetches. One fetch at a time per host; requests that queued behind a
    fetch share its outcome instead of fetching again.
    """

    def __init__(
        self,
        url_template: str,
        session: requests.Session,
        timeout: float,
        ttl: float,
        refetch_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._url_template = url_template
        self._session = session
        self._timeout = timeout
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._clock = clock
        # A download ends within two timeouts (connect, then the whole answer), whatever the server does.
        self.download_seconds = 2 * timeout
        self._lock_wait = self.download_seconds + 1
        self._hosts: dict[str, _HostKeys] = {}
        self._hosts_lock = threading.Lock()

    def key_for(self, host: str, kid: str) -> jwt.PyJWK:
        """The key `kid` published by `host` (already allow-listed); raises `AuthorizationError`.

        A kid among the host's keys never waits for a download: while another
        thread refreshes expired keys, they keep serving. Only a token whose
        kid is not known (or a cold cache) waits, for at most one bounded
        download, so a token of nobody's with a made-up kid holds up only
        tokens like it.
        """
        state = self._state_for(host)
        keys = state.keys
        if keys is not None and kid in keys:
            if self._clock() - state.fetched_at < self._ttl:
                return keys[kid]
            if not state.lock.acquire(blocking=False):
                return keys[kid]  # being refreshed: the expired key serves meanwhile
            try:
                return self._key_under_lock(host, kid, state, just_fetched=False)
            finally:
                state.lock.release()
        completed_before = state.completed
        if not state.lock.acquire(timeout=self._lock_wait):
            raise AuthorizationError("key server unreachable (timed out)")
        try:
            # A fetch that ended while this thread waited is as good as its own.
            return self._key_under_lock(host, kid, state, just_fetched=state.completed != completed_before)
        finally:
            state.lock.release()

    def _key_under_lock(self, host: str, kid: str, state: _HostKeys, just_fetched: bool) -> jwt.PyJWK:
        keys = state.keys
        if keys is None or self._clock() - state.fetched_at >= self._ttl:
            if state.failure is not None and (just_fetched or not self._may_refetch(state)):
                # The key server just failed: not asked again before the refetch
                # interval, whatever the tokens say (a flood must not become fetches).
                if keys is None:
                    raise AuthorizationError(state.failure)
            else:
                try:
                    keys = self._refresh(host, state)
                    just_fetched = True
                except AuthorizationError:
                    if keys is None:
                        raise
                    # Expired keys keep serving while their server fails: an outage of
                    # the key server must not become an outage of the relay.
                    just_fetched = True
        key = keys.get(kid)
        if key is None and not just_fetched and self._may_refetch(state):
            # Keys rotate: an unknown kid may be a new key.
            key = self._refresh(host, state).get(kid)
        if key is None:
            raise AuthorizationError("unknown key id")
        return key

    def _state_for(self, host: str) -> _HostKeys:
        with self._hosts_lock:
            return self._hosts.setdefault(host, _HostKeys())

    def _may_refetch(self, state: _HostKeys) -> bool:
        return self._clock() - state.attempted_at >= self._refetch_interval

    def _refresh(self, host: str, state: _HostKeys) -> Mapping[str, jwt.PyJWK]:
        """Fetches the host's keys; called with `state.lock` held."""
        state.attempted_at = self._clock()
        url = self._url_template.replace("{host}", host)
        try:
            keys = rs256_keys(self._download(url))
        except AuthorizationError as error:
            state.failure = error.reason
            logger.warning("Key server %s: %s", url, error.reason)
            raise
        finally:
            state.completed += 1
        # Published whole, once valid: a reader without the lock sees the old set or the new one.
        state.fetched_at = self._clock()
        state.keys = keys
        state.failure = None
        logger.info("Fetched %d RS256 key(s) from %s", len(keys), url)
        return keys

    def _download(self, url: str) -> bytes:
        """The key set at `url`, whole within `download_seconds` of the start, or `AuthorizationError`.

        Through `relay.bounded_fetch`: no redirect is followed (a key set from
        another origin must never be trusted), no more than `MAX_KEY_SET_BYTES`
        is read, and a trickling key server is cut off in wall-clock time.
        """
        try:
            fetched = fetch(
                self._session,
                "GET",
                url,
                headers={"Accept": "application/json", "User-Agent": f"threatscore-xdr-relay/{VERSION}"},
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
                give_up_at=time.monotonic() + self.download_seconds,
                max_body_bytes=MAX_KEY_SET_BYTES,
            )
        except FetchError as failure:
            logger.debug("Key server %s: %s", url, failure.kind)
            reason = KEY_SERVER_PROBLEMS.get(failure.kind, "key server unreachable")
            raise AuthorizationError(reason) from None
        if fetched.is_redirect:
            raise AuthorizationError(
                f"key server answered HTTP {fetched.status} (a redirect: the relay does not follow them)"
            )
        if fetched.status != 200:
            raise AuthorizationError(f"key server answered HTTP {fetched.status}")
        return fetched.body


KEY_SERVER_PROBLEMS = {
    bounded_fetch.READ_TIMEOUT: "key server unreachable (timed out)",
    bounded_fetch.OUT_OF_TIME: "key server unreachable (timed out)",
    bounded_fetch.CONNECT_TIMEOUT: "key server unreachable (timed out)",
    bounded_fetch.TOO_LARGE: "key server answered an invalid key set (too large)",
    bounded_fetch.TLS_CERTIFICATE: "key server unreachable (its TLS certificate could not be verified)",
    bounded_fetch.TLS_HANDSHAKE: "key server unreachable (no TLS handshake: does it speak https?)",
    bounded_fetch.REFUSED: "key server unreachable (connection refused)",
    bounded_fetch.UNRESOLVED: "key server unreachable (host name not resolved)",
}


def rs256_keys(body: bytes) -> dict[str, jwt.PyJWK]:
    """The RS256 public keys of a JWKS document, by kid."""
    invalid = AuthorizationError("key server answered an invalid key set")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise invalid from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise invalid
    try:
        key_set = jwt.PyJWKSet.from_dict(document)
    except jwt.PyJWTError:
        raise invalid from None
    keys: dict[str, jwt.PyJWK] = {}
    for key in key_set:
        usable = (
            isinstance(key.key_id, str)
            and key.algorithm_name == JWKS_ALGORITHM
            and key.public_key_use in (None, "sig")
            and isinstance(key.key, RSAPublicKey)  # a published private key is no verification key
        )
        if usable:
            keys.setdefault(key.key_id, key)
    if not keys:
        raise invalid
    return keys


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value."""
    if authorization is None or not authorization.strip():
        raise AuthorizationError("missing Authorization header")
    parts = authorization.split()
    if parts[0].lower() != "bearer":
        raise AuthorizationError("wrong scheme (expected Bearer)")
    if len(parts) != 2:
        raise AuthorizationError("malformed token")
    return parts[1]


def unverified_header(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthorizationError("malformed token") from None


def unverified_claims(token: str) -> dict[str, Any]:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthorizationError("malformed token") from None


def require_algorithm(header: Mapping[str, Any], algorithm: str) -> None:
    # Checked before any key is looked up: `none`, HS* with a public key as secret, ...
    if header.get("alg") != algorithm:
        raise AuthorizationError(f"token algorithm not allowed (expected {algorithm})")


def verified_claims(token: str, key: jwt.PyJWK | str, algorithm: str, leeway: float) -> dict[str, Any]:
    """The claims once signature, exp, nbf and iat are checked. The audience is checked by the caller."""
    try:
        return jwt.decode(
            token,
            key=key,
            algorithms=[algorithm],
            leeway=leeway,
            # A token without `exp` would be good forever: refused, whoever signed it.
            options={"verify_aud": False, "enforce_minimum_key_length": True, "require": ["exp"]},
        )
    except jwt.MissingRequiredClaimError:
        raise AuthorizationError("token has no exp (an expiry is required)") from None
    except jwt.ExpiredSignatureError:
        raise AuthorizationError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthorizationError("token not yet valid") from None
    except jwt.InvalidSignatureError:
        raise AuthorizationError("bad signature") from None
    except jwt.InvalidAlgorithmError:
        raise AuthorizationError(f"token algorithm not allowed (expected {algorithm})") from None
    except (jwt.DecodeError, jwt.InvalidIssuedAtError):
        raise AuthorizationError("malformed token") from None
    except jwt.InvalidKeyError:
        raise AuthorizationError("signing key too weak") from None
    except jwt.PyJWTError:
        raise AuthorizationError("invalid token claims") from None


def check_audience(claims: Mapping[str, Any], expected: Iterable[str], *, below_allowed: bool) -> None:
    """Refuses a token none of whose `aud` is one of the `expected` URLs.

    With `below_allowed`, an expected URL may also lie below an audience
    (`<aud>/observe/observables`): the token names the module's base URL and
    the request may have arrived at one of its endpoints.
    """
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
        raise AuthorizationError("wrong audience (token has no aud)")
    expected = tuple(expected)
    for audience in (normalised_url(a) for a in audiences):
        for url in expected:
            if audience == url or (below_allowed and _is_below(url, audience)):
                return
    logger.info("Token audience %s is none of %s", [a[:200] for a in audiences[:5]], list(expected))
    raise AuthorizationError("wrong audience")


def _is_below(url: str, base: str) -> bool:
    """Same scheme and host, and the path of `url` is inside the path of `base`."""
    url_parts, base_parts = urlsplit(url), urlsplit(base)
    if not base_parts.scheme or not base_parts.netloc:
        return False
    same_origin = (url_parts.scheme.lower(), url_parts.netloc.lower()) == (
        base_parts.scheme.lower(),
        base_parts.netloc.lower(),
    )
    return same_origin and url_parts.path.startswith(base_parts.path.rstrip("/") + "/")


def normalised_url(url: str) -> str:
    """A trailing slash does not make a different URL."""
    return url.strip().rstrip("/")


def entities_limit_from(claims: Mapping[str, Any]) -> int | None:
    """The positive CTR_ENTITIES_LIMIT claim (int or digit string), at most `MAX_ENTITIES_LIMIT`;
    else None."""
    value = claims.get(ENTITIES_LIMIT_CLAIM)
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _SMALL_NUMBER.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and value > 0:
        return min(value, MAX_ENTITIES_LIMIT)
    return None
