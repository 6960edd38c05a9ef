"""The CTIM rules of the reference, as a check used across the tests.

Verdicts and judgements as xdr-relay.md states them; indicators, sightings and
relationships as threatgrid/ctim's schemas define them (indicator.cljc,
sighting.cljc, relationship.cljc, common.cljc: the base, describable and
sourcable entries; data_table.cljc: the column types).
"""

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
# Every CTIM entity (common.cljc: base-entity-entries, describable-entity-entries,
# sourcable-object-entries).
BASE_REQUIRED = {"id", "type", "schema_version"}
BASE_OPTIONAL = {"revision", "external_ids", "external_references", "timestamp", "language", "tlp"}
DESCRIBABLE = {"title", "description", "short_description"}
SOURCABLE = {"source", "source_uri"}
HIGH_MED_LOW = {"Info", "Low", "Medium", "High", "None", "Unknown"}
INDICATOR_REQUIRED = BASE_REQUIRED | {"valid_time", "producer"}
INDICATOR_OPTIONAL = (
    BASE_OPTIONAL
    | DESCRIBABLE
    | SOURCABLE
    | {
        "severity",
        "negate",
        "indicator_type",
        "tags",
        "composite_indicator_expression",
        "likely_impact",
        "confidence",
        "kill_chain_phases",
        "test_mechanisms",
        "specification",
    }
)
SIGHTING_REQUIRED = BASE_REQUIRED | {"observed_time", "confidence", "count"}
SIGHTING_OPTIONAL = (
    BASE_OPTIONAL
    | DESCRIBABLE
    | SOURCABLE
    | {
        "internal",
        "severity",
        "resolution",
        "data",
        "sensor",
        "sensor_coordinates",
        "targets",
        "observables",
        "relations",
        "context",
    }
)
RELATIONSHIP_REQUIRED = BASE_REQUIRED | {"relationship_type", "source_ref", "target_ref"}
RELATIONSHIP_OPTIONAL = BASE_OPTIONAL | DESCRIBABLE | SOURCABLE
COLUMN_TYPES = {"observable", "string", "markdown", "integer", "number", "url"}
SHORT_STRING = 1024
MED_STRING = 2048


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


def _check_keys(entity: dict, required: set[str], optional: set[str]) -> None:
    keys = set(entity)
    assert keys >= required, required - keys
    assert keys <= required | optional, keys - required - optional


def _check_base(entity: dict, entity_type: str) -> None:
    assert entity["type"] == entity_type, entity
    assert (
        isinstance(entity["id"], str) and entity["id"].startswith("transient:") and len(entity["id"]) <= 2048
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+", entity["schema_version"])
    if "tlp" in entity:
        assert entity["tlp"] in TLPS
    for key, bound in (("title", SHORT_STRING), ("short_description", MED_STRING), ("source", MED_STRING)):
        if key in entity:
            assert isinstance(entity[key], str) and entity[key] and len(entity[key]) <= bound, (key, entity)
    if "description" in entity:  # Markdown: a string, with no bound of its own
        assert isinstance(entity["description"], str) and entity["description"], entity


def check_indicator(indicator: dict) -> None:
    _check_keys(indicator, INDICATOR_REQUIRED, INDICATOR_OPTIONAL)
    _check_base(indicator, "indicator")
    assert isinstance(indicator["producer"], str) and 0 < len(indicator["producer"]) <= SHORT_STRING
    check_valid_time(indicator["valid_time"])
    for key in ("confidence", "severity"):
        if key in indicator:
            assert indicator[key] in HIGH_MED_LOW, indicator
    if "tags" in indicator:
        assert isinstance(indicator["tags"], list)
        assert all(isinstance(tag, str) and 0 < len(tag) <= SHORT_STRING for tag in indicator["tags"])


def check_sighting(sighting: dict) -> None:
    _check_keys(sighting, SIGHTING_REQUIRED, SIGHTING_OPTIONAL)
    _check_base(sighting, "sighting")
    observed = sighting["observed_time"]
    assert set(observed) <= {"start_time", "end_time"} and "start_time" in observed, observed
    if "end_time" in observed:
        assert _time(observed["start_time"]) <= _time(observed["end_time"]), observed
    else:
        _time(observed["start_time"])
    assert sighting["confidence"] in HIGH_MED_LOW
    assert isinstance(sighting["count"], int) and sighting["count"] >= 1  # PosInt
    if "severity" in sighting:
        assert sighting["severity"] in LEVELS
    if "internal" in sighting:
        assert isinstance(sighting["internal"], bool)
    for observable in sighting.get("observables", []):
        check_observable(observable)
    if "data" in sighting:
        check_data_table(sighting["data"])


def check_data_table(table: dict) -> None:
    """sighting.cljc's SightingDataTable: columns and rows, optionally row_count."""
    assert set(table) <= {"columns", "rows", "row_count"} and {"columns", "rows"} <= set(table), table
    assert table["columns"], "a data table has columns"
    for column in table["columns"]:
        assert (
            {"name", "type"}
            <= set(column)
            <= {"name", "type", "description", "required", "short_description"}
        )
        assert isinstance(column["name"], str) and column["name"] and column["type"] in COLUMN_TYPES
    for row in table["rows"]:
        assert isinstance(row, list) and len(row) == len(table["columns"]), row
    if "row_count" in table:
        assert table["row_count"] == len(table["rows"])


def check_relationship(relationship: dict) -> None:
    _check_keys(relationship, RELATIONSHIP_REQUIRED, RELATIONSHIP_OPTIONAL)
    _check_base(relationship, "relationship")
    assert isinstance(relationship["relationship_type"], str) and relationship["relationship_type"]
    for key in ("source_ref", "target_ref"):
        assert isinstance(relationship[key], str) and relationship[key], relationship


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
    indicators = data.get("indicators", {}).get("docs", [])
    sightings = data.get("sightings", {}).get("docs", [])
    relationships = data.get("relationships", {}).get("docs", [])
    for indicator in indicators:
        check_indicator(indicator)
    for sighting in sightings:
        check_sighting(sighting)
    for relationship in relationships:
        check_relationship(relationship)
    for docs in (judgements, indicators, sightings, relationships):
        ids = [doc["id"] for doc in docs]
        assert len(ids) == len(set(ids)), "each doc once per answer"
    # A relationship names entities of the answer (the entities limit never cuts them).
    listed = {doc["id"] for docs in (judgements, indicators, sightings) for doc in docs}
    for relationship in relationships:
        assert relationship["source_ref"] in listed and relationship["target_ref"] in listed, relationship
    observed = [(v["observable"]["type"], v["observable"]["value"]) for v in verdicts]
    assert len(observed) == len(set(observed)), "one verdict per observable"
    if judgements:
        ids = {judgement["id"] for judgement in judgements}
        for verdict in verdicts:
            assert verdict.get("judgement_id") in ids, "a verdict points at a judgement of the answer"
