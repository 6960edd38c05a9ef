"""The few facts of a normalised answer that read the same whatever the backend (a placeholder
computed from `relay.schemas`' normalised answers; the mapping's own version replaces it).

The command line's table reads its score from here, never from a judgement's English reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.mapping.ctim import DISPOSITION_NAMES, disposition_for
from relay.mapping.v3 import FLAG_NAMES, LEVEL_DISPOSITIONS


@dataclass(frozen=True)
class AnswerFacts:
    score_percent: float | None  # Threatscore's score, 0..100; None when it gave none
    disposition_name: str  # CTIM's word: Clean, Malicious, Suspicious, Unknown...
    categories: tuple[str, ...]


def answer_facts(answer: dict | None) -> AnswerFacts | None:
    """The facts of the normalised answer as cached (`answer.get("api")` says the backend);
    None for "no data"."""
    if not answer:
        return None
    if answer.get("api") == "v3":
        score = answer.get("score")
        disposition = LEVEL_DISPOSITIONS.get(answer.get("level") or "")
        if disposition is None:
            disposition = disposition_for(score) if score is not None else 5
        flags = tuple(FLAG_NAMES.get(flag, flag) for flag in answer.get("flags", ()))
        return AnswerFacts(
            score_percent=None if score is None else score * 100,
            disposition_name=DISPOSITION_NAMES[disposition],
            categories=tuple(answer.get("categories", ())) + flags,
        )
    newest = next((entry for entry in answer.get("scores", ()) if entry["score"] is not None), None)
    if newest is None:
        return AnswerFacts(score_percent=None, disposition_name=DISPOSITION_NAMES[5], categories=())
    return AnswerFacts(
        score_percent=newest["score"] * 100,
        disposition_name=DISPOSITION_NAMES[disposition_for(newest["score"])],
        categories=(),
    )
