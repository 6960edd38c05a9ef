"""The score API's answer (`ScoreAnswer`) to CTIM. Pure functions.

Per observable: one judgement for the aggregate score of the newest scored
entry (listed first, so the entities limit never cuts the judgement the
verdict points to), one judgement per engine score of every entry (newest
entry first), each saying which engine found what, when, and one verdict
derived from the aggregate. A 2018 entry has no engines: its aggregate stands
alone. Severity, confidence and priority come from `relay.mapping.rating`,
each engine weighed against the other engines of its own entry.
"""

from __future__ import annotations

from datetime import datetime

from relay.mapping.ctim import EntityBuilder, MappingOptions, ObservableEntities, verdict
from relay.mapping.facts import assessment, engine_analyses
from relay.mapping.rating import is_high, rate, support_of, tally
from relay.mapping.texts import aggregate_reason, analysis_reason
from relay.observables import Observable
from relay.schemas import ScoreAnswer


def map_score_answer(
    observable: Observable, answer: ScoreAnswer, options: MappingOptions, now: datetime
) -> ObservableEntities:
    build = EntityBuilder(observable, options, now)
    entities = ObservableEntities(spelled_ids=build.spelled_ids)
    overall = assessment(answer)
    if overall is not None:
        counted = tally(((analysis.date, analysis.score) for analysis in overall.analyses), now)
        rating = rate(overall.disposition, is_high(overall.score), support_of(overall.disposition, counted))
        aggregate = build.judgement(
            "aggregate",
            overall.date,
            overall.score,
            aggregate_reason(overall, (), counted),
            overall.disposition,
            rating,
        )
        entities.judgements.append(aggregate)
        entities.verdicts.append(verdict(aggregate))
    seen_ids = {judgement["id"] for judgement in entities.judgements}
    for entry in answer["scores"]:
        engines = engine_analyses(entry)
        counted = tally(((engine.date, engine.score) for engine in engines), now)
        for engine in engines:
            if len(entities.judgements) >= options.entities_limit:
                return entities  # the rest would be cut anyway
            disposition = engine.disposition
            rating = rate(disposition, is_high(engine.score), support_of(disposition, counted))
            judgement = build.judgement(
                engine.scorer,
                engine.date,
                engine.score,
                analysis_reason(engine, "engine"),
                disposition,
                rating,
            )
            if judgement["id"] not in seen_ids:  # one engine, one date, one score: one judgement
                seen_ids.add(judgement["id"])
                entities.judgements.append(judgement)
    return entities
