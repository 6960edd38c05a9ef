"""docs/ctim-mapping.md shows what the mapping really gives: its example answer, its concept table and
the reasons it quotes are regenerated here and compared.

After changing the mapping on purpose, `.venv/bin/python -m tests.mapping.test_ctim_mapping_docs`
writes the generated blocks into the page again.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from relay.mapping import MappingOptions, map_answer
from relay.mapping.concepts import KNOWN_CONCEPTS
from relay.mapping.rating import Support, rate
from relay.observables import Observable, canonical_value
from relay.schemas import parse_score_answer, parse_v3_answer
from simulator.catalogue import BY_VALUE, ENTRIES
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "ctim-mapping.md"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OPTIONS = MappingOptions(
    ui_url="https://console.threatscore.cyberprotect.cloud", valid_days=7, entities_limit=100
)
EXAMPLE = "203.0.113.5"


def example_answer() -> dict:
    """The example's `/observe/observables` answer, as the relay's handlers assemble it."""
    entry = BY_VALUE[EXAMPLE]
    entities = map_answer(
        Observable(entry.type, entry.value, entry.value), parse_v3_answer(entry.v3.body), OPTIONS, NOW
    )
    kinds = ("verdicts", "judgements", "indicators", "sightings", "relationships")
    return {
        "data": {
            kind: {"count": len(getattr(entities, kind)), "docs": getattr(entities, kind)}
            for kind in kinds
            if getattr(entities, kind)
        }
    }


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def example_table() -> str:
    data = example_answer()["data"]
    lines = [
        "| entity | what it says | disposition | severity | confidence | priority |",
        "|---|---|---|---|---|---|",
    ]
    for verdict in data["verdicts"]["docs"]:
        lines.append(f"| verdict | the aggregate judgement's | {verdict['disposition_name']} | | | |")
    for judgement in data["judgements"]["docs"]:
        lines.append(
            f"| judgement | {_cell(judgement['reason'])} | {judgement['disposition_name']}"
            f" | {judgement['severity']} | {judgement['confidence']} | {judgement['priority']} |"
        )
    for kind in ("indicators", "sightings"):
        for doc in data[kind]["docs"]:
            lines.append(
                f"| {kind[:-1]} | {_cell(doc['title'])} — {_cell(doc['short_description'])} | "
                f"| {doc['severity']} | {doc['confidence']} | |"
            )
    counts: dict[str, int] = {}
    for relationship in data["relationships"]["docs"]:
        counts[relationship["relationship_type"]] = counts.get(relationship["relationship_type"], 0) + 1
    said = ", ".join(f"{count} `{name}`" for name, count in counts.items())
    lines.append(f"| relationships | {said} | | | | |")
    return "\n".join(lines)


def example_json() -> str:
    return "```json\n" + json.dumps(example_answer(), indent=2, ensure_ascii=False) + "\n```"


def concepts_table() -> str:
    lines = [
        "| concept | Threatscore's names | title | what it means | severity | confidence |",
        "|---|---|---|---|---|---|",
    ]
    for concept in KNOWN_CONCEPTS:
        rating = rate(concept.disposition, concept.grave, Support.SOME)
        names = ", ".join(f"`{name}`" for name in (concept.key, *concept.names))
        lines.append(
            f"| `{concept.key}` | {names} | Threatscore: {_cell(concept.title)}"
            f" | {_cell(concept.short_description)} | {rating.severity} | {rating.confidence} |"
        )
    return "\n".join(lines)


BLOCKS = {
    "ctim-example-table": example_table,
    "ctim-example-json": example_json,
    "ctim-concepts": concepts_table,
}


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name} -->\n)(.*?)(<!-- /{name} -->)", re.S)


def test_the_pages_generated_blocks_are_what_the_mapping_gives():
    page = PAGE.read_text(encoding="utf-8")
    for name, generate in BLOCKS.items():
        found = _block(name).search(page)
        assert found, f"docs/ctim-mapping.md has no <!-- {name} --> block"
        assert found.group(2).strip() == generate(), (
            f"{name} is out of date: run .venv/bin/python -m tests.mapping.test_ctim_mapping_docs"
        )


def test_the_example_is_the_issue_s_case_and_reads_as_promised():
    table = example_table()
    assert "Threatscore score 44.0 % (suspicious) from 6 analyses, 2 of which agree" in table
    assert table.count("| indicator |") == 3  # blocklist once, though a category and a flag
    assert "| sighting | Seen by Threatscore between 2024-06-14 and 2026-10-31 — " in table


def test_every_reason_the_page_quotes_is_one_the_mapping_gives():
    page = PAGE.read_text(encoding="utf-8")
    quoted = set(re.findall(r"`(Threatscore (?:score|engine|analysis) [^`]+)`", page))
    assert len(quoted) >= 5, quoted
    reasons = set()
    for entry in ENTRIES:
        for api, parse in (("score", parse_score_answer), ("v3", parse_v3_answer)):
            reply = entry.reply(api)
            try:
                answer = parse(reply.body) if reply.status == 200 else None
            except Exception:  # an error reply: no reasons
                answer = None
            if answer:
                observable = Observable(
                    entry.type, entry.value, canonical_value(entry.type, entry.value) or "x"
                )
                reasons.update(j["reason"] for j in map_answer(observable, answer, OPTIONS, NOW).judgements)
    assert quoted <= reasons, quoted - reasons


if __name__ == "__main__":
    text = PAGE.read_text(encoding="utf-8")
    for block_name, make in BLOCKS.items():
        text = _block(block_name).sub(
            lambda found, make=make: f"{found.group(1)}{make()}\n{found.group(3)}", text
        )
    PAGE.write_text(text, encoding="utf-8")
