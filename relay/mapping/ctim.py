"""The CTIM entity builders both mappings share: judgements, verdicts, indicators, sightings,
relationships, their times and their deterministic ids. Pure functions.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from relay.mapping.concepts import Concept
from relay.mapping.dispositions import DISPOSITION_NAMES
from relay.mapping.rating import Rating
from relay.observables import Observable

SCHEMA_VERSION = "1.0.17"
SOURCE = "Threatscore Cyberprotect"
TLP = "white"
MAX_REASON = 1024  # CTIM's bound on a judgement's reason
MAX_SHORT_STRING = 1024  # CTIM's ShortString: titles, tags, producer
MAX_DESCRIPTION = 2048  # kept within CTIM's MedString, though a description may be longer
ID_MATERIAL_SEPARATOR = "\x1f"  # joins an id's material; never in an observable's value (printable)


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
    # Each id derived from the observable's spelling (its type and value), with its kind and the
    # rest of its material as the id joins it: what `respelled` needs to give another spelling
    # its own ids.
    spelled_ids: dict[str, tuple[str, str]] = field(default_factory=dict)


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
        self.spelled_ids: dict[str, tuple[str, str]] = {}  # what ObservableEntities.spelled_ids says

    def judgement(
        self,
        scorer: str,
        scored_at: str | None,
        score: float | None,
        reason: str,
        disposition: int,
        rating: Rating,
    ) -> dict:
        """`scored_at` None: Threatscore gave no date (valid from the lookup on)."""
        # repr, not the float, is the material: 0.0 and -0.0 are equal floats but different ids.
        return {
            "id": self._spelled_id("judgement", scorer, scored_at or "", repr(score)),
            "type": "judgement",
            "schema_version": SCHEMA_VERSION,
            "source": SOURCE,
            "source_uri": self.source_uri,
            "observable": self.ctim_observable,
            "disposition": disposition,
            "disposition_name": DISPOSITION_NAMES[disposition],
            "priority": rating.priority,
            "confidence": rating.confidence,
            "severity": rating.severity,
            "reason": reason[:MAX_REASON],
            "tlp": TLP,
            "valid_time": self.valid_time(scored_at),
        }

    def _spelled_id(self, kind: str, *material: str) -> str:
        """The id of an entity of this observable: its spelling, then the rest of its material."""
        entity_id = transient_id(kind, self.observable.type, self.observable.value, *material)
        self.spelled_ids[entity_id] = (kind, "".join(ID_MATERIAL_SEPARATOR + part for part in material))
        return entity_id

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

    def indicator(self, concept: Concept, rating: Rating) -> dict:
        """An indicator that means the same for every observable: its id and its text depend only
        on the concept it names, so an XDR user can pivot on it across observables and requests."""
        return {
            "id": transient_id("indicator", "concept", concept.key),
            "type": "indicator",
            "schema_version": SCHEMA_VERSION,
            "producer": SOURCE,
            "source": SOURCE,
            "source_uri": self.options.ui_url,
            "title": f"Threatscore: {concept.title}"[:MAX_SHORT_STRING],
            "short_description": concept.short_description[:MAX_SHORT_STRING],
            "description": concept.description[:MAX_DESCRIPTION],
            "tags": [concept.key[:MAX_SHORT_STRING], *concept.names],
            "confidence": rating.confidence,
            "severity": rating.severity,
            "tlp": TLP,
            "valid_time": {
                "start_time": ctim_time(self.now),
                "end_time": ctim_time(self.now + timedelta(days=self.options.valid_days)),
            },
        }

    def sighting(
        self, first_seen: str | None, last_seen: str | None, data: dict | None, rating: Rating
    ) -> dict | None:
        """Threatscore saw the observable: from `first_seen` to `last_seen` (the one known for
        both when the other is missing). None when Threatscore does not say when it saw it."""
        times = sorted(parsed_time(moment)[0] for moment in (first_seen, last_seen) if moment is not None)
        if not times:
            return None
        start, end = times[0], times[-1]
        when = (
            f"on {start.date().isoformat()}"
            if start.date() == end.date()
            else f"between {start.date().isoformat()} and {end.date().isoformat()}"
        )
        sighting = {
            "id": self._spelled_id("sighting"),
            "type": "sighting",
            "schema_version": SCHEMA_VERSION,
            "source": SOURCE,
            "source_uri": self.source_uri,
            "title": f"Seen by Threatscore {when}",
            "short_description": f"Threatscore's observation: it saw this observable {when}.",
            "description": (
                f"Threatscore's own observation, not one of this organisation's: Threatscore saw "
                f"this observable {when} (its first and last sighting). The severity is the "
                f"observable's: "
                f"{rating.severity}."
            ),
            "confidence": rating.confidence,
            "severity": rating.severity,
            "count": 1,
            "internal": False,
            "observables": [self.ctim_observable],
            "observed_time": {"start_time": ctim_time(start), "end_time": ctim_time(end)},
            "tlp": TLP,
        }
        if data is not None:
            sighting["data"] = data
        return sighting

    def relationship(self, relationship_type: str, source_ref: str, target_ref: str) -> dict:
        return {
            "id": relationship_id(relationship_type, source_ref, target_ref),
            "type": "relationship",
            "schema_version": SCHEMA_VERSION,
            "relationship_type": relationship_type,
            "source_ref": source_ref,
            "target_ref": target_ref,
            "source": SOURCE,
            "tlp": TLP,
        }


def relationship_id(relationship_type: str, source_ref: str, target_ref: str) -> str:
    return transient_id("relationship", relationship_type, source_ref, target_ref)


def _fresh_relationship_id(relationship_type: str, source_ref: str, target_ref: str) -> str:
    """`relationship_id`, not remembered: a new spelling's ids are new."""
    return _id_of("relationship", ID_MATERIAL_SEPARATOR.join((relationship_type, source_ref, target_ref)))


def respelled(entities: ObservableEntities, observable: Observable) -> ObservableEntities:
    """What mapping the same answer for `observable`, another spelling of the lookup `entities`
    were mapped for (the same `cache_key`), gives, without mapping it again: the entities with
    `observable` for the observable and the ids derived from it, the relationships between them
    pointing at those ids. The indicators (one per concept, the same for every observable) are
    the same objects; so are the values nested in the copies, which are shared read-only."""
    # The id's material starts with the spelling; not remembered (`transient_id`): it is new.
    spelling = ID_MATERIAL_SEPARATOR.join((observable.type, observable.value))
    new_ids = {
        entity_id: _id_of(kind, spelling + rest) for entity_id, (kind, rest) in entities.spelled_ids.items()
    }
    ctim_observable = observable.to_ctim()

    def relationship(doc: dict) -> dict:
        source_ref = new_ids.get(doc["source_ref"], doc["source_ref"])
        target_ref = new_ids.get(doc["target_ref"], doc["target_ref"])
        return {
            **doc,
            "id": _fresh_relationship_id(doc["relationship_type"], source_ref, target_ref),
            "source_ref": source_ref,
            "target_ref": target_ref,
        }

    return ObservableEntities(
        verdicts=[
            {**doc, "observable": ctim_observable, "judgement_id": new_ids[doc["judgement_id"]]}
            for doc in entities.verdicts
        ],
        judgements=[
            {**doc, "id": new_ids[doc["id"]], "observable": ctim_observable} for doc in entities.judgements
        ],
        indicators=list(entities.indicators),
        sightings=[
            {**doc, "id": new_ids[doc["id"]], "observables": [ctim_observable]} for doc in entities.sightings
        ],
        relationships=[relationship(doc) for doc in entities.relationships],
        spelled_ids={new_ids[entity_id]: material for entity_id, material in entities.spelled_ids.items()},
    )


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
    return _transient_id_of(kind, ID_MATERIAL_SEPARATOR.join(material))


@functools.lru_cache(maxsize=8192)
def _transient_id_of(kind: str, material: str) -> str:
    """Remembered: a cached answer is mapped again on every request."""
    return _id_of(kind, material)


def _id_of(kind: str, material: str) -> str:
    # surrogatepass: a lone surrogate (valid in a JSON string from upstream) still has bytes.
    digest = hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()
    return f"transient:threatscore-{kind}-{digest}"
