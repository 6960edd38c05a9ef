"""The CTIM mapping: a normalised Threatscore answer in, CTIM entities out. No I/O.

`facts` reads what an answer says (the verdict, the score, the concepts);
`rating` is the rule for severity, confidence and priority; `concepts` says
what Threatscore's categories and flags mean; `ctim` holds the entity
builders both APIs share; `score` maps the score API's answer and `v3` the v3
API's. `map_answer` picks by the API the answer names (so an answer cached by
the other backend is still mapped right). `now` is the time of the lookup, an
input of each call. `respelled` gives another spelling of the same lookup the
entities mapping it would give, from those of one spelling.
"""

from __future__ import annotations

from datetime import datetime

from relay.mapping.ctim import MappingOptions, ObservableEntities, respelled, search_url
from relay.mapping.dispositions import disposition_for
from relay.mapping.facts import AnswerFacts, answer_facts
from relay.mapping.score import map_score_answer
from relay.mapping.v3 import map_v3_answer
from relay.observables import Observable

__all__ = [
    "AnswerFacts",
    "MappingOptions",
    "ObservableEntities",
    "answer_facts",
    "disposition_for",
    "map_answer",
    "respelled",
    "search_url",
]


def map_answer(
    observable: Observable, answer: dict | None, options: MappingOptions, now: datetime
) -> ObservableEntities:
    """CTIM entities for one observable; nothing for "no data"."""
    if not answer:
        return ObservableEntities()
    if answer.get("api") == "v3":
        return map_v3_answer(observable, answer, options, now)
    return map_score_answer(observable, answer, options, now)
