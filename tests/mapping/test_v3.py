"""The v3 mapping: a normalised v3 answer to CTIM, checked field by field and by the CTIM rules."""

from datetime import UTC, datetime

import pytest

from relay.mapping import MappingOptions, map_answer
from relay.mapping.ctim import transient_id
from relay.observables import Observable
from relay.schemas import parse_v3_answer
from tests import answers
from tests.ctim import check_answer

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OPTIONS = MappingOptions(ui_url="https://ui.threatscore.test", valid_days=7, entities_limit=100)
IP = Observable("ip", "203.0.113.5", "203.0.113.5")
URL = Observable("url", "HTTP://Example.COM/login", "http://example.com/login")


def mapped(body, observable=IP, options=OPTIONS, now=NOW):
    return map_answer(observable, parse_v3_answer(body), options, now)


def as_answer(entities) -> dict:
    kinds = ("verdicts", "judgements", "indicators", "sightings", "relationships")
    data = {kind: getattr(entities, kind) for kind in kinds if getattr(entities, kind)}
    body = {"data": {kind: {"count": len(docs), "docs": docs} for kind, docs in data.items()}}
    check_answer(body)
    return body


def test_a_found_answer_maps_to_every_kind_and_passes_ctim():
    entities = mapped(answers.V3_FOUND)
    as_answer(entities)
    assert [len(entities.verdicts), len(entities.judgements), len(entities.indicators)] == [1, 3, 4]
    assert len(entities.sightings) == 1 and len(entities.relationships) == 8


def test_the_verdict_comes_from_the_level_and_names_the_aggregate_judgement():
    entities = mapped(answers.V3_FOUND)
    aggregate = entities.judgements[0]
    assert entities.verdicts == [
        {
            "type": "verdict",
            "observable": {"type": "ip", "value": "203.0.113.5"},
            "disposition": 2,
            "disposition_name": "Malicious",
            "valid_time": {"start_time": "2025-03-02T10:20:30.000Z", "end_time": "2026-12-05T12:00:00.000Z"},
            "judgement_id": aggregate["id"],
        }
    ]
    assert aggregate["reason"] == (
        "Threatscore score 81.2 % (malicious) from 2 analyses, 1 of which agrees;"
        " categories: phishing, malicious_host, blocklist, compromise"
    )
    assert aggregate["source"] == "Threatscore Cyberprotect"
    assert aggregate["source_uri"] == "https://ui.threatscore.test/search?query=203.0.113.5"
    # Malicious at 81 %: High; one of its two analyses contradicts it: Low confidence.
    assert (aggregate["severity"], aggregate["confidence"], aggregate["priority"], aggregate["tlp"]) == (
        "High",
        "Low",
        85,
        "white",
    )


def test_analysis_rows_with_a_score_are_judged_newest_first_and_informational_rows_skipped():
    judgements = mapped(answers.V3_FOUND).judgements[1:]
    assert [(j["reason"], j["disposition_name"], j["valid_time"]["start_time"]) for j in judgements] == [
        (
            "Threatscore analysis 1a2b1a2b on 2025-03-02: 81.2 % (malicious)",
            "Malicious",
            "2025-03-02T10:20:30.000Z",
        ),
        (
            "Threatscore analysis 1a2b1a2b on 2024-11-05: 40.0 % (suspicious)",
            "Suspicious",
            "2024-11-05T08:00:00.000Z",
        ),
    ]
    # The same scorer on two dates: two judgements, two ids.
    assert judgements[0]["id"] != judgements[1]["id"]


def test_rows_arriving_oldest_first_are_still_judged_newest_first():
    body = {**answers.V3_FOUND, "analysis": list(reversed(answers.V3_FOUND["analysis"]))}
    dates = [j["valid_time"]["start_time"] for j in mapped(body).judgements[1:]]
    assert dates == ["2025-03-02T10:20:30.000Z", "2024-11-05T08:00:00.000Z"]


def test_one_indicator_per_category_and_per_true_flag_in_plain_words():
    indicators = mapped(answers.V3_FOUND).indicators
    assert [(i["title"], i["tags"][0], i["severity"], i["confidence"]) for i in indicators] == [
        ("Threatscore: Phishing", "phishing", "High", "Medium"),
        ("Threatscore: Malicious host", "malicious_host", "Medium", "Medium"),
        ("Threatscore: On a blocklist", "blocklist", "Low", "Medium"),
        # `compromission` in Threatscore's words
        ("Threatscore: Compromised host", "compromise", "Medium", "Medium"),
    ]
    assert indicators[0]["short_description"] == (
        "Used for phishing: pages or mail that steal credentials or payments."
    )
    assert indicators[3]["description"].startswith("Threatscore considers this observable compromised")
    for indicator in indicators:
        assert indicator["producer"] == "Threatscore Cyberprotect"
        assert indicator["valid_time"] == {
            "start_time": "2026-11-28T12:00:00.000Z",
            "end_time": "2026-12-05T12:00:00.000Z",
        }
        assert indicator["tlp"] == "white"


def test_a_category_and_a_flag_that_name_the_same_thing_are_one_indicator():
    threatscore = {
        "value": 0.7,
        "level": "malicious",
        "categories": ["blocklist", "scanner", "compromised"],
        "indicators": {"blocklist": True, "attack": False, "scan": True, "compromission": True},
    }
    entities = mapped({**answers.V3_FOUND, "threatscore": threatscore})
    assert [i["tags"][0] for i in entities.indicators] == ["blocklist", "scanner", "compromise"]
    # The one indicator says both: Threatscore's category and its flag.
    assert "its category `blocklist`, its flag `blocklist`, or both" in entities.indicators[0]["description"]
    assert "its category `scanner`, its flag `scan`, or both" in entities.indicators[1]["description"]
    as_answer(entities)


def test_an_unknown_category_still_reads_as_a_sentence():
    threatscore = {"value": 0.7, "level": "malicious", "categories": ["crypto_mining"]}
    [indicator] = mapped({"threatscore": threatscore}).indicators
    assert indicator["title"] == "Threatscore: Crypto mining"
    assert indicator["short_description"] == "Threatscore marks it as crypto mining."
    assert indicator["description"].startswith("Threatscore marks this observable as crypto mining")
    # Nothing known of what is at stake: Unknown, and Low confidence.
    assert (indicator["severity"], indicator["confidence"]) == ("Unknown", "Low")


def test_a_false_flag_gives_no_indicator():
    body = {**answers.V3_FOUND, "threatscore": {**answers.V3_FOUND["threatscore"], "categories": []}}
    body["threatscore"]["indicators"] = dict.fromkeys(("blocklist", "attack", "scan", "compromission"), False)
    entities = mapped(body)
    assert entities.indicators == [] and entities.relationships == []
    assert len(entities.sightings) == 1


def test_indicator_ids_are_the_same_for_every_observable_and_request():
    first = mapped(answers.V3_FOUND, IP)
    other = mapped(answers.V3_FOUND, URL, now=datetime(2027, 1, 1, tzinfo=UTC))
    assert [i["id"] for i in first.indicators] == [i["id"] for i in other.indicators]
    assert first.indicators[0]["id"] == transient_id("indicator", "concept", "phishing")
    # The same text too: an indicator is its concept's own, whoever has it.
    assert [(i["title"], i["description"], i["severity"]) for i in first.indicators] == [
        (i["title"], i["description"], i["severity"]) for i in other.indicators
    ]


def test_judgement_sighting_and_relationship_ids_are_deterministic():
    first, again = mapped(answers.V3_FOUND), mapped(answers.V3_FOUND)
    for kind in ("judgements", "sightings", "relationships"):
        assert [d["id"] for d in getattr(first, kind)] == [d["id"] for d in getattr(again, kind)]
    assert first.sightings[0]["id"] != mapped(answers.V3_FOUND, URL).sightings[0]["id"]


def test_the_sighting_says_when_and_what_threatscore_saw():
    sighting = mapped(answers.V3_FOUND, URL).sightings[0]
    assert sighting["title"] == "Seen by Threatscore between 2024-11-05 and 2025-03-02"
    assert sighting["short_description"] == (
        "Threatscore's observation: it saw this observable between 2024-11-05 and 2025-03-02."
    )
    # The observable's own rating: Malicious at 81 %, its analyses disagreeing.
    assert (sighting["severity"], sighting["confidence"]) == ("High", "Low")
    assert sighting["observed_time"] == {
        "start_time": "2024-11-05T08:00:00.000Z",
        "end_time": "2025-03-02T10:20:30.000Z",
    }
    assert sighting["count"] == 1
    assert sighting["observables"] == [{"type": "url", "value": "HTTP://Example.COM/login"}]  # as sent
    assert sighting["source"] == "Threatscore Cyberprotect"
    assert (
        sighting["source_uri"] == "https://ui.threatscore.test/search?query=http%3A%2F%2Fexample.com%2Flogin"
    )
    assert sighting["data"] == {
        "columns": [
            {"name": "Country", "type": "string"},
            {"name": "City", "type": "string"},
            {"name": "ASN", "type": "string"},
            {"name": "AS organisation", "type": "string"},
            {"name": "Tags", "type": "string"},
        ],
        "rows": [["Netherlands", "Amsterdam", "64500", "Example Hosting B.V.", "dns, hosting"]],
        "row_count": 1,
    }


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        ({"first_seen": "2024-01-01"}, ("2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.000Z")),
        ({"last_seen": "2025-05-05T05:05:05Z"}, ("2025-05-05T05:05:05.000Z", "2025-05-05T05:05:05.000Z")),
        # Upstream's order mixed up: start still before end.
        (
            {"first_seen": "2025-01-02", "last_seen": "2025-01-01"},
            ("2025-01-01T00:00:00.000Z", "2025-01-02T00:00:00.000Z"),
        ),
    ],
)
def test_observed_time_when_a_date_is_missing(seen, expected):
    entities = mapped({**answers.V3_SAFE_BARE, "observable": seen})
    observed = entities.sightings[0]["observed_time"]
    assert (observed["start_time"], observed["end_time"]) == expected
    assert "data" not in entities.sightings[0]  # Threatscore said nothing of where or whose
    as_answer(entities)


def test_no_sighting_where_threatscore_does_not_say_when_it_saw_the_value():
    entities = mapped({**answers.V3_FOUND, "observable": {"geo": {"country_name": "France"}}})
    assert entities.sightings == []
    assert {r["relationship_type"] for r in entities.relationships} == {"based-on"}
    as_answer(entities)


def test_a_clean_observables_sighting_is_not_medium_or_high():
    entities = mapped({**answers.V3_SAFE_BARE, "observable": {"last_seen": "2026-11-01"}})
    [sighting] = entities.sightings
    assert sighting["severity"] == "Info"
    assert sighting["title"] == "Seen by Threatscore on 2026-11-01"


def test_relationships_tie_the_sighting_and_the_aggregate_to_each_indicator():
    entities = mapped(answers.V3_FOUND)
    sighting, aggregate = entities.sightings[0]["id"], entities.judgements[0]["id"]
    pairs = [(r["source_ref"], r["relationship_type"], r["target_ref"]) for r in entities.relationships]
    expected = []
    for indicator in entities.indicators:
        expected += [(sighting, "sighting-of", indicator["id"]), (aggregate, "based-on", indicator["id"])]
    assert pairs == expected
    assert len({r["id"] for r in entities.relationships}) == 8


def test_epoch_milliseconds_and_an_unknown_level_word():
    entities = mapped(answers.V3_EPOCH_AND_ODD_LEVEL)
    as_answer(entities)
    # "Dangerous-ish" is not one of Threatscore's three words: the score's bucket decides (0.3).
    assert entities.verdicts[0]["disposition_name"] == "Suspicious"
    assert (
        entities.judgements[0]["reason"]
        == "Threatscore score 30.0 % (dangerous-ish) from 1 analysis, which agrees; categories: scanner"
    )
    assert entities.sightings[0]["observed_time"] == {
        "start_time": "2023-11-14T22:13:20.000Z",
        "end_time": "2024-03-09T16:00:00.123Z",
    }
    assert [i["title"] for i in entities.indicators] == ["Threatscore: Scanner"]


@pytest.mark.parametrize(
    ("threatscore", "disposition"),
    [
        ({"value": 0.9, "level": "safe"}, "Clean"),  # Threatscore's own level wins over the score
        ({"value": 0.1, "level": "MALICIOUS"}, "Malicious"),
        ({"level": "suspicious"}, "Suspicious"),  # a level without a score
        ({"value": 0.25}, "Clean"),  # no level: the buckets used for the score API
        ({"value": 0.2500001}, "Suspicious"),
        ({"value": 0.5}, "Suspicious"),
        ({"value": 0.51}, "Malicious"),
        ({"value": -0.3}, "Clean"),
    ],
)
def test_verdict_from_level_else_from_the_score(threatscore, disposition):
    entities = mapped({"threatscore": threatscore})
    assert [v["disposition_name"] for v in entities.verdicts] == [disposition]
    as_answer(entities)


def test_an_unknown_level_without_a_score_gives_no_verdict_but_still_a_sighting():
    body = {
        "threatscore": {"level": "pending", "categories": ["spam"]},
        "observable": {"first_seen": "2026-01-01"},
    }
    entities = mapped(body)
    assert entities.verdicts == [] and entities.judgements == []
    assert len(entities.sightings) == 1 and len(entities.indicators) == 1
    assert entities.sightings[0]["severity"] == "Unknown"  # no verdict: nothing said of the stake
    assert [r["relationship_type"] for r in entities.relationships] == ["sighting-of"]
    as_answer(entities)


def test_no_data_gives_no_entities():
    entities = map_answer(IP, None, OPTIONS, NOW)
    assert as_answer(entities) == {"data": {}}


def test_the_entities_limit_applies_to_each_kind_and_never_cuts_what_is_named():
    categories = [f"category_{index}" for index in range(10)]
    rows = [{"id": f"{index:032x}", "date": f"2025-01-{index + 1:02d}", "score": 0.1} for index in range(10)]
    body = {"threatscore": {"value": 0.7, "level": "malicious", "categories": categories}, "analysis": rows}
    options = MappingOptions(ui_url=OPTIONS.ui_url, valid_days=7, entities_limit=3)
    entities = mapped(body, options=options)
    as_answer(entities)  # every relationship names a listed entity
    assert (
        len(entities.judgements) == 3 and entities.verdicts[0]["judgement_id"] == entities.judgements[0]["id"]
    )
    # The newest rows are the ones kept.
    assert [j["valid_time"]["start_time"][:10] for j in entities.judgements[1:]] == [
        "2025-01-10",
        "2025-01-09",
    ]
    assert [i["tags"][0] for i in entities.indicators] == categories[:3]
    assert len(entities.relationships) == 3
    kept = {i["id"] for i in entities.indicators}
    assert all(r["target_ref"] in kept for r in entities.relationships)


def test_values_from_upstream_stay_within_ctim_bounds():
    long = "x" * 5000
    body = {"threatscore": {"value": 0.7, "level": long, "categories": [long] * 3}, "analysis": []}
    entities = mapped(body)
    as_answer(entities)
    assert len(entities.judgements[0]["reason"]) <= 1024
    assert all(len(i["title"]) <= 1024 for i in entities.indicators)


def test_a_repeated_analysis_row_is_counted_and_judged_once():
    row = {"id": "9a9b" * 8, "date": "2026-11-27", "score": 0.9}
    entities = mapped({"threatscore": {"value": 0.9, "level": "malicious"}, "analysis": [row, row]})
    assert [j["reason"] for j in entities.judgements] == [
        "Threatscore score 90.0 % (malicious) from 1 analysis, which agrees",
        "Threatscore analysis 9a9b9a9b on 2026-11-27: 90.0 % (malicious)",
    ]
