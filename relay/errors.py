"""Relay errors and the XDR error envelope.

Every failure the caller can see is a `RelayError`: a code from the XDR
vocabulary and a plain-words message. They are answered with HTTP 200 inside
`{"errors": [...], "data": {...}}` so that XDR shows the message.
"""

from __future__ import annotations


class RelayError(Exception):
    code = "unknown"
    error_type = "fatal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_entry(self) -> dict:
        return {"type": self.error_type, "code": self.code, "message": self.message}

    def about(self, observable_value: str) -> RelayError:
        """The same error, its message naming the observable it concerns."""
        named = type(self).__new__(type(self))
        RelayError.__init__(named, f"{observable_value}: {self.message}")
        return named


class InvalidArgumentError(RelayError):
    code = "invalid argument"


class AuthorizationError(RelayError):
    code = "authorization error"

    def __init__(self, reason: str):
        super().__init__(f"Authorization failed: {reason}")
        self.reason = reason


class UpstreamRefusedError(RelayError):
    """Threatscore refused the relay itself (HTTP 401/403): no lookup can succeed until the
    operator acts, so the message says what to do."""

    code = "authorization error"


class NotFoundError(RelayError):
    code = "not found"


class MethodNotAllowedError(RelayError):
    code = "method not allowed"


class UpstreamUnavailableError(RelayError):
    code = "service unavailable"


class TooManyRequestsError(RelayError):
    code = "too many requests"


class UpstreamTimeoutError(RelayError):
    code = "timeout"


class UpstreamConnectionError(RelayError):
    code = "connection error"


class UpstreamTLSError(RelayError):
    code = "tls error"


class UpstreamReportedError(RelayError):
    """Threatscore said, in a 200 answer, that the lookup failed."""

    code = "unknown"


class UpstreamFormatError(RelayError):
    code = "key error"


class DeadlineExceededError(RelayError):
    code = "timeout"


class HealthCheckError(RelayError):
    code = "health check failed"


class InternalError(RelayError):
    code = "internal error"


class AnswerTooLargeError(RelayError):
    """The entities of some observables were left out so that the answer stays within bounds."""

    code = "answer too large"
    error_type = "warning"


class AnswerOutOfTimeError(RelayError):
    """The deadline came before every answer was mapped: the entities of the rest are left out."""

    code = "timeout"
    error_type = "warning"


# Upstream words quoted in a message are cut to this many characters.
QUOTE_LIMIT = 200


def cleaned(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Text from upstream made fit to quote: one line of printable characters (controls,
    lone surrogates and runs of white space become one space), at most `limit` characters."""
    words = "".join(
        char if char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF else " "
        for char in text[: limit * 4]
    )
    words = " ".join(words.split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def envelope(errors: list[RelayError], data: dict | list | None = None) -> dict:
    """The XDR error answer; `data` (what was gathered) is kept when not empty."""
    body: dict = {"errors": [error.to_entry() for error in errors]}
    if data:
        body["data"] = data
    return body
