"""`answer_facts`: what a table shows of a normalised answer, the same as the CTIM answer says."""

import dataclasses

import pytest

from relay.mapping import AnswerFacts, answer_facts
from relay.schemas import parse_score_answer, parse_v3_answer
from tests import answers


def test_a_v3_answer_gives_its_score_verdict_and_concepts_in_the_indicators_order():
    facts = answer_facts(parse_v3_answer(answers.V3_FOUND))
    assert facts == AnswerFacts(
        score_percent=81.25,
        disposition_name="Malicious",
        categories=("phishing", "malicious_host", "blocklist", "compromise"),
    )


def test_a_category_and_a_flag_of_one_concept_are_one_category():
    body = {"threatscore": {"value": 0.44, "level": "suspicious", "categories": ["spam", "blocklist"]}}
    body["threatscore"]["indicators"] = {"blocklist": True, "scan": True, "compromission": False}
    assert answer_facts(parse_v3_answer(body)).categories == ("spam", "blocklist", "scanner")


def test_a_score_api_answer_gives_the_newest_scored_entry():
    facts = answer_facts(parse_score_answer(answers.HISTORY))  # the newest entry has no score
    assert facts == AnswerFacts(score_percent=80.0, disposition_name="Malicious", categories=())


def test_the_verdict_follows_threatscore_s_level_over_the_score():
    facts = answer_facts(parse_v3_answer({"threatscore": {"value": 0.9, "level": "safe"}}))
    assert (facts.score_percent, facts.disposition_name) == (90.0, "Clean")
    facts = answer_facts(parse_v3_answer({"threatscore": {"level": "suspicious"}}))
    assert (facts.score_percent, facts.disposition_name) == (None, "Suspicious")


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {},
        parse_score_answer(answers.ALL_NULL_SCORES),
        parse_v3_answer({"threatscore": {"level": "pending", "categories": ["spam"]}}),  # no verdict
    ],
)
def test_no_verdict_is_no_facts(answer):
    assert answer_facts(answer) is None


def test_facts_are_frozen():
    facts = answer_facts(parse_v3_answer(answers.V3_FOUND))
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.score_percent = 0  # type: ignore[misc]
