"""The severity/confidence/priority rule: each row of its tables in docs/ctim-mapping.md, shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from relay.mapping.concepts import concept_named
from relay.mapping.dispositions import CLEAN, MALICIOUS, SUSPICIOUS, UNKNOWN, disposition_for
from relay.mapping.rating import Support, is_high, rate, support_of, tally
from tests.conftest import ROOT

DOCS = (ROOT / "docs" / "ctim-mapping.md").read_text(encoding="utf-8")
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def rule_table(name: str) -> list[list[str]]:
    """The rows (cells) of the table after `<!-- rule: name -->`, its header and rule left out."""
    start = DOCS.index(f"<!-- rule: {name} -->")
    lines = []
    for line in DOCS[start:].splitlines()[1:]:
        if not line.startswith("|"):
            break
        lines.append([cell.strip() for cell in line.strip("|").split("|")])
    return lines[2:]


def days_ago(days: float) -> str:
    """A date as a normalised answer holds it."""
    return (NOW - timedelta(days=days)).isoformat(timespec="milliseconds")


def judged(disposition: int, score: float | None, analyses: list[tuple[float, float]]) -> str:
    """The severity of a judgement with `score`, behind which stand `analyses` ((days old, score))."""
    counted = tally([(days_ago(age), found) for age, found in analyses], NOW)
    return rate(disposition, is_high(score), support_of(disposition, counted)).severity


def indicator(name: str):
    concept = concept_named(name)
    return rate(concept.disposition, concept.grave, Support.SOME if concept.known else Support.THIN)


# Each row of the severity table: examples that fall in it.
SEVERITY_EXAMPLES = {
    ("Malicious", "75 % or more, or a grave concept (phishing, malware, botnet)"): [
        judged(MALICIOUS, 0.75, []),
        judged(MALICIOUS, 0.99, [(1, 0.99)]),
        indicator("phishing").severity,
        indicator("malware").severity,
        indicator("botnet").severity,
    ],
    ("Malicious", "below 75 %, or no score"): [
        judged(MALICIOUS, 0.7499, [(1, 0.7)]),
        judged(MALICIOUS, None, []),
        indicator("malicious_host").severity,
        indicator("compromission").severity,
    ],
    ("Suspicious", "any"): [
        judged(SUSPICIOUS, 0.44, []),
        judged(SUSPICIOUS, 0.9, []),
        indicator("spam").severity,
    ],
    ("Clean", "any"): [
        judged(CLEAN, 0.05, [(1, 0.0)] * 5),
        judged(CLEAN, 0.9, []),  # Threatscore's level "safe" over a high score: still not Medium
        judged(CLEAN, -1, []),
        indicator("general_business").severity,
    ],
    ("none (no verdict), or a concept the relay does not describe", "any"): [
        judged(UNKNOWN, None, []),
        indicator("crypto_mining").severity,
    ],
}


def test_the_severity_table_is_the_rule():
    rows = rule_table("severity")
    assert [tuple(row[:2]) for row in rows] == list(SEVERITY_EXAMPLES)
    for disposition, score, severity in rows:
        assert set(SEVERITY_EXAMPLES[(disposition, score)]) == {severity}, (disposition, score)


def test_a_clean_entity_is_never_medium_or_high():
    for score in (-5, -0.1, 0, 0.25, 0.5, 0.75, 1, 7.5):
        for support in Support:
            assert rate(CLEAN, is_high(score), support).severity not in ("Medium", "High")


def supported(disposition: int, analyses: list[tuple[float, float]]) -> str:
    """The confidence in `disposition` of `analyses` ((days old, score) of each)."""
    counted = tally([(days_ago(age), score) for age, score in analyses], NOW)
    return support_of(disposition, counted).value


M, S, C = 0.9, 0.4, 0.1  # a malicious, a suspicious and a clean score
CONFIDENCE_EXAMPLES = {
    "at least 3 recent analyses agree, and at least three quarters of all agree": [
        supported(MALICIOUS, [(1, M), (8, M), (89, M)]),
        supported(MALICIOUS, [(1, M), (2, M), (3, M), (400, C)]),  # 3 of 4
        supported(MALICIOUS, [(-3, M), (0, M), (90, M)]),  # dated after the lookup; exactly 90 days
        supported(CLEAN, [(0, C)] * 19),
    ],
    "at least 2 analyses agree, and more than half of all": [
        supported(MALICIOUS, [(1, M), (1, M)]),
        supported(MALICIOUS, [(1, M), (2, M), (3, M), (4, C), (5, S)]),  # 3 of 5: not three quarters
        supported(MALICIOUS, [(91, M), (200, M), (300, M)]),  # all agree, but not recent
        supported(SUSPICIOUS, [(1, S), (1, S), (1, C)]),
    ],
    "less: a single analysis, none listed, or analyses that contradict each other": [
        supported(MALICIOUS, [(1, M)]),
        supported(MALICIOUS, []),
        supported(MALICIOUS, [(1, M), (1, M), (1, C), (1, S)]),  # half: no majority
        supported(SUSPICIOUS, [(1, M), (1, M), (1, S), (1, S), (1, C), (1, C)]),  # 203.0.113.5's
        supported(CLEAN, [(1, M), (1, M), (1, M)]),  # contradicted by all
    ],
    "an indicator of a concept the relay describes": [
        indicator(name).confidence for name in ("phishing", "spam", "blocklist", "scan", "compromission")
    ],
    "an indicator of a concept the relay does not describe": [indicator("crypto_mining").confidence],
}


def test_the_confidence_table_is_the_rule():
    rows = rule_table("confidence")
    assert [row[0] for row in rows] == list(CONFIDENCE_EXAMPLES)
    for evidence, confidence in rows:
        assert set(CONFIDENCE_EXAMPLES[evidence]) == {confidence}, evidence


def test_several_recent_agreeing_analyses_give_more_confidence_than_one_or_a_contradicted_few():
    many = supported(MALICIOUS, [(1, M), (2, M), (3, M)])
    assert [many, supported(MALICIOUS, [(1, M)]), supported(MALICIOUS, [(1, M), (1, C)])] == [
        "High",
        "Low",
        "Low",
    ]


# Inputs that give each severity.
STAKES = {
    "High": (MALICIOUS, True),
    "Medium": (MALICIOUS, False),
    "Low": (SUSPICIOUS, False),
    "Info": (CLEAN, False),
    "Unknown": (UNKNOWN, False),
}


@pytest.mark.parametrize("row", rule_table("priority"), ids=lambda row: row[0])
def test_each_row_of_the_priority_table(row):
    severity, *priorities = row
    disposition, high = STAKES[severity]
    got = [rate(disposition, high, support) for support in (Support.BROAD, Support.SOME, Support.THIN)]
    assert [(r.severity, r.confidence) for r in got] == [(severity, c) for c in ("High", "Medium", "Low")]
    assert [str(r.priority) for r in got] == priorities


def test_priority_sorts_severity_first_then_confidence():
    ratings = [rate(*STAKES[severity], support) for severity in STAKES for support in Support]
    priorities = [rating.priority for rating in ratings]
    assert priorities == sorted(priorities, reverse=True)  # the order of the table: no ties
    assert len(set(priorities)) == len(priorities)
    assert all(0 <= priority <= 100 for priority in priorities)


def test_the_score_buckets_and_the_high_mark_of_the_docs():
    assert [disposition_for(score) for score in (-1, 0.25, 0.2501, 0.5, 0.5001)] == [1, 1, 3, 3, 2]
    assert (is_high(0.7499), is_high(0.75), is_high(None)) == (False, True, False)
    assert re.search(r"\| Malicious \| 75 % or more", DOCS)
