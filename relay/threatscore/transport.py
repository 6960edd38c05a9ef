"""The shared transport of every Threatscore API: one HTTP exchange within a deadline.

`Transport.exchange` sends one request and returns the first answer that is
not worth retrying (status and body, the body capped in size), or raises the
`RelayError` that says what failed. It retries what is worth retrying (a
failed connection, 502/503/504, 429) within the caller's deadline. The API
modules (`score`, ...) build the request and read the answer.
"""

from __future__ import annotations

import http.client
import json
import random
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

import requests
import urllib3
from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.util.retry import Retry

from relay.config import Settings
from relay.errors import (
    DeadlineExceededError,
    NotFoundError,
    RelayError,
    TooManyRequestsError,
    UpstreamConnectionError,
    UpstreamFormatError,
    UpstreamRefusedError,
    UpstreamTimeoutError,
    UpstreamTLSError,
    UpstreamUnavailableError,
    cleaned,
)
from relay.version import VERSION

USER_AGENT = f"threatscore-xdr-relay/{VERSION} (+Cisco XDR relay module)"

# Answers worth asking again: overloaded or restarting (502/503/504), rate limited (429).
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Waits between attempts: 0.2 s, 0.4 s, 0.8 s... each plus up to RETRY_JITTER at random, so
# that lookups which failed together do not all come back at the same instant.
RETRY_BACKOFF_FACTOR = 0.2
RETRY_JITTER = 0.1
RETRY_BACKOFF_MAX = 5.0
# An attempt that would have less time than this before the deadline is not worth starting.
MIN_ATTEMPT_SECONDS = 0.05


class Pacing(Protocol):
    """What paces the attempts (relay.ratelimit): a turn before each, a hold-back after a 429."""

    def before_attempt(self, deadline: float | None) -> None: ...

    def rate_limited(self, retry_after: float) -> None: ...


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
                retry_after = _retry_after(retry, reply.raw)
                wait = retry.get_backoff_time() if retry_after is None else retry_after
                if reply.status == 429 and retry_after is not None and self._pacing is not None:
                    self._pacing.rate_limited(retry_after)  # every instance holds back
                if reply.status == 429 and retry_after is not None and not _fits(wait, deadline):
                    raise TooManyRequestsError(
                        f"Threatscore is rate limiting the relay (HTTP 429) and asks to wait {wait:g} s,"
                        " longer than the relay's deadline allows"
                    ) from None
            if not _fits(wait, deadline):
                raise last_error
            self._sleep(wait)

    def _fetch(self, method: str, url: str, deadline: float | None, json_body: object) -> _Reply:
        timeout = self._attempt_timeout(deadline)
        try:
            with self._session.request(
                method,
                url,
                headers=self._headers,
                json=json_body,
                timeout=timeout,
                stream=True,
            ) as response:
                return _Reply(
                    response.status_code, self._read_capped(response, timeout[1], deadline), response.raw
                )
        except RelayError:
            raise
        except requests.exceptions.SSLError:
            raise UpstreamTLSError("Threatscore's TLS certificate could not be verified") from None
        except requests.exceptions.ConnectTimeout as exc:
            raise _RetryableConnectionError(
                self._timeout_error(
                    f"Threatscore did not accept a connection within {timeout[0]:g} s", deadline
                ),
                exc,
            ) from None
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            # Not retried: a slow Threatscore is not helped by more questions.
            raise self._timeout_error(
                f"Threatscore did not answer within {timeout[1]:g} s", deadline
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise _RetryableConnectionError(UpstreamConnectionError(_connection_problem(exc)), exc) from None
        except (
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.DecodeError,
        ) as exc:
            raise _RetryableConnectionError(
                UpstreamConnectionError("the connection to Threatscore broke off mid-answer"), exc
            ) from None
        except requests.exceptions.RequestException as exc:
            raise UpstreamConnectionError(
                f"Threatscore could not be reached ({type(exc).__name__})"
            ) from None

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

    def _read_capped(self, response: requests.Response, read_timeout: float, deadline: float | None) -> bytes:
        """The body, refusing more than the cap without holding more than the cap.

        The read timeout bounds each wait for bytes; a body that trickles in
        must also arrive whole within that time (and before the deadline).
        """
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_body_bytes:
            raise _too_large(self._max_body_bytes)
        give_up_at = time.monotonic() + read_timeout
        if deadline is not None:
            give_up_at = min(give_up_at, deadline)
        chunks, size = [], 0
        for chunk in _arriving_chunks(response.raw):
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _too_large(self._max_body_bytes)
            if time.monotonic() > give_up_at:
                raise self._timeout_error(
                    f"Threatscore's answer did not arrive within {read_timeout:g} s", deadline
                )
            chunks.append(chunk)
        return b"".join(chunks)


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


def _arriving_chunks(raw: urllib3.response.BaseHTTPResponse):
    """The body's bytes as they arrive (not waiting to fill a buffer), decoded."""
    if raw.chunked:
        yield from raw.stream(64 * 1024, decode_content=True)
        return
    while chunk := raw.read1(64 * 1024, decode_content=True):
        yield chunk


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
    ' gave one); see the README, "When Threatscore fails"'
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
        return NotFoundError("Threatscore answered 404 Not Found (is THREATSCORE_API_URL right?)")
    if status == 429:
        return TooManyRequestsError("Threatscore is rate limiting the relay (HTTP 429)")
    if status >= 500:
        return UpstreamUnavailableError(f"Threatscore is unavailable (HTTP {status})")
    return RelayError(f"Threatscore answered with an unexpected HTTP {status}")


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


def _connection_problem(exc: requests.exceptions.ConnectionError) -> str:
    """The failure in words, from the exceptions' types (their texts quote the URL, and so
    the observable, which must not change what the relay says)."""
    causes = _causes(exc)
    if any(isinstance(cause, urllib3.exceptions.NameResolutionError) for cause in causes):
        return "Threatscore's host name could not be resolved"
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "Threatscore refused the connection"
    broken = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected)
    if any(isinstance(cause, broken) for cause in causes):
        return "the connection to Threatscore was reset"
    if any(isinstance(cause, TimeoutError | urllib3.exceptions.TimeoutError) for cause in causes):
        return "Threatscore did not answer in time"
    return "Threatscore could not be reached"


def _causes(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """`exc` and what it wraps: its cause, context, urllib3's `reason` and exceptions in its args."""
    found: list[BaseException] = []
    pending: list[object] = [exc]
    while pending and len(found) < limit:
        item = pending.pop()
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        pending.extend((item.__cause__, item.__context__, getattr(item, "reason", None), *item.args))
    return found
