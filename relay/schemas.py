"""Marshmallow schemas: the caller's observables and Threatscore's answers.

`parse_observables` turns a request body into the observables to look up;
`parse_score_answer` (score API) and `parse_v3_answer` (v3 API) turn a
Threatscore body into that API's normalised answer, `ScoreAnswer` or
`V3Answer` (or None for "no data"). They raise `RelayError`s with plain-words
messages. A normalised answer is plain JSON (it is cached, in Redis too) and
names its API under "api", so that it is always mapped by its own mapping.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from datetime import UTC, date, datetime
from typing import Any, Literal, NotRequired, TypedDict

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from relay.errors import InvalidArgumentError, UpstreamFormatError, UpstreamReportedError
from relay.internal import is_internal
from relay.observables import Observable, canonical_value
from relay.text import cleaned

# --- The caller's observables -------------------------------------------------


class ObservableSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # extra keys from XDR are harmless

    type = fields.String(required=True, validate=validate.Length(min=1))
    value = fields.String(required=True, validate=validate.Length(min=1))


_OBSERVABLES = ObservableSchema(many=True)


# Why an observable of the request is left out (counted in the request's log line).
UNSUPPORTED_TYPE = "unsupported type"
INVALID_VALUE = "invalid value"
INTERNAL = "internal"  # what can only be internal (relay.internal) is never sent to Threatscore


def parse_observables(
    body: bytes,
    max_observables: int,
    max_value_length: int,
    supported_types: Collection[str],
    dropped: list[tuple[int, str]] | None = None,
    lookup_internal: bool = False,
) -> list[Observable]:
    """The valid, distinct observables of `supported_types` (those of the configured API:
    `observables.TYPES_BY_API`) in a request body, in input order; what can only be internal
    (`relay.internal`) only with `lookup_internal` (RELAY_LOOKUP_INTERNAL).

    `dropped`, when given, receives `(index, reason)` for each item left out as unsupported,
    invalid or internal (`UNSUPPORTED_TYPE`, `INVALID_VALUE`, `INTERNAL`); exact repeats are
    not drops.
    """
    dropped = [] if dropped is None else dropped
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgumentError(
            'Invalid JSON payload: expected a list of {"type": ..., "value": ...} objects'
        ) from None
    except RecursionError:  # `[[[[...` a few thousand deep
        raise InvalidArgumentError("Invalid JSON payload: nested too deeply") from None
    if not isinstance(payload, list):
        raise InvalidArgumentError(
            f"Invalid JSON payload: expected a list of observables, got {_json_type(payload)}"
        )
    if len(payload) > max_observables:
        raise InvalidArgumentError(
            f"Too many observables: {len(payload)} sent, at most {max_observables} per request"
        )
    try:
        items = _OBSERVABLES.load(payload)
    except ValidationError as exc:
        raise InvalidArgumentError(f"Invalid observables: {_describe(exc.messages)}") from None

    observables: list[Observable] = []
    # Exact repeats collapse; other spellings of one observable stay, each echoed back in its own
    # entities (the lookup itself is shared through `Observable.cache_key`).
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        if len(item["value"]) > max_value_length:
            raise InvalidArgumentError(
                f"Invalid observables: item {index}: value is longer than {max_value_length} characters"
            )
        observable_type = item["type"].lower()
        if observable_type not in supported_types:
            dropped.append((index, UNSUPPORTED_TYPE))
            continue
        lookup_value = canonical_value(observable_type, item["value"])
        if lookup_value is None:
            dropped.append((index, INVALID_VALUE))
            continue
        observable = Observable(observable_type, item["value"], lookup_value)
        if not lookup_internal and is_internal(observable):
            dropped.append((index, INTERNAL))
            continue
        if (observable.type, observable.value) in seen:
            continue
        seen.add((observable.type, observable.value))
        observables.append(observable)
    return observables


def _json_type(payload: Any) -> str:
    if payload is None:
        return "null"
    return {dict: "an object", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(payload), "something else"
    )


def _describe(messages: Any) -> str:
    """Marshmallow's nested error dict as one readable line."""
    if isinstance(messages, dict):
        parts = []
        for key, value in messages.items():
            if key == "_schema":  # about the item itself (not an object), not one of its fields
                parts.append(_describe(value))
                continue
            label = f"item {key}" if isinstance(key, int) else str(key).lstrip("_")
            parts.append(f"{label}: {_describe(value)}")
        return "; ".join(parts)
    if isinstance(messages, list):
        return " ".join(str(message) for message in messages)
    return str(messages)


# --- Threatscore's answers -----------------------------------------------------

# Strings from Threatscore kept in an answer (engine ids, categories, places...) are cut to this.
MAX_UPSTREAM_TEXT = 256
# Lists from Threatscore kept in a v3 answer (categories, tags, analysis rows) are cut to this.
MAX_UPSTREAM_ITEMS = 1000


class FlexibleDateTime(fields.Field):
    """ISO 8601 with a time (naive means UTC), a bare date (midnight UTC), or epoch milliseconds;
    normalised to an ISO 8601 UTC string. A date the calendar cannot hold is invalid."""

    default_error_messages = {"invalid": "Not a valid ISO 8601 date or epoch milliseconds."}

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and self.metadata.get("epoch"):
                parsed = datetime.fromtimestamp(value / 1000, UTC)
            elif not isinstance(value, str) or len(value) > 64:
                raise self.make_error("invalid")
            elif len(value) == 10:
                day = date.fromisoformat(value)
                parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
            else:
                parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC).isoformat(timespec="milliseconds")
        except (ValueError, OverflowError, OSError):  # OverflowError: an offset past year 1 or 9999
            raise self.make_error("invalid") from None


class FlexibleScore(fields.Field):
    """A finite number, or a numeric string as in 2018; None stays None."""

    default_error_messages = {"invalid": "Not a valid score."}

    def _deserialize(self, value, attr, data, **kwargs) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.make_error("invalid")
        if isinstance(value, str) and len(value) > 64:
            raise self.make_error("invalid")
        try:
            score = float(value)
        except (ValueError, OverflowError):  # OverflowError: an integer of thousands of digits
            raise self.make_error("invalid") from None
        if not math.isfinite(score):
            raise self.make_error("invalid")
        return score


class UpstreamText(fields.String):
    """A string from Threatscore as the relay keeps it: cleaned of what would act on whoever
    shows it (escape sequences, controls, bidi overrides: `relay.text.cleaned`), at most
    MAX_UPSTREAM_TEXT characters. Every string of both APIs' answers enters the relay here."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        return cleaned(super()._deserialize(value, attr, data, **kwargs), MAX_UPSTREAM_TEXT)


def _upstream_error_message(body: dict) -> str:
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message.strip():
        return "no message"
    return cleaned(message)


def _format_error(what: str) -> UpstreamFormatError:
    """`key error` naming what does not fit; field names and values echoed are bounded."""
    return UpstreamFormatError(cleaned(f"{UNEXPECTED_FORMAT} ({what})", 400))


UNEXPECTED_FORMAT = "Threatscore answered in an unexpected format"


# --- the score API --------------------------------------------------------------


class EngineScore(TypedDict):
    engineId: str
    date: str  # ISO 8601, UTC
    score: float | None
    level: str | None


class ScoreEntry(TypedDict):
    date: str
    score: float | None
    level: str | None
    details: list[EngineScore]  # empty for a 2018 entry: an aggregate with no engines behind it


class ScoreAnswer(TypedDict):
    """The score API's found answer: its history of scorings, newest first."""

    api: NotRequired[Literal["score"]]  # absent in answers cached before there were two APIs
    scores: list[ScoreEntry]


class EngineScoreSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    engineId = UpstreamText(required=True, validate=validate.Length(min=1))
    date = FlexibleDateTime(required=True)
    score = FlexibleScore(required=True, allow_none=True)
    level = UpstreamText(load_default=None, allow_none=True)


class ScoreEntrySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    date = FlexibleDateTime(required=True)
    score = FlexibleScore(required=True, allow_none=True)
    level = UpstreamText(load_default=None, allow_none=True)
    # 2018 entries carry only `date` and `score`.
    details = fields.List(fields.Nested(EngineScoreSchema), load_default=list)


_SCORE_ENTRIES = ScoreEntrySchema(many=True)

# Keys a Threatscore answer carries besides `scores` (metadata we ignore).
# An answer without `scores` but with other keys has changed structure.
KNOWN_METADATA_KEYS = frozenset(
    {"data", "types", "signature", "version", "geo", "firstSeen", "lastSeen", "sources"}
)


def parse_score_answer(body: Any) -> ScoreAnswer | None:
    """A found answer (newest entry first), or None for "no data".

    The four historical "nothing known" forms return None; anything else that
    does not match the known shape raises `UpstreamFormatError`.
    """
    if isinstance(body, list):
        if body:
            raise _format_error("a list where an object was expected")
        return None  # 2018: a bare []
    if not isinstance(body, dict):
        raise _format_error(f"JSON {_json_type(body)} instead of an object")
    if "scores" not in body:
        if "error" in body:  # an error reported with HTTP 200 is still an error, not "no data"
            message = _upstream_error_message(body)
            raise UpstreamReportedError(f"Threatscore answered with an error: {message}")
        unknown = sorted(set(body) - KNOWN_METADATA_KEYS)
        if unknown:
            names = ", ".join(name[:40] for name in unknown[:5])
            raise _format_error(f"no 'scores', unknown keys: {names}")
        return None
    raw_entries = body["scores"]
    if not isinstance(raw_entries, list):
        raise _format_error("'scores' is not a list")
    # `"scores": [[]]` is how "nothing known" looked in 2020-2022.
    raw_entries = [entry for entry in raw_entries if entry != []]
    if not raw_entries:
        return None
    try:
        entries = _SCORE_ENTRIES.load(raw_entries)
    except ValidationError as exc:
        raise _format_error(f"scores: {_describe(exc.messages)}") from None
    # Newest first, whatever order they arrived in; same-format UTC ISO strings sort as times.
    entries.sort(key=lambda entry: entry["date"], reverse=True)
    return {"api": "score", "scores": entries}


# --- the v3 API --------------------------------------------------------------------

# Threatscore's own verdict words (`threatscore.level`).
V3_LEVELS = ("safe", "suspicious", "malicious")
# The indicator flags Threatscore sets, as it spells them.
V3_FLAGS = ("blocklist", "attack", "scan", "compromission")


class V3Analysis(TypedDict):
    id: str
    date: str  # ISO 8601, UTC
    score: float


class V3Answer(TypedDict):
    """The v3 API's found answer; what Threatscore did not say is None or empty."""

    api: Literal["v3"]
    score: float | None  # threatscore.value, 0..1
    level: str | None  # threatscore.level, lower-cased (perhaps a word the relay does not know)
    categories: list[str]  # distinct, in Threatscore's order
    flags: list[str]  # the indicator flags that are true, in Threatscore's order
    country: str | None
    city: str | None
    asn: int | None
    as_organization: str | None
    first_seen: str | None  # ISO 8601, UTC
    last_seen: str | None
    analysis: list[V3Analysis]  # rows with a score only, newest first
    tags: list[str]


class V3ThreatscoreSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    value = FlexibleScore(load_default=None, allow_none=True)
    level = UpstreamText(load_default=None, allow_none=True)
    categories = fields.List(
        UpstreamText(), load_default=list, validate=validate.Length(max=MAX_UPSTREAM_ITEMS)
    )
    indicators = fields.Dict(
        keys=UpstreamText(),
        values=fields.Boolean(allow_none=True, truthy={True}, falsy={False}),
        load_default=dict,
        validate=validate.Length(max=MAX_UPSTREAM_ITEMS),
    )


class V3GeoSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    country_name = UpstreamText(load_default=None, allow_none=True)
    city_name = UpstreamText(load_default=None, allow_none=True)


class V3AsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    asn = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(0, 2**32))
    organization_name = UpstreamText(load_default=None, allow_none=True)


class V3ObservableSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    geo = fields.Nested(V3GeoSchema, load_default=None, allow_none=True)
    as_ = fields.Nested(V3AsSchema, data_key="as", load_default=None, allow_none=True)
    first_seen = FlexibleDateTime(load_default=None, allow_none=True, metadata={"epoch": True})
    last_seen = FlexibleDateTime(load_default=None, allow_none=True, metadata={"epoch": True})


class V3AnalysisSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = UpstreamText(required=True, validate=validate.Length(min=1))
    date = FlexibleDateTime(load_default=None, allow_none=True, metadata={"epoch": True})
    score = FlexibleScore(load_default=None, allow_none=True)  # None: an informational row


class V3AnswerSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    threatscore = fields.Nested(V3ThreatscoreSchema, required=True)
    observable = fields.Nested(V3ObservableSchema, load_default=None, allow_none=True)
    analysis = fields.List(
        fields.Nested(V3AnalysisSchema),
        load_default=list,
        allow_none=True,
        validate=validate.Length(max=MAX_UPSTREAM_ITEMS),
    )
    tags = fields.List(
        UpstreamText(), load_default=list, allow_none=True, validate=validate.Length(max=MAX_UPSTREAM_ITEMS)
    )


_V3_ANSWER = V3AnswerSchema()


def parse_v3_answer(body: Any) -> V3Answer | None:
    """A found v3 answer, or None for "no data": no `threatscore` (not in Threatscore's
    database), or a `threatscore` without `value` and `level` (known, not analysed yet).

    An `error` in the body raises `UpstreamReportedError` with its message; an answer
    whose structure does not fit raises `UpstreamFormatError` naming the field.
    """
    if not isinstance(body, dict):
        raise _format_error(f"JSON {_json_type(body)} instead of an object")
    if "error" in body and "threatscore" not in body:
        raise UpstreamReportedError(f"Threatscore answered with an error: {_upstream_error_message(body)}")
    if body.get("threatscore") is None:
        return None
    try:
        loaded = _V3_ANSWER.load(body)
    except ValidationError as exc:
        raise _format_error(_describe(exc.messages)) from None
    threatscore = loaded["threatscore"]
    if threatscore["value"] is None and threatscore["level"] is None:
        return None  # known, not analysed yet
    seen = loaded["observable"] or {}
    geo = seen.get("geo") or {}
    owner = seen.get("as_") or {}
    rows = []
    for index, row in enumerate(loaded["analysis"] or []):
        if row["score"] is None:
            continue  # informational: nothing to judge
        if row["date"] is None:
            raise _format_error(f"analysis: item {index}: a scored row without a date")
        rows.append({"id": row["id"], "date": row["date"], "score": row["score"]})
    rows.sort(key=lambda row: row["date"], reverse=True)  # stable: equal dates keep their order
    return {
        "api": "v3",
        "score": threatscore["value"],
        "level": threatscore["level"].strip().lower() if threatscore["level"] else None,
        "categories": list(dict.fromkeys(name for name in threatscore["categories"] if name.strip())),
        "flags": [name for name, value in threatscore["indicators"].items() if value is True and name],
        "country": geo.get("country_name"),
        "city": geo.get("city_name"),
        "asn": owner.get("asn"),
        "as_organization": owner.get("organization_name"),
        "first_seen": seen.get("first_seen"),
        "last_seen": seen.get("last_seen"),
        "analysis": rows,
        "tags": list(dict.fromkeys(tag for tag in (loaded["tags"] or []) if tag.strip())),
    }
