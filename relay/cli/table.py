"""The lookup's table and its summary line.

One row per value asked, in order: the verdict, the score, the categories and flags,
the judgements and the Threatscore link of a value answered; the error of a value
that failed; why a value was not looked up. The score and the categories are read
from the answer's facts (`relay.mapping.facts`, the ones the CTIM mapping is made
from), the same number and format for both backends; the verdict and the judgements
from the CTIM answer, as XDR shows it.

On a terminal the verdicts are in colour and the rows fit its width; piped, or
with NO_COLOR set, the table is plain and whole.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TextIO

from relay.mapping.facts import answer_facts
from relay.observables import Observable
from relay.text import escaped

ANSWERED, FAILED, NOT_LOOKED_UP = "answered", "failed", "not looked up"
NO_DATA = "no data"


@dataclass
class Row:
    observable: str  # as given
    type: str
    outcome: str = ANSWERED
    verdict: str = ""
    score: str = ""
    categories: str = ""
    judgements: str = ""
    link: str = ""
    message: str = ""  # the error, or why it was not looked up


def not_looked_up(observable: str, observable_type: str | None, reason: str) -> Row:
    return Row(observable, observable_type or "?", outcome=NOT_LOOKED_UP, message=reason)


def looked_up_rows(
    looked_up: list[tuple[str, Observable, str]], answer: dict, answers: Mapping[str, dict | None]
) -> list[Row]:
    """A row for each value looked up: (as given, its observable, its Threatscore link), from the
    relay's CTIM `answer` and Threatscore's normalised `answers` by `Observable.cache_key`."""
    data = answer.get("data", {})
    verdicts = {_key(doc["observable"]): doc for doc in _docs(data, "verdicts")}
    judgements = _docs(data, "judgements")
    errors = _errors_by_value(answer.get("errors", []), [observable.value for _, observable, _ in looked_up])
    rows: list[Row] = []
    for given, observable, link in looked_up:
        row = Row(given, observable.type, link=link)
        rows.append(row)
        if observable.value in errors:
            row.outcome, row.message = FAILED, errors[observable.value]
            continue
        key = (observable.type, observable.value)
        row.judgements = str(sum(1 for doc in judgements if _key(doc.get("observable", {})) == key))
        verdict = verdicts.get(key)
        if verdict is None:
            row.verdict = NO_DATA
            continue
        row.verdict = verdict.get("disposition_name", "")
        facts = answer_facts(answers.get(observable.cache_key))
        if facts is not None:
            row.score = "" if facts.score_percent is None else f"{facts.score_percent:.1f} %"
            row.categories = ", ".join(facts.categories)
    return rows


def _docs(data: Any, kind: str) -> list[dict]:
    if not isinstance(data, dict):
        return []
    return list((data.get(kind) or {}).get("docs", []))


def _key(observable: dict) -> tuple[str, str]:
    return observable.get("type", ""), observable.get("value", "")


def _errors_by_value(errors: list[dict], values: list[str]) -> dict[str, str]:
    """Each error's `code: message` by the value it names (`"value: message"`), the longest value first."""
    found: dict[str, str] = {}
    for error in errors:
        message = error.get("message", "")
        for value in sorted(set(values), key=len, reverse=True):
            if message.startswith(f"{value}: ") and value not in found:
                found[value] = f"{error.get('code', 'error')}: {message[len(value) + 2 :]}"
                break
    return found


# --- how the table looks -----------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    colour: bool = False
    width: int | None = None  # fit the rows to this many columns; None: rows whole


def style_for(stream: TextIO, environ: Mapping[str, str] = os.environ) -> Style:
    """Colours and the terminal's width on a terminal; plain and whole when piped. NO_COLOR
    (any value but empty, as no-color.org says) turns the colours off."""
    if not stream.isatty():
        return Style()
    return Style(colour=not environ.get("NO_COLOR"), width=shutil.get_terminal_size().columns)


COLUMNS = (
    ("observable", "observable"),
    ("type", "type"),
    ("verdict", "verdict"),
    ("score", "score"),
    ("categories", "categories"),
    ("judgements", "judgements"),
    ("link", "Threatscore link"),
)
# SGR colours of the verdicts (and of their counts in the summary).
VERDICT_COLOURS = {"malicious": "31", "suspicious": "33", "clean": "32"}
GAP = "  "


def render_table(rows: Iterable[Row], style: Style = Style()) -> str:  # noqa: B008 - immutable
    """One line per value; a failed one shows its error, one not looked up why. What the
    table did not write itself (a value as typed) is shown escaped, never obeyed."""
    rows = [
        replace(row, **{name: escaped(value) for name, value in vars(row).items() if isinstance(value, str)})
        for row in rows
    ]
    widths = {name: len(title) for name, title in COLUMNS}
    for row in rows:
        for name, _title in COLUMNS if row.outcome == ANSWERED else COLUMNS[:2]:
            widths[name] = max(widths[name], len(getattr(row, name)))
    if style.width is not None:
        _fit(widths, style.width)
    columns = [(name, title) for name, title in COLUMNS if name in widths]
    lines = [GAP.join(_cell(title, widths[name]) for name, title in columns).rstrip()]
    for row in rows:
        first = GAP.join(_cell(getattr(row, name), widths[name]) for name in ("observable", "type"))
        if row.outcome != ANSWERED:
            words = f"error: {row.message}" if row.outcome == FAILED else f"not looked up: {row.message}"
            if style.width is not None:  # wrapped, not cut: the reason is the point of the row
                indent = " " * (len(first) + len(GAP))
                words = "\n".join(textwrap.wrap(words, max(20, style.width - len(indent)))).replace(
                    "\n", "\n" + indent
                )
            lines.append(f"{first}{GAP}{words}")
            continue
        cells = [first]
        for name, _title in columns[2:]:
            cell = _cell(getattr(row, name), widths[name])
            if name == "verdict" and style.colour:
                cell = _coloured(cell, row.verdict.lower())
            cells.append(cell)
        lines.append(GAP.join(cells).rstrip())
    return "\n".join(lines)


def _fit(widths: dict[str, int], width: int) -> None:
    """Narrows the columns to `width`: the categories cut first (to 20 characters); when that is
    not enough, the link left out (cut, it would be no link) and the categories and then the
    observable cut as far as needed (to 10 and 20 characters)."""
    natural = dict(widths)

    def shrink(name: str, minimum: int) -> None:
        excess = sum(widths.values()) + len(GAP) * (len(widths) - 1) - width
        if excess > 0:
            widths[name] = max(min(minimum, widths[name]), widths[name] - excess)

    shrink("categories", 20)
    if sum(widths.values()) + len(GAP) * (len(widths) - 1) <= width:
        return
    del widths["link"]
    widths["categories"] = natural["categories"]
    shrink("categories", 10)
    shrink("observable", 20)


def _cell(text: str, width: int) -> str:
    return _cut(text, width).ljust(width)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _coloured(text: str, verdict: str) -> str:
    colour = VERDICT_COLOURS.get(verdict)
    return f"\033[{colour}m{text}\033[0m" if colour else text


def summary(rows: Iterable[Row], style: Style = Style()) -> str:  # noqa: B008 - immutable
    """`4 values: 1 malicious, 1 suspicious, 1 clean, 1 no data, 0 failed, 0 not looked up`:
    every verdict counted (the three Threatscore gives always, any other when seen)."""
    rows = list(rows)
    verdicts = Counter(row.verdict.lower() for row in rows if row.outcome == ANSWERED)
    parts = []
    for verdict in ("malicious", "suspicious", "clean", *sorted(set(verdicts) - {*VERDICT_COLOURS, NO_DATA})):
        part = f"{verdicts[verdict]} {verdict}"
        parts.append(_coloured(part, verdict) if style.colour and verdicts[verdict] else part)
    parts.append(f"{verdicts[NO_DATA]} {NO_DATA}")
    for outcome in (FAILED, NOT_LOOKED_UP):
        parts.append(f"{sum(1 for row in rows if row.outcome == outcome)} {outcome}")
    return f"{len(rows)} value{'' if len(rows) == 1 else 's'}: {', '.join(parts)}"
