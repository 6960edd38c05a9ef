"""What an analyst (or an agent) reads of every found answer: the recorded ones beside the repository
(../shared/reference/samples*) and every one of the simulator's catalogue, in both APIs' shapes.

Each entity says in its own words what Threatscore said and how much it counts; severity,
confidence and priority follow the rule (relay/mapping/rating.py); the command line's facts and
the CTIM answer agree.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from relay.errors import RelayError
from relay.mapping import MappingOptions, answer_facts, map_answer
from relay.mapping.concepts import concept_named
from relay.observables import Observable, canonical_value
from relay.schemas import parse_score_answer, parse_v3_answer
from simulator.catalogue import ENTRIES
from tests.conftest import shared_reference
from tests.ctim import check_answer

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # the lookup: a week after the catalogue's newest
OPTIONS = MappingOptions(ui_url="https://ui.threatscore.test", valid_days=7, entities_limit=100)
PARSERS = {"score": parse_score_answer, "v3": parse_v3_answer}
CONFIDENCE_ORDER = ["Low", "Medium", "High"]
ANALYSIS_REASON = re.compile(
    r"Threatscore (analysis|engine) \S{1,8} on (\d{4}-\d\d-\d\d): -?\d+\.\d % \((clean|suspicious|malicious)\)"
)
AGGREGATE_REASON = re.compile(
    r"Threatscore (score -?\d+\.\d %|: no score) \((?P<level>[^)]+)\) "
    r"(with no analysis listed|from 1 analysis, which (agrees|does not agree)"
    r"|from (?P<total>\d+) analyses, (none|\d+) of which agrees?)(; categories: .+)?"
)


def _catalogue_answers() -> list:
    found = []
    for entry in ENTRIES:
        for api in ("score", "v3"):
            reply = entry.reply(api)
            if reply.status == 200:
                found.append(
                    pytest.param(api, entry.type, entry.value, reply.body, id=f"{api}-{entry.value}")
                )
    return found


def _reference_answers() -> list:
    found = []
    for folder in ("samples", "samples_v3"):
        recorded = shared_reference(folder, "Threatscore's recorded answers")
        for path in sorted(recorded.glob("*.json")):
            sample = json.loads(path.read_text(encoding="utf-8"))
            api = "v3" if "/api/v3/" in sample["request"]["path"] else "score"
            if sample["status"] == 200:
                found.append((api, sample.get("type", "ip"), sample["observable"], sample["body"], path.name))
    return found


def _mapped(api: str, observable_type: str, value: str, body) -> tuple[dict, dict] | None:
    """The answer as XDR gets it (checked against CTIM) and the normalised answer; None for no data."""
    try:
        answer = PARSERS[api](body)
    except RelayError:
        return None  # an answer the relay reports as an error: nothing to read
    if answer is None:
        return None
    observable = Observable(observable_type, value, canonical_value(observable_type, value) or value)
    entities = map_answer(observable, answer, OPTIONS, NOW)
    kinds = ("verdicts", "judgements", "indicators", "sightings", "relationships")
    docs = {kind: getattr(entities, kind) for kind in kinds if getattr(entities, kind)}
    body = {"data": {kind: {"count": len(found), "docs": found} for kind, found in docs.items()}}
    check_answer(body)  # CTIM stays valid
    return {kind: found["docs"] for kind, found in body["data"].items()}, answer


def check_what_the_analyst_reads(data: dict, answer: dict) -> None:
    """Every "Done when" point of the mapping, for one observable's answer."""
    judgements, indicators = data.get("judgements", []), data.get("indicators", [])
    verdicts, sightings = data.get("verdicts", []), data.get("sightings", [])
    # The aggregate first: Threatscore's overall score and level, how many analyses, how many agree.
    if verdicts:
        aggregate = judgements[0]
        assert verdicts[0]["judgement_id"] == aggregate["id"]
        assert AGGREGATE_REASON.fullmatch(aggregate["reason"]), aggregate["reason"]
        analyses = judgements[1:]
    else:
        analyses = judgements
    # No analysis judgement's reason without its date (the judgement's start) and its score.
    for judgement in analyses:
        found = ANALYSIS_REASON.fullmatch(judgement["reason"])
        assert found, judgement["reason"]
        assert found.group(2) == judgement["valid_time"]["start_time"][:10]
        assert found.group(3) == judgement["disposition_name"].lower()
    # No Clean entity with severity Medium or High (a clean observable's sighting neither).
    clean_verdict = [v["disposition_name"] for v in verdicts] == ["Clean"]
    for judgement in judgements:
        if judgement["disposition_name"] == "Clean":
            assert judgement["severity"] not in ("Medium", "High"), judgement
    if clean_verdict:
        assert all(s["severity"] not in ("Medium", "High") for s in sightings)
    # A strongly malicious aggregate is High.
    facts = answer_facts(answer)
    if verdicts and verdicts[0]["disposition_name"] == "Malicious" and facts.score_percent >= 75:
        assert judgements[0]["severity"] == "High", judgements[0]
    # Priority sorts by severity first: a higher severity never has a lower priority.
    severity_order = ["Unknown", "Info", "Low", "Medium", "High"]
    ranked = sorted(judgements, key=lambda j: severity_order.index(j["severity"]))
    assert [j["priority"] for j in ranked] == sorted(j["priority"] for j in ranked)
    # No two indicators of one observable name the same concept, or one of Threatscore's names twice.
    names = [tag for indicator in indicators for tag in indicator["tags"]]
    assert len(names) == len(set(names)), names
    assert len({i["id"] for i in indicators}) == len(indicators)
    for name in (*answer.get("categories", []), *answer.get("flags", [])):  # each in one indicator
        key = concept_named(name).key  # as the relay spells it: lower case, `_` for blanks and `-`
        assert sum(1 for i in indicators if key in i["tags"]) == 1, (name, names)
    # Every indicator has its descriptions, in sentences.
    for indicator in indicators:
        assert indicator["title"].startswith("Threatscore: ")
        for key in ("short_description", "description"):
            assert indicator[key].endswith(".") and len(indicator[key].split()) >= 4, indicator[key]
    # A sighting only where Threatscore says when it saw the value; its text says so, and when.
    seen = [answer.get(key) for key in ("first_seen", "last_seen") if answer.get(key)]
    assert len(sightings) == (1 if seen else 0)
    for sighting in sightings:
        assert sighting["title"].startswith("Seen by Threatscore ")
        assert sighting["short_description"].startswith("Threatscore's observation: it saw this observable ")
        assert all(moment[:10] in sighting["short_description"] for moment in seen)
        if verdicts:
            assert (sighting["severity"], sighting["confidence"]) == (
                judgements[0]["severity"],
                judgements[0]["confidence"],
            )
    # The command line's facts are the CTIM answer's.
    if facts is None:
        assert verdicts == []
        return
    assert verdicts[0]["disposition_name"] == facts.disposition_name
    if facts.score_percent is not None:
        assert f"score {facts.score_percent:.1f} %" in judgements[0]["reason"]
    assert list(facts.categories) == [i["tags"][0] for i in indicators]


@pytest.mark.parametrize(("api", "observable_type", "value", "body"), _catalogue_answers())
def test_every_catalogue_answer_reads_as_the_analyst_needs(api, observable_type, value, body):
    mapped = _mapped(api, observable_type, value, body)
    if mapped is not None:
        check_what_the_analyst_reads(*mapped)


def test_every_recorded_answer_reads_as_the_analyst_needs():
    samples = _reference_answers()
    mapped = [(name, _mapped(api, kind, value, body)) for api, kind, value, body, name in samples]
    found = [name for name, result in mapped if result is not None]
    assert len(found) >= 2, found  # the score API's 1.1.1.1 and v3's 172.67.221.42 at least
    for name, result in mapped:
        if result is not None:
            try:
                check_what_the_analyst_reads(*result)
            except AssertionError as error:
                raise AssertionError(f"{name}: {error}") from error


def _aggregate(api: str, value: str) -> dict:
    entry = next(entry for entry in ENTRIES if entry.value == value)
    data, _ = _mapped(api, entry.type, value, entry.reply(api).body)
    return data["judgements"][0]


@pytest.mark.parametrize("api", ["score", "v3"])
def test_confidence_differs_between_many_agreeing_analyses_and_a_single_one(api):
    many = _aggregate(api, "198.51.100.7")  # three recent analyses, all malicious
    single = _aggregate(api, "192.0.2.21")  # one analysis
    disagreeing = _aggregate(api, "203.0.113.5")  # six that contradict each other
    assert many["confidence"] == "High" and many["reason"].endswith(
        "from 3 analyses, 3 of which agree"
        + ("; categories: malicious_host, blocklist, attack" if api == "v3" else "")
    )
    assert (many["severity"], many["priority"]) == ("High", 95)  # as docs/ctim-mapping.md says
    assert single["confidence"] == disagreeing["confidence"] == "Low"
    assert CONFIDENCE_ORDER.index(many["confidence"]) > CONFIDENCE_ORDER.index(single["confidence"])
    assert many["priority"] > single["priority"]


def test_the_issues_example_reads_as_asked():
    """The simulator's 203.0.113.5 (Threatscore: suspicious, 44 %), as the issue read it."""
    entry = next(entry for entry in ENTRIES if entry.value == "203.0.113.5")
    data, _ = _mapped("v3", "ip", entry.value, entry.reply("v3").body)
    reasons = [j["reason"] for j in data["judgements"]]
    assert reasons[0] == (
        "Threatscore score 44.0 % (suspicious) from 6 analyses, 2 of which agree;"
        " categories: spam, general_business, blocklist"
    )
    assert reasons[1].startswith("Threatscore analysis ") and reasons[1].endswith(
        " on 2026-10-31: 90.0 % (malicious)"
    )
    severities = {(j["disposition_name"], j["severity"]) for j in data["judgements"]}
    assert severities == {
        ("Suspicious", "Low"),
        ("Malicious", "High"),
        ("Malicious", "Medium"),
        ("Clean", "Info"),
    }
    # The category and the flag `blocklist`: one indicator.
    assert [i["title"] for i in data["indicators"]] == [
        "Threatscore: Spam",
        "Threatscore: General business",
        "Threatscore: On a blocklist",
    ]
