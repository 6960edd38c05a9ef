"""Hostile and malformed input, through the whole relay in-process.

Whatever arrives, the answer is HTTP 200 with a JSON envelope that obeys CTIM
and the OpenAPI description, never a traceback, and Threatscore only ever
receives one fully percent-encoded path segment.
"""

from __future__ import annotations

import io
import json
import re
from urllib.parse import quote, unquote

import pytest

from relay.observables import Observable, canonical_value
from tests import answers
from tests.contract import check_conforms
from tests.ctim import check_answer

OBSERVE = "/observe/observables"
SCORE_PREFIX = "/api/score/"
# quote(value, safe="") leaves only these unencoded.
ENCODED_SEGMENT = re.compile(r"[A-Za-z0-9._~%-]+")


@pytest.fixture(autouse=True)
def upstream_paths_are_one_encoded_segment(threatscore):
    """Checked after every test of this module: whatever reached Threatscore was encoded."""
    yield
    for raw_path in threatscore.raw_paths:
        assert raw_path.startswith(SCORE_PREFIX), raw_path
        segment = raw_path.removeprefix(SCORE_PREFIX)
        assert ENCODED_SEGMENT.fullmatch(segment), raw_path
        value = unquote(segment)
        assert quote(value, safe="") == segment, f"{raw_path} is not fully encoded"
        assert value not in ("", ".", ".."), raw_path


def call(client, body, path=OBSERVE, content_type="application/json", **kwargs) -> dict:
    """POST `body` (bytes, or JSON-encoded) and check what any caller may rely on."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(path, data=data, content_type=content_type, **kwargs)
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "application/json"
    assert b"Traceback" not in response.data
    answer = response.get_json()
    check_answer(answer)
    check_conforms(path, "POST", 200, answer, response.headers)
    return answer


def only_error(answer: dict) -> dict:
    assert set(answer) == {"errors"} and len(answer["errors"]) == 1, answer
    return answer["errors"][0]


# --- refused with a clear "invalid argument" ------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(b"", "Invalid JSON payload", id="empty body"),
        pytest.param(b"{oops", "Invalid JSON payload", id="invalid JSON"),
        pytest.param(b'[{"type": "ip", "value": "1.1.1.1"}', "Invalid JSON payload", id="truncated JSON"),
        pytest.param(b'[{"type":"ip","value":"\xff\xfe"}]', "Invalid JSON payload", id="invalid UTF-8"),
        pytest.param(
            b'[{"type":"ip","value":"1.1.1.1\x00"}]', "Invalid JSON payload", id="raw NUL in a string"
        ),
        pytest.param(b"[" + b"9" * 5000 + b"]", "Invalid JSON payload", id="5000-digit number"),
        pytest.param(b"[" * 100_000, "nested too deeply", id="deeply nested"),
        pytest.param(b'{"type": "ip", "value": "1.1.1.1"}', "got an object", id="an object"),
        pytest.param(b'"1.1.1.1"', "got a string", id="a string"),
        pytest.param(b"42", "got a number", id="a number"),
        pytest.param(b"4.2e1", "got a number", id="a float"),
        pytest.param(b"null", "got null", id="null"),
        pytest.param(b"true", "got a boolean", id="a boolean"),
        pytest.param(b"[1]", "Invalid observables: item 0: Invalid input type.", id="item a number"),
        pytest.param(
            b'[{"type": "ip", "value": "1.1.1.1"}, "1.1.1.1"]',
            "item 1: Invalid input type.",
            id="item a string",
        ),
        pytest.param(b"[null]", "item 0: Invalid input type.", id="item null"),
        pytest.param(b"[[]]", "item 0: Invalid input type.", id="item a list"),
        pytest.param(b'[{"value": "1.1.1.1"}]', "type: Missing data", id="type missing"),
        pytest.param(b'[{"type": "ip"}]', "value: Missing data", id="value missing"),
        pytest.param(b'[{"type": "", "value": "1.1.1.1"}]', "type: Shorter than minimum", id="type empty"),
        pytest.param(b'[{"type": "ip", "value": ""}]', "value: Shorter than minimum", id="value empty"),
        pytest.param(b'[{"type": 4, "value": "1.1.1.1"}]', "type: Not a valid string", id="type a number"),
        pytest.param(
            b'[{"type": "ip", "value": 16843009}]', "value: Not a valid string", id="value a number"
        ),
        pytest.param(b'[{"type": "ip", "value": true}]', "value: Not a valid string", id="value a boolean"),
        pytest.param(b'[{"type": "ip", "value": null}]', "value: Field may not be null", id="value null"),
        pytest.param(b'[{"type": "ip", "value": NaN}]', "value: Not a valid string", id="value NaN"),
        pytest.param(
            b'[{"type": {"t": "ip"}, "value": "1.1.1.1"}]', "type: Not a valid string", id="type nested"
        ),
        pytest.param(
            b'[{"type": "ip", "value": ["1.1.1.1"]}]', "value: Not a valid string", id="value nested"
        ),
        pytest.param(
            json.dumps([{"type": "domain", "value": "a" * 1025}]).encode(),
            "item 0: value is longer than 1024 characters",
            id="value huge",
        ),
        pytest.param(
            json.dumps([{"type": "ip", "value": f"10.0.{i // 256}.{i % 256}"} for i in range(1001)]).encode(),
            "Too many observables: 1001 sent, at most 1000 per request",
            id="1001 observables",
        ),
    ],
)
def test_malformed_bodies_are_a_clear_invalid_argument(threatscore, client, body, words):
    error = only_error(call(client, body))
    assert error["code"] == "invalid argument" and error["type"] == "fatal"
    assert words in error["message"], error["message"]
    assert threatscore.total_calls == 0


def test_a_body_over_the_limit_is_refused(threatscore, client):
    body = json.dumps([{"type": "ip", "value": "198.51.100.7", "pad": "x" * 1024 * 1024}]).encode()
    error = only_error(call(client, body))
    assert error == {
        "type": "fatal",
        "code": "invalid argument",
        "message": "Request body is larger than 1048576 bytes",
    }
    assert threatscore.total_calls == 0


class EndlessBody(io.RawIOBase):
    """A request body that never ends, counting what was read of it."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        assert self.bytes_read < 50_000_000, "the relay is reading the whole body"
        buffer[: len(buffer)] = b" " * len(buffer)
        self.bytes_read += len(buffer)
        return len(buffer)

    # Werkzeug's test client measures a body with tell/seek; there is no length to find.
    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return 0

    def seek(self, *_args) -> int:
        return 0


@pytest.mark.parametrize(
    ("path", "status"),
    [(OBSERVE, 200), ("/health", 200), ("/version", 200), ("/nowhere", 404), ("/favicon.ico", 404)],
)
def test_an_endless_body_without_length_is_never_read_whole(threatscore, make_client, path, status):
    # Neither by the relay (one byte past the limit) nor by the framework after it.
    client = make_client(RELAY_MAX_BODY_BYTES="1000")
    threatscore.answer("127.0.0.100", answers.NO_DATA_NESTED_EMPTY)
    body = EndlessBody()
    response = client.post(
        path,
        input_stream=body,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what gunicorn says of a chunked body
    )
    assert response.status_code == status
    check_conforms(path, "POST", status, response.get_json())
    if path == OBSERVE:
        assert only_error(response.get_json())["message"] == "Request body is larger than 1000 bytes"
        assert body.bytes_read == 1001
    else:
        assert body.bytes_read == 0  # these paths take no body: none is read


@pytest.mark.parametrize(
    ("setting", "value", "body", "words"),
    [
        (
            "RELAY_MAX_BODY_BYTES",
            "100",
            [{"type": "ip", "value": "198.51.100.7", "x": "y" * 100}],
            "100 bytes",
        ),
        (
            "RELAY_MAX_OBSERVABLES",
            "2",
            [{"type": "ip", "value": f"198.51.100.{i}"} for i in range(3)],
            "at most 2",
        ),
        ("RELAY_MAX_VALUE_LENGTH", "10", [{"type": "domain", "value": "eleven.char"}], "longer than 10"),
    ],
)
def test_limits_are_settings(threatscore, make_client, setting, value, body, words):
    client = make_client(**{setting: value})
    error = only_error(call(client, body))
    assert error["code"] == "invalid argument" and words in error["message"]
    assert threatscore.total_calls == 0


# --- left out silently: not a valid observable of a supported type ------------------

NOT_LOOKED_UP = [
    ("ip", "1.1.1.1\x00"),
    ("ip", "\x001.1.1.1"),
    ("domain", "example\x00.com"),
    ("domain", "exa\x07mple.com"),
    ("domain", "example.com\x1b[31m"),
    ("ip", "1.1.1.1\u200f"),  # right-to-left mark
    ("domain", "\u202eevil.example"),  # right-to-left override
    ("domain", "evil\u200b.example"),  # zero-width space
    ("ip", "１.１.１.１"),  # fullwidth digits
    ("ip", "1.1.1.1/../../x?y#z"),
    ("domain", "1.1.1.1/../../x?y#z"),
    ("domain", "example.com/../../admin?q=1#frag"),
    ("domain", "example.com?x=1"),
    ("domain", "%2e%2e"),
    ("domain", ".."),
    ("ipv6", "::1/../../x"),
    ("ipv6", "2001:db8::1%../../x"),
    ("url", "https://example.com/../../x?y#z"),
    ("IP ", "1.1.1.1"),
    ("x" * 100_000, "1.1.1.1"),  # a huge type: not a supported one
    ("ip", "\ud800"),  # a lone surrogate (valid in a JSON string)
]


@pytest.mark.parametrize(("observable_type", "value"), NOT_LOOKED_UP)
@pytest.mark.parametrize("path", [OBSERVE, "/deliberate/observables", "/refer/observables"])
def test_invalid_values_are_left_out_and_never_sent(threatscore, client, path, observable_type, value):
    answer = call(client, [{"type": observable_type, "value": value}], path=path)
    assert answer == {"data": []} if path.startswith("/refer") else {"data": {}}
    assert threatscore.total_calls == 0


def test_extra_keys_are_ignored(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    body = [{"type": "ip", "value": "198.51.100.7", "id": 5, "module": "x", "nested": {"a": [1, None]}}]
    answer = call(client, body)
    assert answer["data"]["verdicts"]["docs"][0]["observable"] == {"type": "ip", "value": "198.51.100.7"}


# --- equivalent spellings: one lookup, the caller's spelling echoed --------------------

EQUIVALENT_SPELLINGS = {
    "ipv6": [
        ("ipv6", "2001:db8::1"),
        ("ipv6", "2001:0db8:0000:0000:0000:0000:0000:0001"),
        ("IPv6", "2001:DB8::1"),
        ("ipv6", "2001:db8:0:0::1"),
        ("ipv6", "2001:db8::0.0.0.1"),
        ("ipv6", "2001:db8::1%eth0"),
        ("ipv6", " 2001:db8::1 "),
    ],
    "ipv4-mapped": [
        ("ipv6", "::ffff:198.51.100.7"),
        ("ip", "198.51.100.7"),
        ("ipv6", "::FFFF:c633:6407"),
        ("ipv6", "0:0:0:0:0:ffff:198.51.100.7"),
        ("IP", "\t198.51.100.7\n"),
    ],
    "domain": [
        ("domain", "Bücher.Example."),
        ("domain", "bücher.example"),
        ("DOMAIN", "xn--bcher-kva.example"),
        ("domain", "BÜCHER.EXAMPLE"),
        ("domain", "ＢÜＣＨＥＲ.example"),  # fullwidth letters
        ("domain", " xn--bcher-kva.EXAMPLE. "),
    ],
}
LOOKED_UP_AS = {"ipv6": "2001:db8::1", "ipv4-mapped": "198.51.100.7", "domain": "xn--bcher-kva.example"}


@pytest.mark.parametrize("group", EQUIVALENT_SPELLINGS)
def test_equivalent_spellings_are_one_lookup_and_each_echoes_the_callers_spelling(threatscore, client, group):
    looked_up = LOOKED_UP_AS[group]
    threatscore.answer(looked_up, answers.FOUR_ENGINES)
    spellings = EQUIVALENT_SPELLINGS[group]
    answer = call(client, [{"type": t, "value": v} for t, v in spellings], path="/deliberate/observables")
    assert threatscore.raw_paths == [SCORE_PREFIX + quote(looked_up, safe="")]
    # Each spelling the caller sent gets its own verdict, echoing it exactly.
    assert [verdict["observable"] for verdict in answer["data"]["verdicts"]["docs"]] == [
        {"type": t.lower(), "value": v} for t, v in spellings
    ]


@pytest.mark.parametrize("group", EQUIVALENT_SPELLINGS)
def test_equivalent_spellings_share_one_cache_entry(group):
    keys = {
        Observable(t.lower(), v, canonical_value(t.lower(), v)).cache_key
        for t, v in EQUIVALENT_SPELLINGS[group]
    }
    assert len(keys) == 1, keys


def test_very_many_duplicates_are_one_lookup(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    answer = call(client, [{"type": "ip", "value": "198.51.100.7"}] * 1000)
    assert threatscore.calls_for("198.51.100.7") == 1
    assert answer["data"]["verdicts"]["count"] == 1


def test_values_that_are_looked_up_reach_threatscore_encoded(threatscore, client):
    body = [
        {"type": "ipv6", "value": "2001:db8::1%eth0"},
        {"type": "domain", "value": "bücher.example"},
        {"type": "ip", "value": " 203.0.113.9 "},
    ]
    call(client, body)
    assert sorted(threatscore.raw_paths) == [
        "/api/score/2001%3Adb8%3A%3A1",
        "/api/score/203.0.113.9",
        "/api/score/xn--bcher-kva.example",
    ]


# --- Content-Type: ignored, the body is read as JSON ----------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",  # what `curl -d` sends
        "multipart/form-data; boundary=xyz",
        "application/octet-stream",
        None,
    ],
)
def test_any_content_type_is_read_as_json(threatscore, client, content_type):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    answer = call(client, [{"type": "ip", "value": "198.51.100.7"}], content_type=content_type)
    assert answer["data"]["verdicts"]["count"] == 1


def test_a_form_body_under_a_form_content_type_is_a_clear_error(threatscore, client):
    answer = call(client, b"type=ip&value=198.51.100.7", content_type="application/x-www-form-urlencoded")
    assert only_error(answer)["message"].startswith("Invalid JSON payload")
    assert threatscore.total_calls == 0


def test_look_alikes_are_other_observables_never_merged(threatscore, client):
    # Cyrillic "а" (U+0430) looks like Latin "a": a different domain, looked up as itself.
    latin, cyrillic = "example.com", "ex\u0430mple.com"
    threatscore.answer("example.com", answers.FOUR_ENGINES)
    threatscore.answer("xn--exmple-4nf.com", answers.HISTORY)
    answer = call(
        client, [{"type": "domain", "value": v} for v in (latin, cyrillic)], path="/deliberate/observables"
    )
    assert sorted(threatscore.raw_paths) == ["/api/score/example.com", "/api/score/xn--exmple-4nf.com"]
    assert [v["observable"]["value"] for v in answer["data"]["verdicts"]["docs"]] == [latin, cyrillic]
    assert [v["disposition_name"] for v in answer["data"]["verdicts"]["docs"]] == ["Suspicious", "Malicious"]
