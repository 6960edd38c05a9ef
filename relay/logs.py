"""Logging: one JSON object per line on stdout, as Google Cloud Logging reads it.

`setup_logging` is called once per process (from `RelayApp.from_env`) and
formats the root logger, so every module's records (auth, cache, ...) come
out the same way. `RequestStats` counts what one request cost; the request's
summary line (relay/app.py) logs it.

Never pass a token, a secret or a request body to a log call: the formatter
also blanks anything shaped like a bearer token or a JWT, as a second line of
defence, but that is not a licence to log them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from relay.text import escaped

# Cloud Logging moves this field of a JSON line into the entry's labels, where
# the platform's own request log keeps the execution id: both then correlate.
LABELS_FIELD = "logging.googleapis.com/labels"
SOURCE_LOCATION_FIELD = "logging.googleapis.com/sourceLocation"
# With these, Cloud Logging nests the relay's line under the platform's request log of the same trace.
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_ID_FIELD = "logging.googleapis.com/spanId"
TRACE_SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
# A record with this `@type` (and a stack trace) is an event for Error Reporting, whatever its text.
REPORTED_ERROR_EVENT = "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"

# Extra fields of a record go under this attribute: logger.info(msg, extra={"json_fields": {...}}).
JSON_FIELDS = "json_fields"

# Codes that say the caller got something wrong: INFO, not a problem of the relay.
CALLER_ERROR_CODES = frozenset({"invalid argument", "not found", "method not allowed", "authorization error"})

request_logger = logging.getLogger("relay.request")

# A credential after "Bearer" (RFC 6750 token68, long enough not to be a word such as "token").
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*")
_JWT = re.compile(r"\beyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*")


def redact(text: str) -> str:
    """`text` with bearer credentials and JWTs blanked out."""
    lowered = text.lower()
    if "bearer" not in lowered and "eyj" not in lowered:
        return text  # the usual line: no regex to run
    return _JWT.sub("[redacted token]", _BEARER.sub(r"\1 [redacted]", text))


# W3C Trace Context: version-traceid-parentid-flags, lower-case hex. A version other than 00
# may append fields after a dash; version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
# Google's own header: TRACE_ID/SPAN_ID;o=OPTIONS, the span id in decimal (an unsigned 64-bit number).
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?")
_MAX_TRACE_HEADER = 512  # both forms are far shorter; a longer header is not looked at
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def trace_fields(traceparent: str | None, cloud_trace_context: str | None, project: str | None) -> dict:
    """The Cloud Logging trace fields of a request, from its `traceparent` header, else from its
    `X-Cloud-Trace-Context` header; `{}` without a project or a valid header.

    The headers come from the caller (Google's front end sets or forwards
    them): anything not exactly in form is ignored, never echoed.
    """
    if not project:
        return {}
    parsed = _parse_traceparent(traceparent) or _parse_cloud_trace_context(cloud_trace_context)
    if parsed is None:
        return {}
    trace_id, span_id, sampled = parsed
    fields: dict = {TRACE_FIELD: f"projects/{project}/traces/{trace_id}"}
    if span_id is not None:
        fields[SPAN_ID_FIELD] = span_id
    fields[TRACE_SAMPLED_FIELD] = sampled
    return fields


def _parse_traceparent(header: str | None) -> tuple[str, str | None, bool] | None:
    if not header or len(header) > _MAX_TRACE_HEADER:
        return None
    match = _TRACEPARENT.fullmatch(header.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def _parse_cloud_trace_context(header: str | None) -> tuple[str, str | None, bool] | None:
    if not header or len(header) > _MAX_TRACE_HEADER:
        return None
    match = _CLOUD_TRACE.fullmatch(header.strip(" \t"))
    if match is None:
        return None
    trace_id, span, options = match.groups()
    trace_id = trace_id.lower()
    if trace_id == _ZERO_TRACE:
        return None
    span_id = None
    if span is not None:
        number = int(span)
        if not 0 < number < 2**64:
            return None
        span_id = f"{number:016x}"
    return trace_id, span_id, options == "1"


# Cloud Logging drops an entry over 256 KB: no line comes near it. Each string of a line is
# cut (a field quoting an upstream's text, a path, a stack trace), each list and object
# shortened; a line still over the bound (many cut fields) keeps only its essentials.
MAX_LINE_BYTES = 64 * 1024
MAX_FIELD_CHARS = 4 * 1024
MAX_STACK_TRACE_CHARS = 16 * 1024
MAX_ITEMS = 50  # of a list or an object within a line
MAX_DEPTH = 6
MAX_LINE_CHARS_BEFORE_CHECK = MAX_LINE_BYTES // 4  # a character is at most 4 bytes of UTF-8
ESSENTIAL_FIELDS = (
    "severity",
    "time",
    "logger",
    LABELS_FIELD,
    SOURCE_LOCATION_FIELD,
    "execution_id",
    "status",
)


def cut(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`text`, or its start and how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _shown(text: str) -> str:
    """`text` redacted, and with any character that would act on whoever reads the log (a
    bidi override, a C1 control; JSON escapes the others) spelled out."""
    return redact(escaped(text, keep="\n\t"))


def _bounded(value, depth: int = 0, limit: int = MAX_FIELD_CHARS):
    """`value` with every string redacted, shown safely and cut, every list and object shortened."""
    if isinstance(value, str):
        return cut(_shown(value), limit)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth >= MAX_DEPTH:
        return cut(_shown(str(value)), limit)
    if isinstance(value, dict):
        items = list(value.items())
        bounded = {
            cut(_shown(str(key)), 200): _bounded(item, depth + 1, limit) for key, item in items[:MAX_ITEMS]
        }
        if len(items) > MAX_ITEMS:
            bounded["..."] = f"{len(items) - MAX_ITEMS} more fields"
        return bounded
    if isinstance(value, list | tuple | set | frozenset):
        value = list(value)
        bounded_items = [_bounded(item, depth + 1, limit) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            bounded_items.append(f"... {len(value) - MAX_ITEMS} more items")
        return bounded_items
    return cut(_shown(str(value)), limit)  # a datetime, an exception: its text


# What orjson must not write in its own way on the short path: `_bounded` writes these as text.
_PLAIN_JSON_ONLY = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _short_plain_line(entry: dict) -> str | None:
    """The line of most records, without walking every field: when it is plain JSON, shorter
    than one field may be (so nothing in it needs cutting), holds nothing shaped like a
    token (so redacting each field would change nothing) and only printable characters (JSON
    escapes the C0 controls; nothing else needs spelling out). None: take the long way."""
    try:
        line = orjson.dumps(entry, option=_PLAIN_JSON_ONLY)
    except TypeError:  # orjson.JSONEncodeError: a datetime, a set, a lone surrogate, a huge integer
        return None
    if len(line) > MAX_FIELD_CHARS:
        return None
    lowered = line.lower()
    if b"bearer" in lowered or b"eyj" in lowered:
        return None
    text = line.decode()
    return text if text.isprintable() else None


def _to_line(entry: dict) -> str:
    try:
        return orjson.dumps(entry).decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. a lone surrogate, or a huge integer
        return json.dumps(entry, ensure_ascii=False, default=str)


class CloudLoggingFormatter(logging.Formatter):
    """A record as one line of JSON: `severity`, `message`, `time`, `logger`, extra fields.

    A record of ERROR or above with an exception is also an Error Reporting
    event: `@type`, `serviceContext` and the trace in `stack_trace`. Every string
    field is redacted (a token in a path is blanked as in the message) and cut, so
    that no line is longer than `MAX_LINE_BYTES`.
    """

    def __init__(self, service: str = "relay", version: str = "") -> None:
        super().__init__()
        self._service_context = {"service": service, "version": version} if version else {"service": service}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict = {
            "severity": record.levelname,  # DEBUG, INFO, WARNING, ERROR, CRITICAL: all Cloud Logging names
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "logger": record.name,
        }
        fields = getattr(record, JSON_FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
            execution_id = fields.get("execution_id")
            if execution_id:
                entry[LABELS_FIELD] = {"execution_id": str(execution_id)}
        if record.levelno >= logging.WARNING:
            entry[SOURCE_LOCATION_FIELD] = {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            }
        stack_trace = None
        if record.exc_info and record.exc_info[0] is not None:
            # The cause in words, and the trace where Error Reporting looks for it.
            exc_type, exc, _ = record.exc_info
            entry["error"] = f"{exc_type.__name__}: {exc}"
            stack_trace = "".join(traceback.format_exception(*record.exc_info))
            if record.levelno >= logging.ERROR:
                entry["@type"] = REPORTED_ERROR_EVENT
                entry["serviceContext"] = self._service_context
        elif record.stack_info:
            stack_trace = record.stack_info
        if stack_trace is None:
            line = _short_plain_line(entry)
            if line is not None:
                return line
        # A field that is not JSON (a datetime, an exception) becomes its text: the line is kept.
        entry = _bounded(entry)
        if stack_trace is not None:
            # Its end is where the error is: that is what a cut keeps.
            trace = _shown(stack_trace)
            entry["stack_trace"] = (
                trace if len(trace) <= MAX_STACK_TRACE_CHARS else "..." + trace[-MAX_STACK_TRACE_CHARS:]
            )
        line = _to_line(entry)
        if len(line) > MAX_LINE_CHARS_BEFORE_CHECK and len(line.encode()) > MAX_LINE_BYTES:
            essentials = {name: entry[name] for name in ESSENTIAL_FIELDS if name in entry}
            essentials["message"] = cut(entry.get("message", ""), MAX_FIELD_CHARS)
            essentials["log_line_cut"] = (
                f"the line had {len(line.encode())} bytes; fields beyond these were left out"
            )
            line = _to_line(essentials)
        return line


class StdoutHandler(logging.Handler):
    """Writes each record as one line on stdout, in the caller's thread, before the call returns.

    Why not a writer thread: on Cloud Functions gen2 the CPU is throttled
    outside requests, so a line left for another thread could wait until the
    next request (or be lost with the instance). A request's line is on
    stdout before its response leaves. The line is formatted outside the lock;
    the lock only keeps two lines from interleaving. `sys.stdout` is looked up
    at each write: the framework and test runners swap it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._write_lock = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler-wide lock around formatting: only the write itself is serialised.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            with self._write_lock:
                stream = sys.stdout
                stream.write(line)
                stream.flush()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Every line is flushed as it is written: nothing is ever pending here."""


_stdout_handler = StdoutHandler()  # one per process


def flush_logs(timeout: float = 5.0) -> None:
    """Kept for callers (tests) written when lines were queued: each line is now on stdout when logged."""
    del timeout


def setup_logging(level: str, service: str = "relay", version: str = "") -> None:
    """Formats every record of the process as JSON on stdout, from `level` up.

    Idempotent. Plain console handlers installed before (by functions-framework
    with LOG_EXECUTION_ID, or by `logging.basicConfig`) are replaced, so that no
    record is printed twice; other handlers (a test runner's capture) are kept.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler or isinstance(handler, StdoutHandler):
            root.removeHandler(handler)
    _stdout_handler.setFormatter(CloudLoggingFormatter(service, version))
    root.addHandler(_stdout_handler)
    root.setLevel(level)
    # Nothing here logs thread or process names: don't collect them for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # urllib3 logs every upstream URL at DEBUG, and an URL holds an observable value (request data).
    logging.getLogger("urllib3").setLevel(max(logging.getLevelName(level), logging.INFO))
    # A malformed answer's headers are the relay's error to report, in its words; urllib3's
    # warning would add a trace and the URL.
    logging.getLogger("urllib3.connection").setLevel(logging.ERROR)


class RequestStats:
    """What one request cost upstream. Thread-safe: lookups run on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._upstream_calls = 0
        self._cache_hits = 0
        self._errors: dict[tuple[str, str], int] = {}
        self._cut_short: dict[str, int] = {}

    def count_cut_short(self, by: str) -> None:
        """A lookup not sent to Threatscore because of `by` (the breaker, the hold-back)."""
        with self._lock:
            self._cut_short[by] = self._cut_short.get(by, 0) + 1

    def cut_short(self) -> dict[str, int]:
        with self._lock:
            return dict(self._cut_short)

    def count_upstream_call(self) -> None:
        with self._lock:
            self._upstream_calls += 1

    def count_cache_hit(self) -> None:
        with self._lock:
            self._cache_hits += 1

    def count_error(self, code: str, cause: str) -> None:
        """An error the answer carries, by its cause (never naming the observable: that is request data)."""
        with self._lock:
            self._errors[(code, cause)] = self._errors.get((code, cause), 0) + 1

    @property
    def upstream_calls(self) -> int:
        with self._lock:
            return self._upstream_calls

    @property
    def cache_hits(self) -> int:
        with self._lock:
            return self._cache_hits

    def errors(self) -> list[dict]:
        """`[{"code", "message", "count"}]`, one entry per distinct cause."""
        with self._lock:
            return [
                {"code": code, "message": cause, "count": count}
                for (code, cause), count in self._errors.items()
            ]


class RequestLog:
    """One request as the operator sees it, logged as one line when it ends.

    Holds no part of the request body: only its path, its size in observables
    and what the answer cost and lacked.
    """

    def __init__(
        self,
        method: str,
        path: str,
        execution_id: str,
        clock: Callable[[], float] = time.monotonic,
        trace: dict | None = None,
    ):
        self.method = method
        self.path = path[:200]
        self.execution_id = execution_id
        self.trace = trace or {}  # trace_fields(...): on every line of this request
        self.stats = RequestStats()
        self.observables = 0  # the distinct supported observables looked up
        self.dropped: list[tuple[int, str]] = []  # (index, reason) of the observables left out
        self.tenant: str | None = None  # the caller's tenant, once authenticated (never its key)
        self._clock = clock
        self.started = clock()

    def count_error(self, error) -> None:
        """A request-level `RelayError` (a per-observable one goes to `stats` directly)."""
        self.stats.count_error(error.code, error.message)

    def fields(self) -> dict:
        return {"execution_id": self.execution_id, "method": self.method, "path": self.path, **self.trace}

    def finish(self, status: int) -> None:
        duration_ms = round((self._clock() - self.started) * 1000, 1)
        errors = self.stats.errors()
        fields = {
            **self.fields(),
            "status": status,
            "observables": self.observables,
            **({"tenant": self.tenant} if self.tenant is not None else {}),
            "upstream_calls": self.stats.upstream_calls,
            "cache_hits": self.stats.cache_hits,
            "duration_ms": duration_ms,
        }
        dropped = Counter(reason for _index, reason in self.dropped)
        if dropped:
            fields["dropped"] = dict(sorted(dropped.items()))
        if errors:
            fields["errors"] = errors
        cut_short = self.stats.cut_short()
        if cut_short:
            fields["cut_short"] = cut_short
        codes = {error["code"] for error in errors}
        if status >= 500 or "internal error" in codes:
            level = logging.ERROR
        elif codes - CALLER_ERROR_CODES:
            level = logging.WARNING
        else:
            level = logging.INFO
        causes = "; ".join(f"{error['code']}: {error['message']} (x{error['count']})" for error in errors)
        request_logger.log(
            level,
            "%s %s %d: %d observables%s, %.1f ms%s",
            self.method,
            self.path,
            status,
            self.observables,
            f" ({', '.join(f'{count} dropped: {reason}' for reason, count in sorted(dropped.items()))})"
            if dropped
            else "",
            duration_ms,
            (f"; errors: {causes}" if causes else "")
            + (
                "; lookups cut short: "
                + ", ".join(f"{count} by the {by}" for by, count in sorted(cut_short.items()))
                if cut_short
                else ""
            ),
            extra={JSON_FIELDS: fields},
            stacklevel=2,  # the source location is the relay's caller, not this method
        )
