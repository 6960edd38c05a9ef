"""The sentences an analyst reads in a judgement's reason. Pure.

Built from the same facts as the verdict and the command line's table
(`relay.mapping.facts`), never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.mapping.concepts import Concept
from relay.mapping.dispositions import DISPOSITION_NAMES
from relay.mapping.facts import Analysis, Assessment
from relay.mapping.rating import Tally


def percent(score: float) -> str:
    """A 0..1 score as Threatscore's UI shows it: `44.0 %`."""
    return f"{score * 100:.1f} %"


def aggregate_reason(overall: Assessment, concepts: Sequence[Concept], analyses: Tally) -> str:
    """e.g. `Threatscore score 44.0 % (suspicious) from 6 analyses, 2 of which agree; categories: spam`."""
    said = (
        f"Threatscore score {percent(overall.score)}"
        if overall.score is not None
        else "Threatscore: no score"
    )
    agreeing, _recent = analyses.by_disposition.get(overall.disposition, (0, 0))
    reason = f"{said} ({overall.level_word}) {_agreement(analyses.total, agreeing)}"
    if concepts:
        reason += f"; categories: {', '.join(concept.key for concept in concepts)}"
    return reason


def _agreement(total: int, agreeing: int) -> str:
    if total == 0:
        return "with no analysis listed"
    if total == 1:
        return "from 1 analysis, which agrees" if agreeing else "from 1 analysis, which does not agree"
    if agreeing == 0:
        return f"from {total} analyses, none of which agrees"
    return f"from {total} analyses, {agreeing} of which {'agrees' if agreeing == 1 else 'agree'}"


def analysis_reason(analysis: Analysis, kind: str = "analysis") -> str:
    """e.g. `Threatscore analysis 82390d93 on 2026-10-30: 62.0 % (malicious)`; `kind` "engine" for
    the score API's engines."""
    word = DISPOSITION_NAMES[analysis.disposition].lower()
    found = f"{percent(analysis.score)} ({word})"
    return f"Threatscore {kind} {analysis.scorer[:8]} on {analysis.date[:10]}: {found}"
