"""Relay errors, the failure table and the XDR error envelope.

Every failure the caller can see is a `RelayError`: a code from XDR's fixed
vocabulary and a plain-words message. They are answered with HTTP 200 inside
`{"errors": [...], "data": {...}}` so that XDR shows the message.

XDR's codes are few, so one code can stand for several failures (`authorization
error` is the caller's token or Threatscore refusing the relay). Each failure
the relay knows is therefore its own class below, with its code, a typical
message, what it means and what the operator does: this module is the failure
table. docs/troubleshooting.md shows it (a test checks the page against it),
and a test checks that every error the relay raises is one of these classes.
"""

from __future__ import annotations


class RelayError(Exception):
    """The base of every failure; never raised as it is (a test checks that)."""

    code = "unknown"
    error_type = "fatal"
    # The failure table's row: a typical message, what it means, what the operator does.
    example = ""
    meaning = ""
    action = ""

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


# --- the caller's side ----------------------------------------------------------------------


class InvalidArgumentError(RelayError):
    code = "invalid argument"
    example = 'Invalid JSON payload: expected a list of {"type": ..., "value": ...} objects'
    meaning = (
        "the request body is not a JSON list of observables, or passes a limit (body size, number of"
        " observables, length of a value)"
    )
    action = (
        'send a list of `{"type", "value"}` objects; the message names the item and the field.'
        " Raise `RELAY_MAX_BODY_BYTES`, `RELAY_MAX_OBSERVABLES` or `RELAY_MAX_VALUE_LENGTH` if the"
        " limit is too low for your investigations"
    )


class AuthorizationError(RelayError):
    code = "authorization error"
    example = "Authorization failed: token expired"
    meaning = "the caller's token is missing or refused: the call did not come from the XDR module"
    action = (
        'look the reason after `Authorization failed:` up in "When authorization fails" of'
        " docs/troubleshooting.md (key hosts,"
        " `RELAY_AUDIENCE`, clocks, the module's bearer token)"
    )

    def __init__(self, reason: str):
        super().__init__(f"Authorization failed: {reason}")
        self.reason = reason


class NotFoundError(RelayError):
    """A path the relay does not serve."""

    code = "not found"
    example = "No such endpoint: /observe"
    meaning = "the request's path is not one of the relay's endpoints"
    action = (
        "check the module's URL in XDR: it is the function's URL, the relay adds `/observe/observables`"
        " and the other paths itself"
    )


class MethodNotAllowedError(RelayError):
    code = "method not allowed"
    example = "Method GET is not allowed: use POST"
    meaning = "an endpoint was called with another method than POST"
    action = "call the endpoints with POST, as XDR does"


# --- Threatscore's side ---------------------------------------------------------------------


class UpstreamRefusedError(RelayError):
    """Threatscore refused the relay itself (HTTP 401/403): no lookup can succeed until the
    operator acts, so the message says what to do."""

    code = "authorization error"
    example = 'Threatscore refused the relay (HTTP 403: "Blocked by IP filtering"). Threatscore serves …'
    meaning = (
        "Threatscore refuses the relay (HTTP 401 or 403): the address it leaves from is not allow-listed"
    )
    action = (
        "have the relay's outbound address allow-listed on a licensed Threatscore account (`EGRESS=static`"
        " on Google Cloud), set `THREATSCORE_API_KEY` if Cyberprotect gave one; `/health` says when it works"
    )


class UpstreamNotFoundError(RelayError):
    """A 404 from Threatscore that is not its "Observable not found" (which means no data)."""

    code = "not found"
    example = "Threatscore answered 404 Not Found (is THREATSCORE_API_URL right?)"
    meaning = "Threatscore answered 404 for the API itself: the relay asks the wrong URL"
    action = "check `THREATSCORE_API_URL` (unset: the backend's own) and `THREATSCORE_API` (`v3` or `score`)"


class UpstreamRedirectError(RelayError):
    code = "unknown"
    example = "Threatscore answered with a redirect (HTTP 302), which the relay does not follow (is …)"
    meaning = "Threatscore answered with a redirect, which the relay never follows"
    action = "set `THREATSCORE_API_URL` to the address the redirect names (often `http` to `https`)"


class UpstreamStatusError(RelayError):
    code = "unknown"
    example = "Threatscore answered with an unexpected HTTP 418"
    meaning = "Threatscore answered a status the relay does not expect (not 200, 401, 403, 404, 429 or 5xx)"
    action = (
        "check `THREATSCORE_API_URL`; if it is right, Threatscore's API has changed: tell the maintainers"
    )


class UpstreamReportedError(RelayError):
    """Threatscore said, in a 200 answer, that the lookup failed."""

    code = "unknown"
    example = "Threatscore answered with an error: <its message>"
    meaning = "Threatscore answered 200 but said, in its body, that the lookup failed"
    action = "read Threatscore's words in the message; retry later, or ask Cyberprotect if it persists"


class UpstreamUnavailableError(RelayError):
    code = "service unavailable"
    example = "Threatscore is unavailable (HTTP 503)"
    meaning = "Threatscore answered 5xx (after the retries)"
    action = "wait: errors are not cached, the next lookup asks again; check Threatscore's status if it lasts"


class TooManyRequestsError(RelayError):
    code = "too many requests"
    example = "Threatscore is rate limiting the relay (HTTP 429)"
    meaning = (
        "Threatscore rate limits the relay (HTTP 429), or the relay's own `THREATSCORE_RATE_LIMIT`"
        " left no turn before the deadline (the message says which)"
    )
    action = (
        "look up fewer observables at a time; raise `THREATSCORE_RATE_LIMIT` or `RELAY_DEADLINE` for the"
        " relay's own limit; share one cache between instances (`REDIS_URL`)"
    )


class BreakerOpenError(UpstreamUnavailableError):
    """A lookup the open circuit breaker did not send to Threatscore."""

    example = (
        "Threatscore has been failing (5 or more lookups in a row), so the relay is not asking it for"
        " now; it tries again at 14:02:07 UTC (in 21 s)"
    )
    meaning = (
        "the circuit breaker is open: Threatscore failed `BREAKER_FAILURES` lookups in a row, so lookups"
        " that need it fail at once until one probe, after `BREAKER_COOL_DOWN`, finds it answering"
        " (cached answers are still served)"
    )
    action = (
        "wait: the relay tries again by itself at the time the message gives; check Threatscore's"
        " status, and `/health`, which says the breaker's state"
    )


class HoldBackError(TooManyRequestsError):
    """A lookup not sent because Threatscore asked the relay to wait (429 Retry-After)."""

    example = (
        "Threatscore asked the relay to wait (HTTP 429 Retry-After): the relay holds back for another"
        " 40 s, longer than the relay's deadline allows"
    )
    meaning = (
        "Threatscore answered 429 with a `Retry-After`: every instance holds back for that long, at most"
        " `THREATSCORE_MAX_RETRY_AFTER`"
    )
    action = (
        "wait for the time the message gives; if it happens often, look up fewer observables or set"
        " `THREATSCORE_RATE_LIMIT`"
    )


class UpstreamTimeoutError(RelayError):
    code = "timeout"
    example = "Threatscore did not answer within 5 s"
    meaning = "one attempt took longer than `THREATSCORE_TIMEOUT` (to connect, or to answer whole)"
    action = "wait and retry; raise `THREATSCORE_TIMEOUT` if Threatscore is slow but answers"


class DeadlineExceededError(RelayError):
    code = "timeout"
    example = "Threatscore did not answer before the relay's deadline"
    meaning = "`RELAY_DEADLINE` came before Threatscore answered (the others' results are kept)"
    action = (
        "ask about fewer observables at a time, or raise `RELAY_DEADLINE` (below XDR's module timeout);"
        " a late answer is cached for the next request"
    )


class UpstreamConnectionError(RelayError):
    code = "connection error"
    example = "Threatscore refused the connection"
    meaning = "Threatscore could not be reached: refused, reset, broken off, or its name does not resolve"
    action = "check `THREATSCORE_API_URL` and the function's outbound network (DNS, VPC egress, firewall)"


class UpstreamTLSError(RelayError):
    code = "tls error"
    example = "Threatscore's TLS certificate could not be verified"
    meaning = "the TLS certificate does not verify, or the server does not speak TLS"
    action = "check that `THREATSCORE_API_URL` is Threatscore's own `https://` address (no proxy in between)"


class UpstreamFormatError(RelayError):
    code = "key error"
    example = "Threatscore answered in an unexpected format (threatscore: value: Not a valid score.)"
    meaning = (
        "Threatscore's answer is not what its API describes: not JSON, another structure, or larger"
        " than `THREATSCORE_MAX_BODY_BYTES`"
    )
    action = (
        "check `THREATSCORE_API` matches the URL's API; if it does, Threatscore's answer has changed:"
        " tell the maintainers, with the message (it names the field)"
    )


# --- the relay itself -----------------------------------------------------------------------


class HealthCheckError(RelayError):
    code = "health check failed"
    example = "Threatscore health check failed: <the lookup's failure>"
    meaning = "`/health` looked up `HEALTH_OBSERVABLE` and that lookup failed"
    action = "read the failure after the colon: it is one of the rows above, and says what to do"


class InternalError(RelayError):
    code = "internal error"
    example = "The relay failed unexpectedly"
    meaning = "a bug in the relay, or an answer it could not map to CTIM (that observable only)"
    action = (
        "find the `ERROR` line with its stack trace in the log (Error Reporting) and tell the maintainers"
    )


class AnswerTooLargeError(RelayError):
    """The entities of some observables were left out so that the answer stays within bounds."""

    code = "answer too large"
    error_type = "warning"
    example = "The answer would be larger than 10 MB: the entities of 3 observable(s) are left out; …"
    meaning = "a warning: the answer would pass 10 MB, so the entities of the last observables are left out"
    action = "ask about fewer observables at a time, or lower `CTR_ENTITIES_LIMIT`"


class AnswerOutOfTimeError(RelayError):
    """The deadline came before every answer was mapped: the entities of the rest are left out."""

    code = "timeout"
    error_type = "warning"
    example = (
        "The relay's deadline (RELAY_DEADLINE) came before the answer was complete: the entities of"
        " 12 observable(s) are left out; …"
    )
    meaning = (
        "a warning: mapping the answers took the request to its deadline, so the last observables are"
        " left out"
    )
    action = "ask about fewer observables at a time, lower `CTR_ENTITIES_LIMIT`, or raise `RELAY_DEADLINE`"


def failure_table(failures: list[type[RelayError]]) -> str:
    """The failure table in Markdown (docs/troubleshooting.md), one row per failure."""
    rows = [
        "| code | failure | what it means | what to do |",
        "|---|---|---|---|",
    ]
    for failure in failures:
        cells = (
            f"`{failure.code}`",
            f"`{failure.__name__}`: {failure.example}",
            failure.meaning,
            failure.action,
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def envelope(errors: list[RelayError], data: dict | list | None = None) -> dict:
    """The XDR error answer; `data` (what was gathered) is kept when not empty."""
    body: dict = {"errors": [error.to_entry() for error in errors]}
    if data:
        body["data"] = data
    return body
