"""The score API's answer (`ScoreAnswer`) to CTIM. Pure functions.

Per observable: one judgement for the aggregate score of the newest scored
entry (listed first, so the entities limit never cuts the judgement the
verdict points to), one judgement per engine score of every entry (newest
entry first), and one verdict derived from the aggregate. A 2018 entry has no
engines: its aggregate stands alone.
"""

from __future__ import annotations

from datetime import datetime

from relay.mapping.ctim import (
    DISPOSITION_NAMES,
    EntityBuilder,
    MappingOptions,
    ObservableEntities,
    disposition_for,
    verdict,
)
from relay.observables import Observable
from relay.schemas import ScoreAnswer


def map_score_answer(
    observable: Observable, answer: ScoreAnswer, options: MappingOptions, now: datetime
) -> ObservableEntities:
    entities = ObservableEntities()
    build = EntityBuilder(observable, options, now)
    entries = answer["scores"]
    newest_scored = next((entry for entry in entries if entry["score"] is not None), None)
    if newest_scored is not None:
        disposition = disposition_for(newest_scored["score"])
        level = newest_scored["level"] or DISPOSITION_NAMES[disposition].lower()
        reason = f"Threatscore score {newest_scored['score']:.2f} ({level})"
        aggregate = build.judgement(
            "aggregate", newest_scored["date"], newest_scored["score"], reason, disposition
        )
        entities.judgements.append(aggregate)
        entities.verdicts.append(verdict(aggregate))
    for entry in entries:
        for engine in entry["details"]:
            if len(entities.judgements) >= options.entities_limit:
                return entities  # the rest would be cut anyway
            if engine["score"] is not None:
                entities.judgements.append(
                    build.judgement(
                        engine["engineId"],
                        engine["date"],
                        engine["score"],
                        f"Engine: {engine['engineId']}",
                        disposition_for(engine["score"]),
                    )
                )
    return entities
