"""The CTIM rules of the reference, as a check used across the tests."""

from __future__ import annotations

import re
from datetime import datetime

DISPOSITIONS = {1: "Clean", 2: "Malicious", 3: "Suspicious", 4: "Common", 5: "Unknown"}
LEVELS = {"Info", "Low", "Medium", "High", "None", "Unknown"}
TLPS = {"red", "amber", "green", "white"}
VERDICT_KEYS = {"type", "observable", "disposition", "disposition_name", "valid_time", "judgement_id"}
JUDGEMENT_REQUIRED = {
    "id",
    "type",
    "schema_version",
    "source",
    "observable",
    "disposition",
    "disposition_name",
    "priority",
    "confidence",
    "severity",
    "valid_time",
}
JUDGEMENT_OPTIONAL = {
    "source_uri",
    "reason",
    "reason_uri",
    "tlp",
    "external_ids",
    "external_references",
    "timestamp",
}
FORBIDDEN_TOP = {"module", "module_instance_id", "module_type_id"}


def _time(value: str) -> datetime:
    assert isinstance(value, str) and re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", value
    ), value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def check_valid_time(valid_time: dict) -> None:
    assert set(valid_time) == {"start_time", "end_time"}, valid_time
    assert _time(valid_time["start_time"]) <= _time(valid_time["end_time"]), valid_time


def check_observable(observable: dict) -> None:
    assert set(observable) == {"type", "value"}, observable
    assert observable["type"] and observable["value"]


def check_disposition(entity: dict) -> None:
    assert entity["disposition"] in DISPOSITIONS, entity
    assert DISPOSITIONS[entity["disposition"]] == entity["disposition_name"], entity


def check_verdict(verdict: dict) -> None:
    assert set(verdict) - {"judgement_id"} == VERDICT_KEYS - {"judgement_id"}, set(verdict)
    assert verdict["type"] == "verdict"
    check_observable(verdict["observable"])
    check_disposition(verdict)
    check_valid_time(verdict["valid_time"])


def check_judgement(judgement: dict) -> None:
    keys = set(judgement)
    assert keys >= JUDGEMENT_REQUIRED, JUDGEMENT_REQUIRED - keys
    assert keys <= JUDGEMENT_REQUIRED | JUDGEMENT_OPTIONAL, keys - JUDGEMENT_REQUIRED - JUDGEMENT_OPTIONAL
    assert judgement["type"] == "judgement"
    assert judgement["id"].startswith("transient:") and len(judgement["id"]) <= 2048
    assert re.fullmatch(r"\d+\.\d+\.\d+", judgement["schema_version"])
    assert isinstance(judgement["source"], str) and judgement["source"]
    check_observable(judgement["observable"])
    check_disposition(judgement)
    assert isinstance(judgement["priority"], int) and 0 <= judgement["priority"] <= 100
    assert judgement["confidence"] in LEVELS and judgement["severity"] in LEVELS
    check_valid_time(judgement["valid_time"])
    if "reason" in judgement:
        assert len(judgement["reason"]) <= 1024
    if "tlp" in judgement:
        assert judgement["tlp"] in TLPS


def check_errors(errors: list) -> None:
    assert isinstance(errors, list) and errors
    for error in errors:
        assert set(error) == {"type", "code", "message"}, error
        assert error["type"] in {"fatal", "error", "warning"}
        assert error["code"] and error["message"]


def check_answer(body: dict) -> None:
    """Every entity list, verdict, judgement and error entry of an XDR answer obeys CTIM."""
    assert set(body) <= {"data", "errors"}, body
    if "errors" in body:
        check_errors(body["errors"])
        if "data" in body:
            assert body["data"], "empty data must be left out"
    data = body.get("data", {})
    if isinstance(data, list):  # refer
        return
    assert not FORBIDDEN_TOP & set(data)
    for key, entities in data.items():
        if key == "status":
            continue
        assert set(entities) == {"count", "docs"}, entities
        assert entities["count"] == len(entities["docs"]) > 0
    verdicts = data.get("verdicts", {}).get("docs", [])
    judgements = data.get("judgements", {}).get("docs", [])
    for verdict in verdicts:
        check_verdict(verdict)
    for judgement in judgements:
        check_judgement(judgement)
    observed = [(v["observable"]["type"], v["observable"]["value"]) for v in verdicts]
    assert len(observed) == len(set(observed)), "one verdict per observable"
    if judgements:
        ids = {judgement["id"] for judgement in judgements}
        for verdict in verdicts:
            assert verdict.get("judgement_id") in ids, "a verdict points at a judgement of the answer"
