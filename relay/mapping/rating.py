"""The rule that gives every CTIM entity its severity, confidence and priority. Pure.

Severity says what is at stake (the disposition, and how high the score is);
confidence says how much evidence stands behind it and how well it agrees
(`Support`); priority follows from the two, severity first, so that XDR sorts
what matters first. docs/ctim-mapping.md has the rule's tables; the tests
show each row.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from relay.mapping.dispositions import CLEAN, MALICIOUS, SUSPICIOUS, disposition_for

HIGH_SCORE = 0.75  # three quarters or more: a Malicious judgement is High
RECENT = timedelta(days=90)  # an analysis this old or younger, as of the lookup, is recent
BROAD_AGREEING = 3  # at least this many recent analyses agree ...
BROAD_SHARE = 0.75  # ... and at least this share of all of them: High confidence
SOME_AGREEING = 2  # at least this many agree, and more than half of all: Medium


class Support(enum.Enum):
    """How much evidence stands behind an entity, and how well it agrees."""

    BROAD = "High"  # several recent analyses, nearly all agreeing
    SOME = "Medium"  # more than one analysis, most agreeing (or a concept the relay describes)
    THIN = "Low"  # one analysis, none, or analyses that contradict each other (or an unknown concept)


@dataclass(frozen=True)
class Rating:
    severity: str
    confidence: str
    priority: int


SEVERITY_BASE = {"High": 90, "Medium": 70, "Low": 45, "Info": 25, "Unknown": 10}
CONFIDENCE_STEP = {"High": 5, "Medium": 0, "Low": -5}


@functools.lru_cache(maxsize=64)  # a handful of inputs, asked for every entity
def rate(disposition: int, high: bool, support: Support) -> Rating:
    """`high`: a score of three quarters or more (for an indicator: a grave concept)."""
    if disposition == MALICIOUS:
        severity = "High" if high else "Medium"
    elif disposition == SUSPICIOUS:
        severity = "Low"
    elif disposition == CLEAN:
        severity = "Info"
    else:  # Common, Unknown: nothing to say of the stake
        severity = "Unknown"
    confidence = support.value
    return Rating(severity, confidence, SEVERITY_BASE[severity] + CONFIDENCE_STEP[confidence])


def is_high(score: float | None) -> bool:
    return score is not None and score >= HIGH_SCORE


@dataclass(frozen=True)
class Tally:
    """A set of analyses counted once: how many, and per disposition how many (and how many recent)."""

    total: int
    by_disposition: dict[int, tuple[int, int]]  # disposition -> (analyses, recent analyses)


def tally(analyses: Iterable[tuple[str, float]], now: datetime) -> Tally:
    """Count `analyses` ((ISO date, score) of each) once, as of the lookup `now`."""
    # A normalised answer's dates are ISO strings in one form (UTC, milliseconds): they compare
    # as the times they are, with no parsing.
    recent_since = (now - RECENT).astimezone(UTC).isoformat(timespec="milliseconds")
    total = 0
    counts: dict[int, list[int]] = {}
    for date, score in analyses:
        total += 1
        count = counts.setdefault(disposition_for(score), [0, 0])
        count[0] += 1
        if date >= recent_since:  # a date after the lookup is recent too
            count[1] += 1
    return Tally(total, {disposition: (found, recent) for disposition, (found, recent) in counts.items()})


def support_of(disposition: int, analyses: Tally) -> Support:
    """How well the analyses back `disposition`."""
    agreeing, recent_agreeing = analyses.by_disposition.get(disposition, (0, 0))
    if recent_agreeing >= BROAD_AGREEING and agreeing >= BROAD_SHARE * analyses.total:
        return Support.BROAD
    if agreeing >= SOME_AGREEING and agreeing * 2 > analyses.total:
        return Support.SOME
    return Support.THIN
