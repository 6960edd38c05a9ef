import json

import pytest

from relay.errors import InvalidArgumentError, RelayError, UpstreamFormatError
from relay.observables import TYPES_BY_API, Observable
from relay.schemas import parse_observables, parse_score_answer
from tests import answers


def parse(payload, max_observables=1000, max_value_length=1024, supported_types=TYPES_BY_API["score"]):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_observables(body, max_observables, max_value_length, supported_types)


def test_supported_types_are_kept_in_order_with_the_callers_value():
    observables = parse(
        [
            {"type": "IP", "value": "1.1.1.1"},
            {"type": "sha256", "value": "ab" * 32},
            {"type": "Domain", "value": "Example.COM."},
            {"type": "ipv6", "value": "2001:DB8::1"},
        ]
    )
    assert observables == [
        Observable("ip", "1.1.1.1", "1.1.1.1"),
        Observable("domain", "Example.COM.", "example.com"),
        Observable("ipv6", "2001:DB8::1", "2001:db8::1"),
    ]


def test_with_v3_every_threatscore_type_is_kept_and_invalid_values_dropped():
    observables = parse(
        [
            {"type": "SHA256", "value": "AB" * 32},
            {"type": "md5", "value": "not a hash"},
            {"type": "url", "value": "HTTPS://Example.COM/Login?next=/"},
            {"type": "url", "value": "not-a-url"},
            {"type": "user_agent", "value": "Mozilla/5.0"},
            {"type": "sha1", "value": "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
            {"type": "email", "value": "a@example.com"},
        ],
        supported_types=TYPES_BY_API["v3"],
    )
    assert observables == [
        Observable("sha256", "AB" * 32, "ab" * 32),
        Observable("url", "HTTPS://Example.COM/Login?next=/", "https://example.com/Login?next=/"),
        Observable("user_agent", "Mozilla/5.0", "Mozilla/5.0"),
        Observable(
            "sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709", "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        ),
    ]


def test_with_the_score_api_the_new_types_are_dropped_silently():
    payload = [{"type": "url", "value": "https://example.com/"}, {"type": "md5", "value": "a" * 32}]
    assert parse(payload) == []
    assert len(parse(payload, supported_types=TYPES_BY_API["v3"])) == 2


def test_a_user_agent_longer_than_the_value_limit_is_refused():
    with pytest.raises(InvalidArgumentError, match="longer than 20 characters"):
        parse(
            [{"type": "user_agent", "value": "M" * 21}],
            max_value_length=20,
            supported_types=TYPES_BY_API["v3"],
        )


def test_repeats_collapse_and_other_spellings_share_one_lookup_key():
    observables = parse(
        [
            {"type": "ip", "value": "1.1.1.1"},
            {"type": "ip", "value": "1.1.1.1"},
            {"type": "domain", "value": "example.com"},
            {"type": "domain", "value": "EXAMPLE.com."},
            {"type": "ipv6", "value": "2001:db8::1"},
            {"type": "ipv6", "value": "2001:0db8:0:0:0:0:0:1"},
        ]
    )
    assert [o.value for o in observables] == [
        "1.1.1.1",
        "example.com",
        "EXAMPLE.com.",
        "2001:db8::1",
        "2001:0db8:0:0:0:0:0:1",
    ]
    assert [o.cache_key for o in observables] == [
        "ip:1.1.1.1",
        "domain:example.com",
        "domain:example.com",
        "ipv6:2001:db8::1",
        "ipv6:2001:db8::1",
    ]


def test_invalid_values_are_dropped_silently():
    assert parse([{"type": "ip", "value": "not-an-ip"}, {"type": "domain", "value": "bad domain"}]) == []


def test_extra_keys_are_ignored():
    assert parse([{"type": "ip", "value": "1.1.1.1", "id": 3, "x": {}}])[0].value == "1.1.1.1"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "Invalid JSON payload"),
        (b"{not json", "Invalid JSON payload"),
        (b"\xff\xfe", "Invalid JSON payload"),
        ({"type": "ip", "value": "1.1.1.1"}, "expected a list of observables, got an object"),
        ("1.1.1.1", "got a string"),
        (42, "got a number"),
        (None, "got null"),
        (["1.1.1.1"], "item 0"),
        ([{"value": "1.1.1.1"}], "item 0: type: Missing data for required field."),
        ([{"type": "ip"}], "item 0: value: Missing data for required field."),
        ([{"type": "", "value": "1.1.1.1"}], "item 0: type: Shorter than minimum length 1."),
        ([{"type": "ip", "value": ""}], "item 0: value"),
        ([{"type": "ip", "value": 1}], "item 0: value: Not a valid string."),
        ([{"type": ["ip"], "value": "1.1.1.1"}], "item 0: type: Not a valid string."),
        ([{"type": "ip", "value": {"a": 1}}], "item 0: value: Not a valid string."),
        ([{"type": "ip", "value": None}], "item 0: value"),
    ],
)
def test_malformed_bodies_are_invalid_arguments_that_say_what_is_wrong(payload, message):
    with pytest.raises(InvalidArgumentError) as raised:
        parse(payload)
    assert message in raised.value.message
    assert raised.value.code == "invalid argument"


def test_the_second_bad_item_is_named():
    with pytest.raises(InvalidArgumentError, match="item 1: value"):
        parse([{"type": "ip", "value": "1.1.1.1"}, {"type": "ip", "value": 7}])


def test_limits_on_count_and_value_length():
    with pytest.raises(InvalidArgumentError, match="Too many observables: 3 sent, at most 2"):
        parse([{"type": "ip", "value": "1.1.1.1"}] * 3, max_observables=2)
    with pytest.raises(InvalidArgumentError, match="longer than 10 characters"):
        parse([{"type": "domain", "value": "a" * 11}], max_value_length=10)


# --- Threatscore answers ---


@pytest.mark.parametrize(
    "body",
    [answers.NO_DATA_NESTED_EMPTY, answers.NO_DATA_NO_SCORES, answers.NO_DATA_BARE_LIST, {"scores": []}],
)
def test_every_no_data_form_is_no_data(body):
    assert parse_score_answer(body) is None


def test_found_answer_is_normalised():
    answer = parse_score_answer(answers.FOUR_ENGINES)
    entry = answer["scores"][0]
    assert entry["date"] == "2021-06-14T08:30:05.120+00:00"
    assert entry["score"] == pytest.approx(0.3397058823529412)
    assert [d["score"] for d in entry["details"]] == [0, 0.9, 0.5, 0.175]
    assert set(answer) == {"api", "scores"} and answer["api"] == "score"
    json.dumps(answer)  # cacheable as JSON


def test_history_is_sorted_newest_first():
    dates = [entry["date"][:4] for entry in parse_score_answer(answers.HISTORY)["scores"]]
    assert dates == ["2022", "2021", "2020"]


def test_a_2018_entry_with_only_date_and_score_is_an_aggregate_without_engines():
    answer = parse_score_answer({"scores": [{"date": "2018-10-12", "score": "0.99"}]})
    assert answer["scores"] == [
        {"date": "2018-10-12T00:00:00.000+00:00", "score": 0.99, "level": None, "details": []}
    ]


def test_legacy_strings_and_dates_are_accepted():
    entry = parse_score_answer(answers.LEGACY_2018)["scores"][0]
    assert entry["score"] == 0.99 and entry["date"] == "2018-10-12T00:00:00.000+00:00"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (answers.BROKEN_MISSING_DATE, "date"),
        (answers.BROKEN_MISSING_SCORES, "score"),
        (answers.RESULTS_UNDER_OTHER_KEY, "unknown keys: results"),
        ({"scores": "many"}, "'scores' is not a list"),
        ({"scores": [{"date": "yesterday", "score": 1, "details": []}]}, "date"),
        ({"scores": [{"date": "2020-01-01", "score": "high", "details": []}]}, "score"),
        ({"scores": [{"date": "2020-01-01", "score": True, "details": []}]}, "score"),
        ({"scores": [{"date": "2020-01-01", "score": 1, "details": "none"}]}, "details"),
        ({"scores": [{"date": "9999-12-31T23:00:00-05:00", "score": 1}]}, "date"),
        ({"scores": [{"date": "2020-01-01", "score": 10**4000}]}, "score"),
        ({"scores": [{"date": "2020-01-01", "score": "9" * 5000}]}, "score"),
        ({"x" * 10000: 1}, "unknown keys: xxx"),
        ({"scores": [["a"]]}, "scores"),
        ([{"scores": []}], "a list"),
        ("text", "JSON a string"),
        (3, "JSON a number"),
        (None, "JSON null"),
    ],
)
def test_unexpected_structures_are_key_errors(body, detail):
    with pytest.raises(UpstreamFormatError) as raised:
        parse_score_answer(body)
    assert raised.value.code == "key error"
    assert raised.value.message.startswith("Threatscore answered in an unexpected format")
    assert detail in raised.value.message
    assert len(raised.value.message) <= 400  # whatever Threatscore sent, the message is bounded


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"type": "Server Error", "code": "500", "message": "Internal Error"}}, "Internal Error"),
        ({"error": "quota exceeded"}, "quota exceeded"),
        ({"error": {}}, "no message"),
    ],
)
def test_an_error_in_a_200_answer_is_an_error_not_no_data(body, message):
    with pytest.raises(RelayError) as raised:
        parse_score_answer(body)
    assert raised.value.code == "unknown"
    assert raised.value.message == f"Threatscore answered with an error: {message}"
