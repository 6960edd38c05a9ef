"""Reading the values asked and telling their types: the relay's own rules, after refanging."""

from __future__ import annotations

import io

import pytest

from relay.cli.reading import Asked, UsageError, lines_asked, refang, typed, values_asked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.7", ("ip", "198.51.100.7")),
        ("2001:db8::1", ("ipv6", "2001:db8::1")),
        ("::ffff:192.0.2.1", ("ipv6", "::ffff:192.0.2.1")),
        ("example.com", ("domain", "example.com")),
        ("bücher.example", ("domain", "bücher.example")),
        ("http://phish.example/login", ("url", "http://phish.example/login")),
        ("HTTPS://x.example", ("url", "HTTPS://x.example")),
        ("44d88612fea8a8f36de82e1278abb02f", ("md5", "44d88612fea8a8f36de82e1278abb02f")),
        ("a" * 40, ("sha1", "a" * 40)),
        ("A" * 64, ("sha256", "A" * 64)),
        ("user_agent:sqlmap/1.7", ("user_agent", "sqlmap/1.7")),
        ("USER_AGENT:Mozilla/5.0 (X11)", ("user_agent", "Mozilla/5.0 (X11)")),
        ("domain:localhost", ("domain", "localhost")),
        ("ip:192.0.2.1", ("ip", "192.0.2.1")),
        ("email:someone@example.com", ("email", "someone@example.com")),
    ],
)
def test_the_type_is_read_from_the_form_or_said(text, expected):
    asked = typed(text)
    assert (asked.type, asked.value) == expected
    assert asked.given == text and asked.reason == ""


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("foo bar", "cannot tell its type: say it as TYPE:VALUE"),
        ("sqlmap/1.7", "cannot tell its type: say it as TYPE:VALUE"),
        ("12345", "cannot tell its type: say it as TYPE:VALUE"),
        ("1.2.3", "cannot tell its type: say it as TYPE:VALUE"),
        ("nottype:x y", "cannot tell its type: say it as TYPE:VALUE"),
        ("localhost", "cannot tell its type (a host name without its domain?)"),
        ("WKSTN-042", "cannot tell its type (a host name without its domain?)"),
        ("10.20.0.0/16", "a network range (IPv4 CIDR): Threatscore looks up one address at a time"),
        ("2001:db8::/32", "a network range (IPv6 CIDR)"),
        ("someone@example.com", "an e-mail address (XDR type email)"),
        ("someone[@]example[.]com", "an e-mail address (XDR type email)"),
    ],
)
def test_a_value_of_no_clear_type_says_why_it_is_not_looked_up(text, reason):
    asked = typed(text)
    assert asked.type is None and asked.given == text
    assert asked.reason.startswith(reason)


def test_only_xdr_type_names_count_as_a_prefix():
    assert typed("http://x.example").type == "url"  # "http" is no type
    assert typed("2001:db8::bad").type == "ipv6"  # "2001" is no type


@pytest.mark.parametrize(
    ("defanged", "refanged"),
    [
        ("hxxp://evil[.]com", "http://evil.com"),
        ("hXXps://evil[.]com/login", "https://evil.com/login"),
        ("evil(.)example{.}com", "evil.example.com"),
        ("evil[dot]example[DOT]com", "evil.example.com"),
        ("198.51.100[.]7", "198.51.100.7"),
        ("2001:db8[:]:1", "2001:db8::1"),
        ("someone[@]example.com", "someone@example.com"),
        ("http://example.com/hxxp://x", "http://example.com/hxxp://x"),  # only a leading scheme
        ("plain.example", "plain.example"),
    ],
)
def test_defanged_values_are_refanged(defanged, refanged):
    assert refang(defanged) == refanged


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hxxp://evil[.]com", ("url", "http://evil.com")),
        ("hxxps://evil[.]com/a", ("url", "https://evil.com/a")),
        ("evil[.]com", ("domain", "evil.com")),
        ("198.51.100[.]7", ("ip", "198.51.100.7")),
        ("url:hxxp://evil[.]com", ("url", "http://evil.com")),
        # Free text has no defanged form: a user agent is looked up exactly as said.
        ("user_agent:Bot[.]v1 (x)", ("user_agent", "Bot[.]v1 (x)")),
    ],
)
def test_defanged_values_are_typed_as_what_they_stand_for_and_shown_as_given(text, expected):
    asked = typed(text)
    assert (asked.type, asked.value) == expected
    assert asked.given == text


def test_a_line_repeated_is_asked_once_and_each_spelling_keeps_its_row():
    asked = values_asked(["evil[.]com", "evil.com", "evil[.]com", "domain:evil.com", "x y", "x y"])
    assert asked == [
        Asked("evil[.]com", "domain", "evil.com"),
        Asked("evil.com", "domain", "evil.com"),
        Asked("domain:evil.com", "domain", "evil.com"),
        Asked("x y", None, "x y", typed("x y").reason),
    ]


def test_lines_come_from_arguments_standard_input_and_files_less_blanks_and_comments(tmp_path):
    listed = tmp_path / "observables.txt"
    listed.write_text("# a comment\n  198.51.100.7  \n\nexample.com\n")
    lines = lines_asked(["a.example", "-"], [str(listed)], io.StringIO("203.0.113.5\n   \n# x\n"))
    assert lines == ["a.example", "203.0.113.5", "198.51.100.7", "example.com"]


def test_a_file_that_cannot_be_read_is_bad_usage(tmp_path):
    with pytest.raises(UsageError, match="--file .*: No such file"):
        lines_asked([], [str(tmp_path / "missing.txt")], io.StringIO())
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="not UTF-8 text"):
        lines_asked([], [str(binary)], io.StringIO())
