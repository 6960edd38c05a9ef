"""Marshmallow schemas: the caller's observables and Threatscore's answers.

`parse_observables` turns a request body into the observables to look up;
`parse_score_answer` turns a Threatscore body into a normalised answer (or
None for "no data"). Both raise `RelayError`s with plain-words messages.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from relay.errors import InvalidArgumentError, UpstreamFormatError, UpstreamReportedError
from relay.observables import SUPPORTED_TYPES, Observable, canonical_value

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


def parse_observables(
    body: bytes, max_observables: int, max_value_length: int, dropped: list[tuple[int, str]] | None = None
) -> list[Observable]:
    """The supported, valid, distinct observables of a request body, in input order.

    `dropped`, when given, receives `(index, reason)` for each item left out as unsupported
    or invalid (`UNSUPPORTED_TYPE`, `INVALID_VALUE`); exact repeats are not drops.
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
        if observable_type not in SUPPORTED_TYPES:
            dropped.append((index, UNSUPPORTED_TYPE))
            continue
        lookup_value = canonical_value(observable_type, item["value"])
        if lookup_value is None:
            dropped.append((index, INVALID_VALUE))
            continue
        observable = Observable(observable_type, item["value"], lookup_value)
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


class FlexibleDateTime(fields.Field):
    """ISO 8601 with a time (naive means UTC) or a bare date (midnight UTC)."""

    default_error_messages = {"invalid": "Not a valid ISO 8601 date."}

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            if len(value) == 10:
                day = date.fromisoformat(value)
                parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
            else:
                parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self.make_error("invalid") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC).isoformat(timespec="milliseconds")


class FlexibleScore(fields.Field):
    """A finite number, or a numeric string as in 2018; None stays None."""

    default_error_messages = {"invalid": "Not a valid score."}

    def _deserialize(self, value, attr, data, **kwargs) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.make_error("invalid")
        try:
            score = float(value)
        except ValueError:
            raise self.make_error("invalid") from None
        if not math.isfinite(score):
            raise self.make_error("invalid")
        return score


class EngineScoreSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    engineId = fields.String(required=True, validate=validate.Length(min=1))
    date = FlexibleDateTime(required=True)
    score = FlexibleScore(required=True, allow_none=True)
    level = fields.String(load_default=None, allow_none=True)


class ScoreEntrySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    date = FlexibleDateTime(required=True)
    score = FlexibleScore(required=True, allow_none=True)
    level = fields.String(load_default=None, allow_none=True)
    details = fields.List(fields.Nested(EngineScoreSchema), required=True)


_SCORE_ENTRIES = ScoreEntrySchema(many=True)

# Keys a Threatscore answer carries besides `scores` (metadata we ignore).
# An answer without `scores` but with other keys has changed structure.
KNOWN_METADATA_KEYS = frozenset(
    {"data", "types", "signature", "version", "geo", "firstSeen", "lastSeen", "sources"}
)

UNEXPECTED_FORMAT = "Threatscore answered in an unexpected format"


def _upstream_error_message(body: dict) -> str:
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message.strip():
        return "no message"
    return message.strip()[:200]


def parse_score_answer(body: Any) -> dict | None:
    """A found answer as `{"scores": [...]}` (newest first), or None for "no data".

    The four historical "nothing known" forms return None; anything else that
    does not match the known shape raises `UpstreamFormatError`.
    """
    if isinstance(body, list):
        if body:
            raise UpstreamFormatError(f"{UNEXPECTED_FORMAT} (a list where an object was expected)")
        return None  # 2018: a bare []
    if not isinstance(body, dict):
        raise UpstreamFormatError(f"{UNEXPECTED_FORMAT} (JSON {_json_type(body)} instead of an object)")
    if "scores" not in body:
        if "error" in body:  # an error reported with HTTP 200 is still an error, not "no data"
            message = _upstream_error_message(body)
            raise UpstreamReportedError(f"Threatscore answered with an error: {message}")
        unknown = sorted(set(body) - KNOWN_METADATA_KEYS)
        if unknown:
            raise UpstreamFormatError(
                f"{UNEXPECTED_FORMAT} (no 'scores', unknown keys: {', '.join(unknown[:5])})"
            )
        return None
    raw_entries = body["scores"]
    if not isinstance(raw_entries, list):
        raise UpstreamFormatError(f"{UNEXPECTED_FORMAT} ('scores' is not a list)")
    # `"scores": [[]]` is how "nothing known" looked in 2020-2022.
    raw_entries = [entry for entry in raw_entries if entry != []]
    if not raw_entries:
        return None
    try:
        entries = _SCORE_ENTRIES.load(raw_entries)
    except ValidationError as exc:
        raise UpstreamFormatError(f"{UNEXPECTED_FORMAT} (scores: {_describe(exc.messages)})") from None
    # Newest first, whatever order they arrived in; same-format UTC ISO strings sort as times.
    entries.sort(key=lambda entry: entry["date"], reverse=True)
    return {"scores": entries}
