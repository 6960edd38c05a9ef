"""The CTIM entity builders both mappings share: judgements, verdicts, indicators, sightings,
relationships, their times and their deterministic ids. Pure functions.
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
MAX_REASON = 1024  # CTIM's bound on a judgement's reason
MAX_SHORT_STRING = 1024  # CTIM's ShortString: titles, tags, producer

CLEAN, MALICIOUS, SUSPICIOUS = 1, 2, 3
DISPOSITION_NAMES = {1: "Clean", 2: "Malicious", 3: "Suspicious", 4: "Common", 5: "Unknown"}


@dataclass(frozen=True)
class MappingOptions:
    """What the mapping needs besides the answer and the lookup time."""

    ui_url: str
    valid_days: int
    entities_limit: int


@dataclass
class ObservableEntities:
    """One observable's CTIM entities, each kind already within the entities limit."""

    verdicts: list[dict] = field(default_factory=list)
    judgements: list[dict] = field(default_factory=list)
    indicators: list[dict] = field(default_factory=list)
    sightings: list[dict] = field(default_factory=list)
    relationships: list[dict] = field(default_factory=list)


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


class EntityBuilder:
    """Builds one observable's entities. What they all share is computed once: a cached
    answer is mapped again on every request, so this is on the hot path."""

    def __init__(self, observable: Observable, options: MappingOptions, now: datetime):
        self.observable = observable
        self.options = options
        self.now = now
        self.ctim_observable = observable.to_ctim()
        self.source_uri = search_url(options.ui_url, observable.lookup_value)
        self._valid_times: dict[str, dict] = {}

    def judgement(
        self, scorer: str, scored_at: str | None, score: float | None, reason: str, disposition: int
    ) -> dict:
        """`scored_at` None: Threatscore gave no date (valid from the lookup on)."""
        # repr, not the float, is the material: 0.0 and -0.0 are equal floats but different ids.
        material = (self.observable.type, self.observable.value, scorer, scored_at or "", repr(score))
        return {
            "id": transient_id("judgement", *material),
            "type": "judgement",
            "schema_version": SCHEMA_VERSION,
            "source": SOURCE,
            "source_uri": self.source_uri,
            "observable": self.ctim_observable,
            "disposition": disposition,
            "disposition_name": DISPOSITION_NAMES[disposition],
            "priority": PRIORITY,
            "confidence": CONFIDENCE,
            "severity": SEVERITY,
            "reason": reason[:MAX_REASON],
            "tlp": TLP,
            "valid_time": self.valid_time(scored_at),
        }

    def valid_time(self, scored_at: str | None) -> dict:
        """From the score's date until `valid_days` after the later of that date and the lookup.

        An old score looked up now stays valid for the full period instead of
        arriving already expired.
        """
        valid_time = self._valid_times.get(scored_at)
        if valid_time is None:
            start, start_time = (
                (self.now, ctim_time(self.now)) if scored_at is None else parsed_time(scored_at)
            )
            end = max(start, self.now) + timedelta(days=self.options.valid_days)
            valid_time = self._valid_times[scored_at] = {"start_time": start_time, "end_time": ctim_time(end)}
        return valid_time

    def indicator(self, kind: str, name: str, title: str, description: str) -> dict:
        """An indicator that means the same for every observable: its id depends only on what it
        names, so an XDR user can pivot on it across observables and requests."""
        return {
            "id": transient_id("indicator", kind, name),
            "type": "indicator",
            "schema_version": SCHEMA_VERSION,
            "producer": SOURCE,
            "source": SOURCE,
            "source_uri": self.options.ui_url,
            "title": title[:MAX_SHORT_STRING],
            "short_description": description[:MAX_SHORT_STRING],
            "tags": [name[:MAX_SHORT_STRING], kind],
            "confidence": CONFIDENCE,
            "severity": SEVERITY,
            "tlp": TLP,
            "valid_time": {
                "start_time": ctim_time(self.now),
                "end_time": ctim_time(self.now + timedelta(days=self.options.valid_days)),
            },
        }

    def sighting(self, first_seen: str | None, last_seen: str | None, data: dict | None) -> dict:
        """Threatscore saw the observable: from `first_seen` to `last_seen` (the one known for
        both when the other is missing; the lookup time when both are)."""
        times = [parsed_time(moment)[0] for moment in (first_seen, last_seen) if moment is not None]
        if not times:
            times = [self.now]
        sighting = {
            "id": transient_id("sighting", self.observable.type, self.observable.value),
            "type": "sighting",
            "schema_version": SCHEMA_VERSION,
            "source": SOURCE,
            "source_uri": self.source_uri,
            "title": "Known to Threatscore",
            "confidence": CONFIDENCE,
            "severity": SEVERITY,
            "count": 1,
            "internal": False,
            "observables": [self.ctim_observable],
            "observed_time": {"start_time": ctim_time(min(times)), "end_time": ctim_time(max(times))},
            "tlp": TLP,
        }
        if data is not None:
            sighting["data"] = data
        return sighting

    def relationship(self, relationship_type: str, source_ref: str, target_ref: str) -> dict:
        return {
            "id": transient_id("relationship", relationship_type, source_ref, target_ref),
            "type": "relationship",
            "schema_version": SCHEMA_VERSION,
            "relationship_type": relationship_type,
            "source_ref": source_ref,
            "target_ref": target_ref,
            "source": SOURCE,
            "tlp": TLP,
        }


def verdict(judgement: dict) -> dict:
    return {
        "type": "verdict",
        "observable": judgement["observable"],
        "disposition": judgement["disposition"],
        "disposition_name": judgement["disposition_name"],
        "valid_time": judgement["valid_time"],
        "judgement_id": judgement["id"],
    }


def data_table(columns: list[tuple[str, str | None]]) -> dict | None:
    """A one-row CTIM data table of the (name, value) pairs with a value; None when none has."""
    known = [(name, value) for name, value in columns if value]
    if not known:
        return None
    return {
        "columns": [{"name": name, "type": "string"} for name, _ in known],
        "rows": [[value for _, value in known]],
        "row_count": 1,
    }


@functools.lru_cache(maxsize=4096)
def parsed_time(moment: str) -> tuple[datetime, str]:
    """A normalised answer's date, parsed and in CTIM form. Pure: remembered across requests."""
    parsed = datetime.fromisoformat(moment)
    return parsed, ctim_time(parsed)


def ctim_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def transient_id(kind: str, *material: str) -> str:
    """Deterministic: the same kind and material give the same id."""
    return _transient_id_of(kind, "\x1f".join(material))


@functools.lru_cache(maxsize=8192)
def _transient_id_of(kind: str, material: str) -> str:
    """Remembered: a cached answer is mapped again on every request."""
    # surrogatepass: a lone surrogate (valid in a JSON string from upstream) still has bytes.
    digest = hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()
    return f"transient:threatscore-{kind}-{digest}"
