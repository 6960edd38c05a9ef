"""The Threatscore client: one lookup, one normalised answer or one precise error.

`ScoreSource` is what the handlers depend on, so that another Threatscore API
(the v3 search) can be added later as a second implementation.
"""

from __future__ import annotations

import json
import time
from typing import Protocol
from urllib.parse import quote

import requests
import urllib3

from relay.config import Settings
from relay.errors import (
    InvalidArgumentError,
    NotFoundError,
    RelayError,
    TooManyRequestsError,
    UpstreamConnectionError,
    UpstreamFormatError,
    UpstreamTimeoutError,
    UpstreamTLSError,
    UpstreamUnavailableError,
)
from relay.schemas import parse_score_answer
from relay.version import VERSION

USER_AGENT = f"threatscore-xdr-relay/{VERSION} (+Cisco XDR relay module)"
NOT_FOUND_MARKER = "observable not found"


class ScoreSource(Protocol):
    def score(self, value: str) -> dict | None:
        """The normalised answer for `value`, None for "no data"; raises `RelayError`."""


class ThreatscoreClient:
    """The score API: `GET {base}/api/score/{value}`."""

    def __init__(self, settings: Settings, session: requests.Session):
        self._base_url = settings.threatscore_api_url
        self._timeout = (settings.threatscore_connect_timeout, settings.threatscore_read_timeout)
        self._max_body_bytes = settings.threatscore_max_body_bytes
        self._session = session

    def url_for(self, value: str) -> str:
        """One path segment, whatever the value holds: no `/`, `?`, `#` or `..` can steer the path."""
        segment = quote(value, safe="")
        # `.` and `..` are dot segments even when encoded (requests decodes %2E): refuse them.
        if segment in ("", ".", ".."):
            raise InvalidArgumentError(f"{value!r} cannot be looked up on Threatscore")
        return f"{self._base_url}/api/score/{segment}"

    def score(self, value: str) -> dict | None:
        status, body = self._fetch(self.url_for(value))
        if status == 200:
            return parse_score_answer(_json(body))
        if status == 404 and NOT_FOUND_MARKER in _error_message(body).lower():
            return None  # "no data", not an error
        raise _status_error(status, body)

    def _fetch(self, url: str) -> tuple[int, bytes]:
        try:
            with self._session.get(
                url,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                timeout=self._timeout,
                stream=True,
            ) as response:
                return response.status_code, self._read_capped(response)
        except RelayError:
            raise
        except requests.exceptions.SSLError:
            raise UpstreamTLSError("Threatscore's TLS certificate could not be verified") from None
        except requests.exceptions.ConnectTimeout:
            raise UpstreamTimeoutError(
                f"Threatscore did not accept a connection within {self._timeout[0]:g} s"
            ) from None
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise UpstreamTimeoutError(f"Threatscore did not answer within {self._timeout[1]:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise UpstreamConnectionError(_connection_problem(exc)) from None
        except (
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.DecodeError,
        ):
            raise UpstreamConnectionError("the connection to Threatscore broke off mid-answer") from None
        except requests.exceptions.RequestException as exc:
            raise UpstreamConnectionError(
                f"Threatscore could not be reached ({type(exc).__name__})"
            ) from None

    def _read_capped(self, response: requests.Response) -> bytes:
        """The body, refusing more than the cap without holding more than the cap.

        The read timeout bounds each wait for bytes; a body that trickles in
        must also arrive whole within that time.
        """
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_body_bytes:
            raise _too_large(self._max_body_bytes)
        give_up_at = time.monotonic() + self._timeout[1]
        chunks, size = [], 0
        for chunk in _arriving_chunks(response.raw):
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _too_large(self._max_body_bytes)
            if time.monotonic() > give_up_at:
                raise UpstreamTimeoutError(
                    f"Threatscore's answer did not arrive within {self._timeout[1]:g} s"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _arriving_chunks(raw: urllib3.response.BaseHTTPResponse):
    """The body's bytes as they arrive (not waiting to fill a buffer), decoded."""
    if raw.chunked:
        yield from raw.stream(64 * 1024, decode_content=True)
        return
    while chunk := raw.read1(64 * 1024, decode_content=True):
        yield chunk


def _json(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UpstreamFormatError("Threatscore answered with a body that is not JSON") from None
    except RecursionError:
        raise UpstreamFormatError("Threatscore answered with JSON nested too deeply") from None


def _status_error(status: int, body: bytes) -> RelayError:
    if status == 404:
        return NotFoundError("Threatscore answered 404 Not Found (is THREATSCORE_API_URL right?)")
    if status == 429:
        return TooManyRequestsError("Threatscore is rate limiting the relay (HTTP 429)")
    if status >= 500:
        return UpstreamUnavailableError(f"Threatscore is unavailable (HTTP {status})")
    return RelayError(f"Threatscore answered with an unexpected HTTP {status}")


def _error_message(body: bytes) -> str:
    """`error.message` of a JSON error body; a proxy's HTML page gives ''."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""


def _too_large(cap: int) -> UpstreamFormatError:
    return UpstreamFormatError(f"Threatscore's answer is larger than {cap} bytes")


def _connection_problem(exc: requests.exceptions.ConnectionError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "Threatscore refused the connection"
    if "reset" in text or "aborted" in text or "remotedisconnected" in text:
        return "the connection to Threatscore was reset"
    if "name or service not known" in text or "resolve" in text or "nodename" in text:
        return "Threatscore's host name could not be resolved"
    if "timed out" in text:
        return "Threatscore did not answer in time"
    return "Threatscore could not be reached"
