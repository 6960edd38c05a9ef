from datetime import UTC, datetime

import pytest

from relay.mapping import MappingOptions, disposition_for, map_answer, search_url
from relay.observables import Observable
from relay.schemas import parse_score_answer
from tests import answers
from tests.ctim import check_answer

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OPTIONS = MappingOptions(ui_url="https://ui.threatscore.test", valid_days=7, entities_limit=100)
IP = Observable("ip", "198.51.100.7", "198.51.100.7")


def judgement(id_, disposition, name, reason, rating):
    severity, confidence, priority = rating
    return {
        "id": f"transient:threatscore-judgement-{id_}",
        "type": "judgement",
        "schema_version": "1.0.17",
        "source": "Threatscore Cyberprotect",
        "source_uri": "https://ui.threatscore.test/search?query=198.51.100.7",
        "observable": {"type": "ip", "value": "198.51.100.7"},
        "disposition": disposition,
        "disposition_name": name,
        "priority": priority,
        "confidence": confidence,
        "severity": severity,
        "reason": reason,
        "tlp": "white",
        # An old score looked up now: valid from its date until 7 days after the lookup.
        "valid_time": {"start_time": "2021-06-14T08:30:05.120Z", "end_time": "2026-12-05T12:00:00.000Z"},
    }


AGGREGATE_ID = "98161e98237c6fe52f7725bd80032196807360045466188d3812d065f8592da3"
EXPECTED_JUDGEMENTS = [
    # Suspicious, and only one engine of four agrees: Low, Low.
    judgement(
        AGGREGATE_ID,
        3,
        "Suspicious",
        "Threatscore score 34.0 % (suspicious) from 4 analyses, 1 of which agrees",
        ("Low", "Low", 40),
    ),
    judgement(
        "fa37dea14f2060eb63355a0409c6e5f64a55ccac30ee42b0a6237740a1f13304",
        1,
        "Clean",
        "Threatscore engine aa01aa01 on 2021-06-14: 0.0 % (clean)",
        ("Info", "Low", 20),
    ),
    judgement(
        "996b34e5d95d4bb7291adc4e0fe5c5ddeaf5218b664cb89041a9d2e2fc699840",
        2,
        "Malicious",
        "Threatscore engine bb02bb02 on 2021-06-14: 90.0 % (malicious)",
        ("High", "Low", 85),
    ),
    judgement(
        "077a292feaf64b73898a232dc433c978c731d8b6bd67caa1041ee5033a74f36f",
        3,
        "Suspicious",
        "Threatscore engine cc03cc03 on 2021-06-14: 50.0 % (suspicious)",
        ("Low", "Low", 40),
    ),
    judgement(
        "e2004346f326303f235a5c4b2130d9148932144e9239e0ce1c8c5be0a3932613",
        1,
        "Clean",
        "Threatscore engine dd04dd04 on 2021-06-14: 17.5 % (clean)",
        ("Info", "Low", 20),
    ),
]
EXPECTED_VERDICTS = [
    {
        "type": "verdict",
        "observable": {"type": "ip", "value": "198.51.100.7"},
        "disposition": 3,
        "disposition_name": "Suspicious",
        "valid_time": {"start_time": "2021-06-14T08:30:05.120Z", "end_time": "2026-12-05T12:00:00.000Z"},
        "judgement_id": f"transient:threatscore-judgement-{AGGREGATE_ID}",
    }
]


def test_four_engines_map_to_the_full_expected_output():
    entities = map_answer(IP, parse_score_answer(answers.FOUR_ENGINES), OPTIONS, NOW)
    assert entities.judgements == EXPECTED_JUDGEMENTS
    assert entities.verdicts == EXPECTED_VERDICTS
    check_answer(
        {
            "data": {
                "verdicts": {"count": 1, "docs": entities.verdicts},
                "judgements": {"count": 5, "docs": entities.judgements},
            }
        }
    )


def test_the_same_input_gives_the_same_ids():
    first = map_answer(IP, parse_score_answer(answers.FOUR_ENGINES), OPTIONS, NOW)
    later = map_answer(IP, parse_score_answer(answers.FOUR_ENGINES), OPTIONS, NOW)
    assert [j["id"] for j in first.judgements] == [j["id"] for j in later.judgements]
    assert len({j["id"] for j in first.judgements}) == 5


@pytest.mark.parametrize(
    ("score", "disposition"),
    [
        (-5, 1),
        (-0.0001, 1),
        (0, 1),
        (0.175, 1),
        (0.25, 1),
        (0.2500001, 3),
        (0.34, 3),
        (0.5, 3),
        (0.5000001, 2),
        (0.9, 2),
        (1, 2),
        (7.5, 2),
    ],
)
def test_score_buckets_have_no_gaps(score, disposition):
    assert disposition_for(score) == disposition


def test_history_judges_every_entry_newest_first_and_skips_null_scores():
    observable = Observable("domain", "Malware.Example.", "malware.example")
    entities = map_answer(observable, parse_score_answer(answers.HISTORY), OPTIONS, NOW)
    # The newest entry (2022) has a null aggregate: the verdict comes from 2021's 0.8.
    assert [v["disposition_name"] for v in entities.verdicts] == ["Malicious"]
    assert entities.verdicts[0]["valid_time"]["start_time"] == "2021-09-09T09:09:09.000Z"
    reasons = [j["reason"] for j in entities.judgements]
    assert reasons == [
        "Threatscore score 80.0 % (malicious) from 2 analyses, 1 of which agrees",
        "Threatscore engine ee05ee05 on 2021-09-09: 95.0 % (malicious)",
        "Threatscore engine ff06ff06 on 2021-09-09: -20.0 % (clean)",
        "Threatscore engine ee05ee05 on 2020-01-05: 10.0 % (clean)",
    ]
    assert [j["disposition_name"] for j in entities.judgements] == [
        "Malicious",
        "Malicious",
        "Clean",
        "Clean",
    ]
    # The caller's spelling is echoed; the link uses the canonical name.
    assert {j["observable"]["value"] for j in entities.judgements} == {"Malware.Example."}
    assert entities.judgements[0]["source_uri"] == "https://ui.threatscore.test/search?query=malware.example"


def test_legacy_string_scores_and_date_only_dates():
    observable = Observable("domain", "old.example", "old.example")
    entities = map_answer(observable, parse_score_answer(answers.LEGACY_2018), OPTIONS, NOW)
    assert entities.verdicts[0]["disposition_name"] == "Malicious"
    assert entities.verdicts[0]["valid_time"]["start_time"] == "2018-10-12T00:00:00.000Z"
    assert entities.judgements[1]["reason"] == "Threatscore engine ab12ab12 on 2018-10-12: 99.0 % (malicious)"


def test_negative_scores_are_clean():
    entities = map_answer(IP, parse_score_answer(answers.NEGATIVE_SCORE), OPTIONS, NOW)
    assert [j["disposition_name"] for j in entities.judgements] == ["Clean", "Clean"]


def test_only_null_scores_give_no_entities():
    entities = map_answer(IP, parse_score_answer(answers.ALL_NULL_SCORES), OPTIONS, NOW)
    assert entities.verdicts == [] and entities.judgements == []


def test_no_data_gives_no_entities():
    entities = map_answer(IP, None, OPTIONS, NOW)
    assert entities.verdicts == [] and entities.judgements == []


def test_fresh_score_is_valid_for_the_configured_days_from_its_date():
    fresh = answers.with_scores(0.9, aggregate=0.9, date="2026-11-28T11:00:00.000Z")
    options = MappingOptions(ui_url=OPTIONS.ui_url, valid_days=3, entities_limit=100)
    verdict = map_answer(IP, parse_score_answer(fresh), options, NOW).verdicts[0]
    # The lookup (12:00) is later than the score (11:00): 3 days after the lookup.
    assert verdict["valid_time"] == {
        "start_time": "2026-11-28T11:00:00.000Z",
        "end_time": "2026-12-01T12:00:00.000Z",
    }


def test_a_score_dated_in_the_future_still_has_start_before_end():
    future = answers.with_scores(0.1, aggregate=0.1, date="2027-01-01T00:00:00.000Z")
    verdict = map_answer(IP, parse_score_answer(future), OPTIONS, NOW).verdicts[0]
    assert verdict["valid_time"] == {
        "start_time": "2027-01-01T00:00:00.000Z",
        "end_time": "2027-01-08T00:00:00.000Z",
    }


def test_entities_limit_keeps_the_newest_and_the_verdicts_judgement():
    many = answers.with_scores(*[0.1 * (i % 10) for i in range(30)], aggregate=0.6)
    options = MappingOptions(ui_url=OPTIONS.ui_url, valid_days=7, entities_limit=4)
    entities = map_answer(IP, parse_score_answer(many), options, NOW)
    assert len(entities.judgements) == 4
    assert entities.verdicts[0]["judgement_id"] == entities.judgements[0]["id"]
    # The first three engines (ids 0, 1, 2: their short forms alike), in the answer's order.
    assert [j["reason"] for j in entities.judgements[1:]] == [
        f"Threatscore engine 00000000 on 2021-06-14: {percent} (clean)"
        for percent in ("0.0 %", "10.0 %", "20.0 %")
    ]


def test_search_url_query_encodes_the_value():
    assert (
        search_url("https://ui.test", "a b&c=d/e?f#g")
        == "https://ui.test/search?query=a%20b%26c%3Dd%2Fe%3Ff%23g"
    )


def test_an_engine_repeated_in_an_entry_is_one_analysis_and_one_judgement():
    repeated = answers.with_scores(0.9, 0.9, aggregate=0.9)
    repeated["scores"][0]["details"][1]["engineId"] = repeated["scores"][0]["details"][0]["engineId"]
    entities = map_answer(IP, parse_score_answer(repeated), OPTIONS, NOW)
    check_answer({"data": {"judgements": {"count": len(entities.judgements), "docs": entities.judgements}}})
    assert [j["reason"] for j in entities.judgements] == [
        "Threatscore score 90.0 % (malicious) from 1 analysis, which agrees",
        "Threatscore engine 00000000 on 2021-06-14: 90.0 % (malicious)",
    ]
