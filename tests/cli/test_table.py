"""The lookup's table and summary: what each row says, the same score for both backends,
colours and the terminal's width."""

from __future__ import annotations

import pytest

from relay.cli.table import (
    ANSWERED,
    FAILED,
    NOT_LOOKED_UP,
    Row,
    Style,
    looked_up_rows,
    render_table,
    style_for,
    summary,
)
from relay.observables import Observable
from tests.cli import Terminal

V3_ANSWER = {
    "api": "v3",
    "score": 0.85,
    "level": "malicious",
    "categories": ["phishing"],
    "flags": ["compromission"],
    "country": None,
    "city": None,
    "asn": None,
    "as_organization": None,
    "first_seen": None,
    "last_seen": None,
    "analysis": [],
    "tags": [],
}


def test_the_table_reads_score_and_categories_from_the_answers_facts():
    # The verdict and the judgements count come from the CTIM answer, as XDR shows it; the score
    # and the categories from the answer's facts, never from the words of a reason or a title.
    observable = {"type": "url", "value": "http://phish.example/login"}
    answer = {
        "data": {
            "verdicts": {
                "count": 1,
                "docs": [
                    {"observable": observable, "disposition_name": "Malicious", "judgement_id": "j-aggregate"}
                ],
            },
            "judgements": {
                "count": 2,
                "docs": [
                    {
                        "id": "j-aggregate",
                        "observable": observable,
                        "reason": "whatever the words say: score 12; categories: spam",
                    },
                    {"id": "j-row", "observable": observable, "reason": "Analysis 1f2e: score 0.85"},
                ],
            },
        }
    }
    looked_up = [Observable("url", observable["value"], observable["value"])]
    # The score is the answer's fact, not words of a judgement's reason.
    answers = {looked_up[0].cache_key: V3_ANSWER}
    [row] = looked_up_rows([("hxxp://phish[.]example/login", looked_up[0], "https://ui/x")], answer, answers)

    assert (row.verdict, row.score, row.categories, row.judgements) == (
        "Malicious",
        "85.0 %",
        "phishing, compromise",  # `compromission` is the concept `compromise`
        "2",
    )
    assert row.link == "https://ui/x" and row.message == "" and row.outcome == ANSWERED
    assert row.observable == "hxxp://phish[.]example/login"  # as given


ROWS = [
    Row(
        "198.51.100.7",
        "ip",
        verdict="Malicious",
        score="92.0 %",
        categories="malicious_host, blocklist, flag: blocklist, flag: attack",
        judgements="4",
        link="https://console.threatscore.cyberprotect.cloud/search?query=198.51.100.7",
    ),
    Row(
        "203.0.113.5",
        "ip",
        verdict="Suspicious",
        score="44.0 %",
        categories="spam",
        judgements="7",
        link="https://console.threatscore.cyberprotect.cloud/search?query=203.0.113.5",
    ),
    Row(
        "example.com",
        "domain",
        verdict="Clean",
        score="5.0 %",
        judgements="4",
        link="https://console.threatscore.cyberprotect.cloud/search?query=example.com",
    ),
    Row(
        "192.0.2.1",
        "ip",
        verdict="no data",
        judgements="0",
        link="https://console.threatscore.cyberprotect.cloud/search?query=192.0.2.1",
    ),
    Row(
        "192.0.2.50",
        "ip",
        outcome=FAILED,
        message="service unavailable: Threatscore is unavailable (HTTP 503)",
    ),
    Row(
        "10.0.0.0/8",
        "?",
        outcome=NOT_LOOKED_UP,
        message="a network range (IPv4 CIDR): Threatscore looks up one address at a time",
    ),
]


def test_a_plain_table_is_whole_and_without_colour():
    table = render_table(ROWS)
    assert "\033" not in table
    assert "https://console.threatscore.cyberprotect.cloud/search?query=198.51.100.7" in table
    lines = table.splitlines()
    assert lines[5].split(None, 2)[2] == "error: service unavailable: Threatscore is unavailable (HTTP 503)"
    assert lines[6].split(None, 2)[2].startswith("not looked up: a network range")


def test_on_a_terminal_the_verdicts_are_in_colour():
    table = render_table(ROWS, Style(colour=True))
    lines = table.splitlines()
    assert "\033[31mMalicious " in lines[1] and "\033[33mSuspicious" in lines[2]
    assert "\033[32mClean " in lines[3] and "\033[" not in lines[4]  # no data: no colour
    # The colours do not move the columns: without them, the plain table.
    assert _without_colours(table) == render_table(ROWS)


def _without_colours(text: str) -> str:
    for code in ("\033[31m", "\033[33m", "\033[32m", "\033[0m"):
        text = text.replace(code, "")
    return text


@pytest.mark.parametrize("width", [200, 120, 100, 80, 64])  # 64: the narrowest these rows go
def test_rows_fit_the_terminals_width(width):
    table = render_table(ROWS, Style(width=width))
    assert max(len(line) for line in table.splitlines()) <= width
    verdicts = [line.split()[2] for line in table.splitlines()[1:5]]
    assert verdicts == ["Malicious", "Suspicious", "Clean", "no"]  # what matters stays
    # A reason is wrapped under itself, never cut.
    said = " ".join(line.strip() for line in table.split("not looked up: ")[1].splitlines())
    assert said == ROWS[-1].message


def test_a_narrow_terminal_loses_the_link_before_the_verdicts_and_cuts_with_an_ellipsis():
    table = render_table(ROWS, Style(width=100))
    assert "Threatscore link" not in table and "https://" not in table
    assert "malicious_host, blocklist, flag: blocklist, f…" in table  # the room the link left
    assert render_table(ROWS, Style(width=400)) == render_table(ROWS)  # room enough: the whole table


def test_style_colours_and_fits_only_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "90")
    assert style_for(Terminal(), {}) == Style(colour=True, width=90)
    assert style_for(Terminal(), {"NO_COLOR": "1"}) == Style(colour=False, width=90)
    assert style_for(Terminal(), {"NO_COLOR": ""}) == Style(colour=True, width=90)  # empty: not set
    import io

    assert style_for(io.StringIO(), {}) == Style()


def test_the_summary_counts_each_verdict_the_failed_and_the_not_looked_up():
    assert summary(ROWS) == (
        "6 values: 1 malicious, 1 suspicious, 1 clean, 1 no data, 1 failed, 1 not looked up"
    )
    assert (
        summary(ROWS[:1])
        == "1 value: 1 malicious, 0 suspicious, 0 clean, 0 no data, 0 failed, 0 not looked up"
    )
    unknown = [Row("x.example", "domain", verdict="Unknown")]
    assert "1 unknown" in summary(unknown)
    coloured = summary(ROWS, Style(colour=True))
    assert "\033[31m1 malicious\033[0m" in coloured and _without_colours(coloured) == summary(ROWS)


def test_the_score_reads_the_same_for_both_backends():
    verdict_answer = {
        "data": {
            "verdicts": {
                "count": 2,
                "docs": [
                    {
                        "observable": {"type": "ip", "value": value},
                        "disposition_name": "Malicious",
                        "judgement_id": "j",
                    }
                    for value in ("198.51.100.7", "198.51.100.8")
                ],
            }
        }
    }
    looked_up = [
        Observable("ip", "198.51.100.7", "198.51.100.7"),
        Observable("ip", "198.51.100.8", "198.51.100.8"),
    ]
    score_answer = {
        "api": "score",
        "scores": [{"date": "2026-11-20T09:12:44.301Z", "score": 0.92, "level": None, "details": []}],
    }
    answers = {looked_up[0].cache_key: {**V3_ANSWER, "score": 0.92}, looked_up[1].cache_key: score_answer}
    rows = looked_up_rows([(o.value, o, "") for o in looked_up], verdict_answer, answers)
    assert [row.score for row in rows] == ["92.0 %", "92.0 %"]
