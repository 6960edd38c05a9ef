"""The CTIM mapper: a normalised Threatscore answer in, CTIM dicts out. No I/O.

Per observable: one judgement for the aggregate score of the newest scored
entry (listed first, so the entities limit never cuts the judgement the
verdict points to), one judgement per engine score of every entry (newest
entry first), and one verdict derived from the aggregate.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from relay.observables import Observable

SCHEMA_VERSION = "1.0.17"
SOURCE = "Threatscore Cyberprotect"
PRIORITY = 85
CONFIDENCE = "Medium"
SEVERITY = "Medium"
TLP = "white"

CLEAN, MALICIOUS, SUSPICIOUS = 1, 2, 3
DISPOSITION_NAMES = {1: "Clean", 2: "Malicious", 3: "Suspicious", 4: "Common", 5: "Unknown"}


@dataclass(frozen=True)
class MappingOptions:
    """What the mapping needs besides the answer; `now` is the time of the lookup."""

    now: datetime
    ui_url: str
    valid_days: int
    entities_limit: int


@dataclass
class ObservableEntities:
    verdicts: list[dict] = field(default_factory=list)
    judgements: list[dict] = field(default_factory=list)


def disposition_for(score: float) -> int:
    """Threatscore score -> CTIM disposition; the buckets leave no gaps."""
    if score <= 0.25:  # negative scores mean clean too
        return CLEAN
    if score <= 0.5:
        return SUSPICIOUS
    return MALICIOUS


def search_url(ui_url: str, value: str) -> str:
    """The Threatscore UI page that searches for `value`."""
    return f"{ui_url}/search?query={quote(value, safe='')}"


def map_answer(observable: Observable, answer: dict | None, options: MappingOptions) -> ObservableEntities:
    """CTIM verdict and judgements for one observable; nothing for "no data"."""
    entities = ObservableEntities()
    if not answer:
        return entities
    mapping = _Mapping(observable, options)
    entries = answer["scores"]
    newest_scored = next((entry for entry in entries if entry["score"] is not None), None)
    if newest_scored is not None:
        aggregate = mapping.aggregate_judgement(newest_scored)
        entities.judgements.append(aggregate)
        entities.verdicts.append(_verdict(aggregate))
    for entry in entries:
        for engine in entry["details"]:
            if len(entities.judgements) >= options.entities_limit:
                return entities  # the rest would be cut anyway
            if engine["score"] is not None:
                entities.judgements.append(mapping.engine_judgement(engine))
    return entities


class _Mapping:
    """One observable's mapping. What all its entities share is computed once: a cached
    answer is mapped again on every request, so this is on the hot path."""

    def __init__(self, observable: Observable, options: MappingOptions):
        self._observable = observable
        self._options = options
        self._ctim_observable = observable.to_ctim()
        self._source_uri = search_url(options.ui_url, observable.lookup_value)
        self._valid_times: dict[str, dict] = {}

    def aggregate_judgement(self, entry: dict) -> dict:
        disposition = disposition_for(entry["score"])
        level = entry["level"] or DISPOSITION_NAMES[disposition].lower()
        reason = f"Threatscore score {entry['score']:.2f} ({level})"
        return self._judgement("aggregate", entry["date"], entry["score"], reason)

    def engine_judgement(self, engine: dict) -> dict:
        reason = f"Engine: {engine['engineId']}"
        return self._judgement(engine["engineId"], engine["date"], engine["score"], reason)

    def _judgement(self, scorer: str, scored_at: str, score: float, reason: str) -> dict:
        disposition = disposition_for(score)
        return {
            "id": _transient_id(self._observable, scorer, scored_at, score),
            "type": "judgement",
            "schema_version": SCHEMA_VERSION,
            "source": SOURCE,
            "source_uri": self._source_uri,
            "observable": self._ctim_observable,
            "disposition": disposition,
            "disposition_name": DISPOSITION_NAMES[disposition],
            "priority": PRIORITY,
            "confidence": CONFIDENCE,
            "severity": SEVERITY,
            "reason": reason[:1024],
            "tlp": TLP,
            "valid_time": self._valid_time(scored_at),
        }

    def _valid_time(self, scored_at: str) -> dict:
        """From the score's date until `valid_days` after the later of that date and the lookup.

        An old score looked up now stays valid for the full period instead of
        arriving already expired.
        """
        valid_time = self._valid_times.get(scored_at)
        if valid_time is None:
            start, start_time = _scored_at(scored_at)
            end = max(start, self._options.now) + timedelta(days=self._options.valid_days)
            valid_time = self._valid_times[scored_at] = {
                "start_time": start_time,
                "end_time": _ctim_time(end),
            }
        return valid_time


def _verdict(judgement: dict) -> dict:
    return {
        "type": "verdict",
        "observable": judgement["observable"],
        "disposition": judgement["disposition"],
        "disposition_name": judgement["disposition_name"],
        "valid_time": judgement["valid_time"],
        "judgement_id": judgement["id"],
    }


@functools.lru_cache(maxsize=4096)
def _scored_at(date: str) -> tuple[datetime, str]:
    """A score's date, parsed and in CTIM form. Pure: remembered across requests."""
    moment = datetime.fromisoformat(date)
    return moment, _ctim_time(moment)


def _ctim_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _transient_id(observable: Observable, scorer: str, scored_at: str, score: float) -> str:
    """Deterministic: the same observable, scorer, date and score give the same id."""
    # repr, not the float, is remembered: 0.0 and -0.0 are equal floats but different ids.
    return _transient_id_of("\x1f".join((observable.type, observable.value, scorer, scored_at, repr(score))))


@functools.lru_cache(maxsize=4096)
def _transient_id_of(material: str) -> str:
    """Remembered: a cached answer is mapped again on every request."""
    return f"transient:threatscore-judgement-{hashlib.sha256(material.encode()).hexdigest()}"
