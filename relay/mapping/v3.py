"""The v3 API's answer (`V3Answer`) to CTIM. Pure functions.

Per found observable:
- judgements: the aggregate first (the verdict names it, so the entities limit
  never cuts it), then one per scored analysis row, newest first, each saying
  which analysis found what, when;
- one verdict, from Threatscore's level when it is one it defines, else from
  the score's buckets;
- indicators: one per concept (a category and a flag that name the same thing
  are one), each with an id and a text that depend only on the concept (the
  same for every observable and request);
- a sighting when Threatscore says when it saw the value: between which dates,
  and what it says of it (where, whose);
- relationships: the sighting `sighting-of` each indicator, the aggregate
  judgement `based-on` each indicator.

Severity, confidence and priority come from `relay.mapping.rating`.
"""

from __future__ import annotations

from datetime import datetime

from relay.mapping.ctim import EntityBuilder, MappingOptions, ObservableEntities, data_table, verdict
from relay.mapping.dispositions import UNKNOWN
from relay.mapping.facts import assessment, concepts
from relay.mapping.rating import Support, is_high, rate, support_of, tally
from relay.mapping.texts import aggregate_reason, analysis_reason
from relay.observables import Observable
from relay.schemas import V3Answer


def map_v3_answer(
    observable: Observable, answer: V3Answer, options: MappingOptions, now: datetime
) -> ObservableEntities:
    build = EntityBuilder(observable, options, now)
    entities = ObservableEntities(spelled_ids=build.spelled_ids)
    limit = options.entities_limit
    overall = assessment(answer)
    said = concepts(answer)

    aggregate = None
    if overall is not None:
        counted = tally(((analysis.date, analysis.score) for analysis in overall.analyses), now)
        observable_rating = rate(
            overall.disposition, is_high(overall.score), support_of(overall.disposition, counted)
        )
        aggregate = build.judgement(
            "aggregate",
            overall.date,
            overall.score,
            aggregate_reason(overall, said, counted),
            overall.disposition,
            observable_rating,
        )
        entities.judgements.append(aggregate)
        entities.verdicts.append(verdict(aggregate))
        seen_ids = {aggregate["id"]}
        for analysis in overall.analyses:
            if len(entities.judgements) >= limit:
                break
            disposition = analysis.disposition
            rating = rate(disposition, is_high(analysis.score), support_of(disposition, counted))
            judgement = build.judgement(
                analysis.scorer, analysis.date, analysis.score, analysis_reason(analysis), disposition, rating
            )
            if judgement["id"] not in seen_ids:  # one scorer, one date, one score: one judgement
                seen_ids.add(judgement["id"])
                entities.judgements.append(judgement)
    else:
        observable_rating = rate(UNKNOWN, False, Support.THIN)

    entities.indicators = [
        build.indicator(
            concept,
            rate(concept.disposition, concept.grave, Support.SOME if concept.known else Support.THIN),
        )
        for concept in said[:limit]
    ]

    sighting = build.sighting(
        answer["first_seen"], answer["last_seen"], _what_threatscore_says(answer), observable_rating
    )
    if sighting is not None:
        entities.sightings.append(sighting)

    # Only the indicators kept: a relationship never names an indicator the limit cut.
    for indicator in entities.indicators:
        if sighting is not None:
            entities.relationships.append(build.relationship("sighting-of", sighting["id"], indicator["id"]))
        if aggregate is not None:
            entities.relationships.append(build.relationship("based-on", aggregate["id"], indicator["id"]))
    del entities.relationships[limit:]
    return entities


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
