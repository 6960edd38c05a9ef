"""The v3 API's answer (`V3Answer`) to CTIM. Pure functions.

Per found observable:
- judgements: the aggregate first (the verdict names it, so the entities limit
  never cuts it), then one per scored analysis row, newest first;
- one verdict, from Threatscore's level when it is one it defines, else from
  the score's buckets;
- indicators: one per category and one per indicator flag that is true, each
  with an id that depends only on what it names (the same for every
  observable and request);
- one sighting: when Threatscore saw it, and what it says of it (where, whose);
- relationships: the sighting `sighting-of` each indicator, the aggregate
  judgement `based-on` each indicator.
"""

from __future__ import annotations

from datetime import datetime

from relay.mapping.ctim import (
    CLEAN,
    MALICIOUS,
    SUSPICIOUS,
    EntityBuilder,
    MappingOptions,
    ObservableEntities,
    data_table,
    disposition_for,
    verdict,
)
from relay.observables import Observable
from relay.schemas import V3Answer

LEVEL_DISPOSITIONS = {"safe": CLEAN, "suspicious": SUSPICIOUS, "malicious": MALICIOUS}
# The flags in English, as analysts read them (`compromission` is French).
FLAG_NAMES = {"blocklist": "blocklist", "attack": "attack", "scan": "scan", "compromission": "compromise"}
FLAG_DESCRIPTIONS = {
    "blocklist": "Threatscore found it on a blocklist",
    "attack": "Threatscore saw it take part in attacks",
    "scan": "Threatscore saw it scanning",
    "compromise": "Threatscore considers it compromised",
}


def map_v3_answer(
    observable: Observable, answer: V3Answer, options: MappingOptions, now: datetime
) -> ObservableEntities:
    entities = ObservableEntities()
    build = EntityBuilder(observable, options, now)
    limit = options.entities_limit

    aggregate = _aggregate_judgement(build, answer)
    if aggregate is not None:
        entities.judgements.append(aggregate)
        entities.verdicts.append(verdict(aggregate))
    seen_ids = {judgement["id"] for judgement in entities.judgements}
    for row in answer["analysis"]:
        if len(entities.judgements) >= limit:
            break
        judgement = build.judgement(
            row["id"], row["date"], row["score"], f"Analysis: {row['id']}", disposition_for(row["score"])
        )
        if judgement["id"] not in seen_ids:  # one scorer, one date, one score: one judgement
            seen_ids.add(judgement["id"])
            entities.judgements.append(judgement)

    indicators = [
        build.indicator(
            "category", name, f"Threatscore category: {name}", f"Threatscore classifies it as {name}"
        )
        for name in answer["categories"]
    ]
    for flag in answer["flags"]:
        name = FLAG_NAMES.get(flag, flag)
        description = FLAG_DESCRIPTIONS.get(name, f"Threatscore flags it: {name}")
        indicators.append(build.indicator("indicator", name, f"Threatscore indicator: {name}", description))
    entities.indicators = indicators[:limit]

    sighting = build.sighting(answer["first_seen"], answer["last_seen"], _what_threatscore_says(answer))
    entities.sightings.append(sighting)

    # Only the indicators kept: a relationship never names an indicator the limit cut.
    for indicator in entities.indicators:
        entities.relationships.append(build.relationship("sighting-of", sighting["id"], indicator["id"]))
        if aggregate is not None:
            entities.relationships.append(build.relationship("based-on", aggregate["id"], indicator["id"]))
    del entities.relationships[limit:]
    return entities


def _aggregate_judgement(build: EntityBuilder, answer: V3Answer) -> dict | None:
    """From Threatscore's level when it is one of its three words, else from the score."""
    score, level = answer["score"], answer["level"]
    disposition = LEVEL_DISPOSITIONS.get(level or "")
    if disposition is None:
        if score is None:
            return None  # a level the relay does not know, and no score to bucket
        disposition = disposition_for(score)
    shown = f"{score * 100:.1f} %" if score is not None else "no score"
    reason = f"Threatscore score {shown} ({level or 'no level'})"
    if answer["categories"]:
        reason += f"; categories: {', '.join(answer['categories'])}"
    # Dated by the newest analysis, else by when Threatscore last saw it, else undated.
    scored_at = answer["analysis"][0]["date"] if answer["analysis"] else answer["last_seen"]
    return build.judgement("aggregate", scored_at, score, reason, disposition)


def _what_threatscore_says(answer: V3Answer) -> dict | None:
    return data_table(
        [
            ("Country", answer["country"]),
            ("City", answer["city"]),
            ("ASN", None if answer["asn"] is None else str(answer["asn"])),
            ("AS organisation", answer["as_organization"]),
            ("Tags", ", ".join(answer["tags"])),
        ]
    )
