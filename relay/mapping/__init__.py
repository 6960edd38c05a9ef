"""The CTIM mapping: a normalised Threatscore answer in, CTIM entities out. No I/O.

`ctim` holds the entity builders both APIs share; `score` maps the score
API's answer and `v3` the v3 API's. `map_answer` picks by the API the answer
names (so an answer cached by the other backend is still mapped right).
`now` is the time of the lookup, an input of each call.
"""

from __future__ import annotations

from datetime import datetime

from relay.mapping.ctim import MappingOptions, ObservableEntities, disposition_for, search_url
from relay.mapping.score import map_score_answer
from relay.mapping.v3 import map_v3_answer
from relay.observables import Observable

__all__ = ["MappingOptions", "ObservableEntities", "disposition_for", "map_answer", "search_url"]


def map_answer(
    observable: Observable, answer: dict | None, options: MappingOptions, now: datetime
) -> ObservableEntities:
    """CTIM entities for one observable; nothing for "no data"."""
    if not answer:
        return ObservableEntities()
    if answer.get("api") == "v3":
        return map_v3_answer(observable, answer, options, now)
    return map_score_answer(observable, answer, options, now)
