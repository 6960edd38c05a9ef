"""The shared transport of every Threatscore API: one HTTP exchange within a deadline.

`Transport.exchange` sends one request and returns the first answer that is
not worth retrying (status and body, the body capped in size), or raises the
`RelayError` that says what failed. It retries what is worth retrying (a
failed connection, 502/503/504, 429) within the caller's deadline. The API
modules (`score`, ...) build the request and read the answer.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import requests
import urllib3
from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.util.retry import Retry

from relay import bounded_fetch
from relay.bounded_fetch import FetchError, fetch
from relay.config import Settings
from relay.errors import (
    DeadlineExceededError,
    RelayError,
    TooManyRequestsError,
    UpstreamConnectionError,
    UpstreamFormatError,
    UpstreamNotFoundError,
    UpstreamRedirectError,
    UpstreamRefusedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamTLSError,
    UpstreamUnavailableError,
)
from relay.text import cleaned
from relay.version import VERSION

USER_AGENT = f"threatscore-xdr-relay/{VERSION} (+Cisco XDR relay module)"

# Answers worth asking again: overloaded or restarting (502/503/504), rate limited (429).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Waits between attempts: 0.2 s, 0.4 s, 0.8 s... each plus up to RETRY_JITTER at random, so
# that lookups which failed together do not all come back at the same instant.
RETRY_BACKOFF_FACTOR = 0.2
RETRY_JITTER = 0.1
RETRY_BACKOFF_MAX = 5.0
# The longest Retry-After read as such (a year): anything longer is absurd anyway.
RETRY_AFTER_READ_MAX = 365 * 24 * 3600
# An attempt that would have less time than this before the deadline is not worth starting.
MIN_ATTEMPT_SECONDS = 0.05


class Pacing(Protocol):
    """What paces the attempts (relay.ratelimit): a turn before each, a hold-back after a 429."""

    def before_attempt(self, deadline: float | None) -> None: ...

    def rate_limited(self, retry_after: float) -> float: ...

    def may_retry(self) -> bool: ...


class RetryPolicy(Retry):
    """urllib3's `Retry`, except that the first retry also waits (with jitter).

    urllib3 retries the first time at once; a Threatscore that has just answered
    503 to many lookups at the same moment deserves a short, spread-out pause.
    """

    def get_backoff_time(self) -> float:
        failures = len(self.history)
        if failures == 0:
            return 0.0
        backoff = self.backoff_factor * 2 ** (failures - 1) + random.uniform(0, self.backoff_jitter)  # noqa: S311 - jitter, not a secret
        return min(self.backoff_max, backoff)


def retry_policy(retries: int) -> RetryPolicy:
    """At most `retries` more attempts after the first, whatever failed."""
    return RetryPolicy(
        total=retries,
        connect=None,
        read=None,
        status=None,
        other=None,
        redirect=0,
        # Every Threatscore request only reads (the v3 search is a POST): all are safe to repeat.
        allowed_methods=frozenset({"GET", "POST"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=RETRY_BACKOFF_FACTOR,
        backoff_jitter=RETRY_JITTER,
        backoff_max=RETRY_BACKOFF_MAX,
        respect_retry_after_header=True,
        # What Threatscore asks is read as asked (urllib3 would cut it to six hours); the relay
        # bounds the wait itself (THREATSCORE_MAX_RETRY_AFTER) and logs what was asked.
        retry_after_max=RETRY_AFTER_READ_MAX,
        raise_on_status=False,
    )


class _Reply(NamedTuple):
    status: int
    body: bytes
    raw: urllib3.BaseHTTPResponse  # status and headers, for urllib3's retry policy


class _RetryableConnectionError(Exception):
    """An attempt that failed before a whole answer arrived: worth another try."""

    def __init__(self, error: RelayError, cause: Exception):
        super().__init__(error.message)
        self.error = error
        self.cause = cause


class Transport:
    """HTTP exchanges with Threatscore on the process's shared session."""

    def __init__(
        self,
        settings: Settings,
        session: requests.Session,
        sleep: Callable[[float], None] = time.sleep,
        pacing: Pacing | None = None,
    ):
        self._pacing = pacing  # the rate limit and 429 hold-back shared by all instances
        self._timeout = settings.threatscore_timeout
        self._max_retry_after = settings.threatscore_max_retry_after
        self._max_body_bytes = settings.threatscore_max_body_bytes
        self._session = session
        # Immutable: each exchange starts from it, and `increment` returns a new policy.
        self._retry_policy = retry_policy(settings.threatscore_retries)
        self._sleep = sleep  # tests watch the waits between attempts
        self._headers = request_headers(settings)

    def exchange(
        self, method: str, url: str, deadline: float | None, json_body: object = None
    ) -> tuple[int, bytes]:
        """The first answer that is not worth retrying, as (status, body), or the last error.

        Why a loop here rather than `Retry` on the HTTPAdapter: urllib3 would
        sleep (backoff, Retry-After) and start attempts without knowing this
        lookup's deadline, and requests has no per-call retries argument to
        give it one; the session is also shared with the authenticator's key
        fetches, which must not be retried. So urllib3's `Retry` still decides
        what a failure costs, how long to back off and what `Retry-After`
        means; this loop only refuses to wait or try past the deadline, and
        each attempt's timeouts are cut to the time left.
        """
        retry: Retry = self._retry_policy
        while True:
            if self._pacing is not None:
                self._pacing.before_attempt(deadline)  # may wait for a turn, or raise
            try:
                reply = self._fetch(method, url, deadline, json_body)
            except _RetryableConnectionError as failure:
                last_error = failure.error
                try:
                    retry = retry.increment(method, url, error=failure.cause)
                except MaxRetryError:
                    raise last_error from None
                wait = retry.get_backoff_time()
            else:
                if reply.status not in RETRY_STATUSES:
                    return reply.status, reply.body
                last_error = status_error(reply.status, reply.body)
                try:
                    retry = retry.increment(method, url, response=reply.raw)
                except MaxRetryError:
                    raise last_error from None
                asked = _retry_after(retry, reply.raw)
                # Never longer than THREATSCORE_MAX_RETRY_AFTER, whatever Threatscore asks.
                retry_after = None if asked is None else min(asked, self._max_retry_after)
                wait = retry.get_backoff_time() if retry_after is None else retry_after
                if reply.status == 429 and asked is not None and self._pacing is not None:
                    self._pacing.rate_limited(asked)  # every instance holds back
                if reply.status == 429 and retry_after is not None and not _fits(wait, deadline):
                    raise TooManyRequestsError(
                        f"Threatscore is rate limiting the relay (HTTP 429) and asks to wait {asked:g} s,"
                        " longer than the relay's deadline allows"
                    ) from None
            if not _fits(wait, deadline):
                raise last_error
            if self._pacing is not None and not self._pacing.may_retry():
                raise last_error  # the circuit breaker opened: no more attempts
            self._sleep(wait)

    def _fetch(self, method: str, url: str, deadline: float | None, json_body: object) -> _Reply:
        """One attempt, bounded: it ends within the connect plus the read timeout (or at the deadline)."""
        connect, read = self._attempt_timeout(deadline)
        started = time.monotonic()
        give_up_at = started + connect + read if deadline is None else min(started + connect + read, deadline)
        try:
            fetched = fetch(
                self._session,
                method,
                url,
                headers=self._headers,
                json_body=json_body,
                connect_timeout=connect,
                read_timeout=read,
                give_up_at=give_up_at,
                max_body_bytes=self._max_body_bytes,
            )
        except FetchError as failure:
            raise self._failure(failure, (connect, read), give_up_at - started, deadline) from None
        if fetched.is_redirect:
            raise UpstreamRedirectError(
                f"Threatscore answered with a redirect (HTTP {fetched.status}), which the relay does not"
                " follow (is THREATSCORE_API_URL right?)"
            )
        return _Reply(fetched.status, fetched.body, fetched.raw)

    def _failure(
        self, failure: FetchError, timeout: tuple[float, float], attempt: float, deadline: float | None
    ) -> Exception:
        """The failed attempt in words; `_RetryableConnectionError` when another try may help."""
        kind = failure.kind
        connect, read = timeout
        if kind == bounded_fetch.TLS_CERTIFICATE:
            return UpstreamTLSError("Threatscore's TLS certificate could not be verified")
        if kind == bounded_fetch.TLS_HANDSHAKE:
            return UpstreamTLSError(
                "Threatscore did not complete a TLS handshake (does THREATSCORE_API_URL speak https?)"
            )
        if kind == bounded_fetch.TOO_LARGE:
            return _too_large(self._max_body_bytes)
        # Timeouts are not retried: a slow Threatscore is not helped by more questions.
        if kind == bounded_fetch.READ_TIMEOUT:
            return self._timeout_error(f"Threatscore did not answer within {read:g} s", deadline)
        if kind == bounded_fetch.OUT_OF_TIME:
            return self._timeout_error(
                f"Threatscore's answer did not arrive whole within {attempt:g} s", deadline
            )
        if kind == bounded_fetch.CONNECT_TIMEOUT:
            error: RelayError = self._timeout_error(
                f"Threatscore did not accept a connection within {connect:g} s", deadline
            )
        elif kind == bounded_fetch.BROKEN:
            error = UpstreamConnectionError("the connection to Threatscore broke off mid-answer")
        else:
            error = UpstreamConnectionError(CONNECTION_PROBLEMS.get(kind, "Threatscore could not be reached"))
        if kind == bounded_fetch.UNREACHABLE:
            return error
        return _RetryableConnectionError(error, failure.cause or failure)

    def _attempt_timeout(self, deadline: float | None) -> tuple[float, float]:
        """(connect, read) timeouts for one attempt: the configured ones, cut to the time left."""
        if deadline is None:
            return self._timeout
        left = deadline - time.monotonic()
        if left < MIN_ATTEMPT_SECONDS:
            raise DeadlineExceededError("Threatscore did not answer before the relay's deadline")
        return min(self._timeout[0], left), min(self._timeout[1], left)

    @staticmethod
    def _timeout_error(message: str, deadline: float | None) -> RelayError:
        """A timeout that the deadline cut short says so, rather than naming a shortened timeout."""
        if deadline is not None and time.monotonic() >= deadline - MIN_ATTEMPT_SECONDS:
            return DeadlineExceededError("Threatscore did not answer before the relay's deadline")
        return UpstreamTimeoutError(message)


def _retry_after(retry: Retry, raw: urllib3.BaseHTTPResponse) -> float | None:
    """Seconds Threatscore asked to wait (429, 503), or None: then the backoff applies."""
    if raw.status not in Retry.RETRY_AFTER_STATUS_CODES:
        return None
    try:
        return retry.get_retry_after(raw)
    except InvalidHeader:
        return None


def _fits(wait: float, deadline: float | None) -> bool:
    """Whether waiting `wait` seconds still leaves time for an attempt before the deadline."""
    return deadline is None or time.monotonic() + wait + MIN_ATTEMPT_SECONDS < deadline


def parse_json(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamFormatError("Threatscore answered with a body that is not JSON") from None
    except RecursionError:
        raise UpstreamFormatError("Threatscore answered with JSON nested too deeply") from None


def request_headers(settings: Settings) -> dict[str, str]:
    """What every request carries: the relay's User-Agent and, for a licensed account given
    one, its API key (never logged: it is only ever in these headers)."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if settings.threatscore_api_key:
        if settings.threatscore_api_key_header:
            headers[settings.threatscore_api_key_header] = settings.threatscore_api_key
        else:
            headers["Authorization"] = f"Bearer {settings.threatscore_api_key}"
    return headers


REFUSAL_ADVICE = (
    "Threatscore serves licensed accounts from allow-listed addresses: have the address the relay"
    " leaves from allow-listed on a licensed account (and set THREATSCORE_API_KEY if Threatscore"
    " gave one); see docs/troubleshooting.md"
)


def refusal_error(status: int, body: bytes) -> UpstreamRefusedError:
    """401/403: Threatscore's own words (JSON `error.message`, or a short plain-text body) and
    what the operator does about it."""
    words = refusal_words(body)
    quoted = f': "{words}"' if words else ""
    return UpstreamRefusedError(f"Threatscore refused the relay (HTTP {status}{quoted}). {REFUSAL_ADVICE}")


def refusal_words(body: bytes) -> str:
    message = error_message(body)
    if not message:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            payload = None
        if isinstance(payload, str):  # a JSON string
            message = payload
        elif payload is None:  # plain text, unless it is a proxy's HTML page
            text = body[:2000].decode("utf-8", errors="replace").strip()
            message = "" if text.startswith("<") else text
    return cleaned(message)


def status_error(status: int, body: bytes) -> RelayError:
    if status in (401, 403):
        return refusal_error(status, body)
    if status == 404:
        return UpstreamNotFoundError("Threatscore answered 404 Not Found (is THREATSCORE_API_URL right?)")
    if status == 429:
        return TooManyRequestsError("Threatscore is rate limiting the relay (HTTP 429)")
    if status >= 500:
        return UpstreamUnavailableError(f"Threatscore is unavailable (HTTP {status})")
    return UpstreamStatusError(f"Threatscore answered with an unexpected HTTP {status}")


def error_message(body: bytes) -> str:
    """`error.message` of a JSON error body; a proxy's HTML page gives ''."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""


def _too_large(cap: int) -> UpstreamFormatError:
    return UpstreamFormatError(f"Threatscore's answer is larger than {cap} bytes")


# Connection failures in words, by kind (the exceptions' texts quote the URL, and so the
# observable, which must not change what the relay says).
CONNECTION_PROBLEMS = {
    bounded_fetch.UNRESOLVED: "Threatscore's host name could not be resolved",
    bounded_fetch.REFUSED: "Threatscore refused the connection",
    bounded_fetch.RESET: "the connection to Threatscore was reset",
}
