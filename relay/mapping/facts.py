"""What a normalised Threatscore answer says, read once, for the CTIM mapping and the command line. Pure.

`answer_facts` gives the few facts a table shows (score, verdict, concepts);
`assessment` gives Threatscore's overall judgement with the analyses behind
it, which the CTIM mapping turns into judgements and a verdict. Both read the
answer the same way, so a table and the CTIM answer never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from relay.mapping.concepts import Concept, concepts_of
from relay.mapping.dispositions import DISPOSITION_NAMES, LEVEL_DISPOSITIONS, disposition_for


@dataclass(frozen=True)
class AnswerFacts:
    score_percent: float | None  # Threatscore's overall score, as a percentage (0-100)
    disposition_name: str  # the verdict's CTIM disposition name, e.g. "Malicious"
    categories: tuple[str, ...]  # the concepts of the observable's indicators, in their order


class Analysis(NamedTuple):  # a NamedTuple: an answer may hold a thousand of them
    """One scoring behind Threatscore's overall score: a v3 analysis row or a score API engine."""

    scorer: str  # the analysis id or the engine id
    date: str  # ISO 8601, UTC
    score: float

    @property
    def disposition(self) -> int:
        return disposition_for(self.score)


@dataclass(frozen=True)
class Assessment:
    """Threatscore's overall judgement of a value: the observable's verdict."""

    score: float | None  # 0..1 (negative: clean)
    level: str | None  # Threatscore's own word for it, when it gave one
    disposition: int
    date: str | None  # when Threatscore judged it; None: it did not say
    analyses: tuple[Analysis, ...]  # the scorings behind it, newest first

    @property
    def level_word(self) -> str:
        return self.level or DISPOSITION_NAMES[self.disposition].lower()


def answer_facts(answer: dict | None) -> AnswerFacts | None:
    """The facts of a normalised answer (either API's); None when it gives no verdict ("no data")."""
    overall = assessment(answer)
    if overall is None:
        return None
    return AnswerFacts(
        score_percent=None if overall.score is None else overall.score * 100,
        disposition_name=DISPOSITION_NAMES[overall.disposition],
        categories=tuple(concept.key for concept in concepts(answer)),
    )


def assessment(answer: dict | None) -> Assessment | None:
    """Threatscore's overall judgement, or None: no data, or nothing to judge by."""
    if not answer:
        return None
    if answer.get("api") == "v3":
        return _v3_assessment(answer)
    return _score_assessment(answer)


def concepts(answer: dict | None) -> tuple[Concept, ...]:
    """One concept per thing Threatscore says of the value (the score API says none)."""
    if not answer or answer.get("api") != "v3":
        return ()
    return concepts_of(answer["categories"], answer["flags"])


def _v3_assessment(answer: dict) -> Assessment | None:
    """From Threatscore's level when it is one of its three words, else from the score."""
    score, level = answer["score"], answer["level"]
    disposition = LEVEL_DISPOSITIONS.get(level or "")
    if disposition is None:
        if score is None:
            return None  # a level the relay does not know, and no score to bucket
        disposition = disposition_for(score)
    rows = answer["analysis"]
    # Dated by the newest analysis, else by when Threatscore last saw it, else undated.
    date = rows[0]["date"] if rows else answer["last_seen"]
    # A row repeated (the same scorer, date and score) is one analysis.
    analyses = tuple(dict.fromkeys(Analysis(row["id"], row["date"], row["score"]) for row in rows))
    return Assessment(score, level, disposition, date, analyses)


def _score_assessment(answer: dict) -> Assessment | None:
    """The newest entry with a score; its engines are the analyses behind it."""
    newest = next((entry for entry in answer["scores"] if entry["score"] is not None), None)
    if newest is None:
        return None
    analyses = engine_analyses(newest)
    score = newest["score"]
    return Assessment(score, newest["level"], disposition_for(score), newest["date"], analyses)


def engine_analyses(entry: dict) -> tuple[Analysis, ...]:
    """The engines of a score API entry that gave a score; one repeated is one analysis."""
    return tuple(
        dict.fromkeys(
            Analysis(engine["engineId"], engine["date"], engine["score"])
            for engine in entry["details"]
            if engine["score"] is not None
        )
    )
