"""The commands: lookup (its exit status, what it reads, its table on a terminal and piped),
health, settings, and `python -m relay` itself."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

from relay import cli
from relay.logs import flush_logs
from tests.cli import run, table_rows
from tests.relay_process import ROOT, without_relay_settings

OBSERVE = "/observe/observables"
SECRET = "cli-test-secret-" + "z" * 32


# --- lookup ------------------------------------------------------------------------------


def test_lookup_prints_a_table_of_the_catalogue_values(catalogue, capsys):
    status, out, err = run(capsys, "lookup", "198.51.100.7", "203.0.113.5", "example.com", "192.0.2.1")

    assert status == 0, err
    header, *_ = out.splitlines()
    assert header.split() == [
        "observable",
        "type",
        "verdict",
        "score",
        "categories",
        "judgements",
        "Threatscore",
        "link",
    ]
    rows = table_rows(out)
    # The default backend, v3: scores as Threatscore shows them, categories and flags.
    assert rows["198.51.100.7"].split()[1:5] == ["ip", "Malicious", "92.0", "%"]
    assert "malicious_host, blocklist, attack" in rows["198.51.100.7"]  # one per concept
    assert rows["203.0.113.5"].split()[1:5] == ["ip", "Suspicious", "44.0", "%"]
    assert rows["example.com"].split()[1:5] == ["domain", "Clean", "5.0", "%"]
    assert rows["192.0.2.1"].split()[1:5] == ["ip", "no", "data", "0"]
    assert rows["198.51.100.7"].endswith(
        "https://console.threatscore.cyberprotect.cloud/search?query=198.51.100.7"
    )
    assert out.splitlines()[-1] == (
        "4 values: 1 malicious, 1 suspicious, 1 clean, 1 no data, 0 failed, 0 not looked up"
    )
    assert "\033[" not in out  # piped: no colour


@pytest.mark.parametrize("api", ["v3", "score"])
def test_the_score_reads_the_same_with_both_backends(catalogue, capsys, monkeypatch, api):
    monkeypatch.setenv("THREATSCORE_API", api)
    status, out, err = run(capsys, "lookup", "198.51.100.7", "203.0.113.5", "example.com")

    assert status == 0, err
    rows = table_rows(out)
    # The same number in the same format, from the answer (not from a judgement's words).
    assert [rows[value].split()[2:5] for value in rows] == [
        ["Malicious", "92.0", "%"],
        ["Suspicious", "44.0", "%"],
        ["Clean", "5.0", "%"],
    ]


def test_lookup_exits_1_and_shows_the_error_when_one_fails(catalogue, capsys):
    status, out, _ = run(capsys, "lookup", "198.51.100.7", "192.0.2.66", "192.0.2.50")

    assert status == 1
    rows = table_rows(out)
    assert "Malicious" in rows["198.51.100.7"]
    assert "error:" in rows["192.0.2.66"] and "403" in rows["192.0.2.66"]
    assert "error: service unavailable" in rows["192.0.2.50"]


def test_lookup_lists_what_the_relay_leaves_out_and_exits_1(catalogue, capsys):
    status, out, _ = run(capsys, "lookup", "example.com", "email:someone@example.com", "ip:999.1.1.1")

    assert status == 1
    rows = table_rows(out)
    assert rows["email:someone@example.com"].split(None, 2)[2] == (
        "not looked up: the relay does not look up email "
        "(it looks up ip, ipv6, domain, url, md5, sha1, sha256, user_agent)"
    )
    assert rows["ip:999.1.1.1"].split(None, 2)[2] == "not looked up: not a valid value for the type ip"
    assert "Clean" in rows["example.com"]
    assert out.splitlines()[-1].endswith("0 failed, 2 not looked up")


def test_a_type_the_configured_backend_does_not_look_up_says_which_does(catalogue, capsys, monkeypatch):
    monkeypatch.setenv("THREATSCORE_API", "score")
    status, out, _ = run(capsys, "lookup", "http://phish.example/login", "198.51.100.7")

    assert status == 1
    assert table_rows(out)["http://phish.example/login"].split(None, 2)[2] == (
        "not looked up: the score API (THREATSCORE_API=score) does not look up url; v3 does"
    )
    assert catalogue.calls_for("http://phish.example/login") == 0


def test_a_value_that_cannot_be_typed_costs_its_row_only(catalogue, capsys, monkeypatch):
    monkeypatch.setenv("RELAY_MAX_VALUE_LENGTH", "30")
    long_url = "http://phish.example/" + "a" * 30
    status, out, err = run(capsys, "lookup", "foo bar", "198.51.100.7", long_url)

    assert status == 1 and err == ""
    rows = table_rows(out)
    assert (
        rows["foo"].split(None, 3)[3]
        == "not looked up: cannot tell its type: say it as TYPE:VALUE (e.g. user_agent:...)"
    )
    assert rows[long_url].split(None, 2)[2] == (
        "not looked up: longer than 30 characters (RELAY_MAX_VALUE_LENGTH)"
    )
    assert "Malicious" in rows["198.51.100.7"]


@pytest.mark.parametrize(
    "argv", [["lookup"], ["lookup", "--file", "/nonexistent/file"], ["lookup", "--file", "/"]]
)
def test_bad_usage_exits_2(catalogue, capsys, argv):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and err.startswith("error: ")


def test_too_many_observables_is_bad_usage(catalogue, capsys, monkeypatch):
    monkeypatch.setenv("RELAY_MAX_OBSERVABLES", "2")
    status, _, err = run(capsys, "lookup", "192.0.2.1", "192.0.2.2", "192.0.2.3")
    assert status == 2 and "Too many observables" in err


def test_lookup_reads_a_file_and_standard_input(catalogue, capsys, monkeypatch, tmp_path):
    listed = tmp_path / "observables.txt"
    listed.write_text("# a comment\n198.51.100.7\n\nexample.com\n198.51.100.7\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("203.0.113.5\n"))

    status, out, _ = run(capsys, "lookup", "--file", str(listed), "-")

    assert status == 0
    assert [line.split()[0] for line in out.splitlines()[1:-1]] == [
        "203.0.113.5",
        "198.51.100.7",
        "example.com",
    ]
    assert out.splitlines()[-1].startswith("3 values: ")


def test_lookup_json_is_the_body_observe_gives(catalogue, capsys, make_client):
    values = ["198.51.100.7", "203.0.113.5", "example.com", "192.0.2.1", "192.0.2.66"]
    http_answer = (
        make_client(THREATSCORE_API_URL=catalogue.url, THREATSCORE_RETRIES="0")
        .post(
            OBSERVE,
            json=[{"type": "ip" if value[0].isdigit() else "domain", "value": value} for value in values],
        )
        .get_json()
    )
    flush_logs()  # the in-process relay's log lines, out of the command's stdout
    capsys.readouterr()

    status, out, _ = run(capsys, "lookup", "--json", *values)

    assert status == 1  # 192.0.2.66 is refused
    assert without_lookup_times(json.loads(out)) == without_lookup_times(http_answer)


def test_lookup_json_says_on_stderr_what_it_did_not_look_up(catalogue, capsys):
    status, out, err = run(capsys, "lookup", "--json", "hxxp://phish[.]example/login", "10.0.0.0/8")

    assert status == 1
    answer = json.loads(out)  # the body alone on standard output
    assert answer["data"]["verdicts"]["docs"][0]["observable"] == {
        "type": "url",
        "value": "http://phish.example/login",  # the relay was asked about the refanged value
    }
    assert (
        err
        == "not looked up: 10.0.0.0/8: a network range (IPv4 CIDR): Threatscore looks up one address at a time\n"
    )


def without_lookup_times(answer: dict) -> dict:
    """The answer less the validity ends, which count from the moment of each lookup."""
    for kind in answer.get("data", {}).values():
        for doc in kind["docs"]:
            doc.get("valid_time", {}).pop("end_time", None)
    return answer


def test_lookup_uses_the_same_code_path_and_settings(catalogue, capsys, monkeypatch):
    monkeypatch.setenv("THREATSCORE_UI_URL", "https://ui.example")
    monkeypatch.setenv("CTR_ENTITIES_LIMIT", "2")

    status, out, _ = run(capsys, "lookup", "--json", "203.0.113.5")

    answer = json.loads(out)
    assert status == 0
    assert answer["data"]["judgements"]["count"] == 2
    assert answer["data"]["judgements"]["docs"][0]["source_uri"].startswith("https://ui.example/search?")
    assert catalogue.calls_for("203.0.113.5") == 1
    assert catalogue.requests_seen[0].headers["User-Agent"].startswith("threatscore-xdr-relay/")


# --- health, settings, token -------------------------------------------------------------


def test_health_is_ok_when_threatscore_answers(catalogue, capsys):
    status, out, _ = run(capsys, "health")
    assert status == 0 and out.startswith("ok: Threatscore answered at ")
    assert catalogue.calls_for("127.0.0.100") == 1


def test_health_fails_with_the_message(catalogue, capsys, monkeypatch):
    monkeypatch.setenv("HEALTH_OBSERVABLE", "192.0.2.50")
    status, out, _ = run(capsys, "health")
    assert status == 1
    assert out.startswith("health check failed: Threatscore health check failed: ") and "503" in out


def test_settings_shows_values_and_only_whether_secrets_are_set(capsys, monkeypatch):
    monkeypatch.setenv("RELAY_AUTH", "secret")
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-password@10.0.0.3:6379/0")
    monkeypatch.setenv("CACHE_TTL", "90")

    status, out, err = run(capsys, "settings")

    assert status == 0
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["RELAY_SECRET"] == "set"
    assert lines["REDIS_URL"] == "set"
    assert lines["CACHE_TTL"] == "90"
    assert lines["CACHE_NEGATIVE_TTL"] == "600 (default)"
    assert lines["RELAY_AUDIENCE"] == "(not set) (default)"
    assert SECRET not in out + err and "hunter2" not in out + err


def test_a_bad_setting_is_bad_usage_naming_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("CACHE_TTL", "soon")
    status, out, err = run(capsys, "settings")
    assert status == 2 and "CACHE_TTL" in err and out == ""


def test_the_commands_are_one_table():
    assert [command.name for command in cli.COMMANDS] == [
        "lookup",
        "health",
        "token",
        "settings",
        "module-type",
    ]


def test_python_m_relay_runs_and_the_old_token_entry_point_says_where_it_went(catalogue):
    env = {**without_relay_settings(os.environ), "THREATSCORE_API_URL": catalogue.url}

    def python_m(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    looked_up = python_m("relay", "lookup", "198.51.100.7")
    moved = python_m("relay.token")
    usage = python_m("relay")

    assert looked_up.returncode == 0 and "Malicious" in looked_up.stdout
    assert looked_up.stderr == ""  # no log noise on a good lookup
    assert moved.returncode == 1 and "python -m relay token" in moved.stderr
    assert usage.returncode == 2 and "lookup" in usage.stderr


# --- an analyst's file, as pasted from tickets and mails --------------------------------------

# 43 lines: (the line, what its row must say). Typeable values are all answered (a verdict, or
# no data); the others say why they were not looked up.
ANALYST_FILE = (
    ("198.51.100.7", "Malicious"),
    ("203.0.113.5", "Suspicious"),
    ("example.com", "Clean"),
    ("http://phish.example/login", "Malicious"),
    ("44d88612fea8a8f36de82e1278abb02f", "Malicious"),
    ("user_agent:sqlmap/1.7", "Malicious"),
    ("192.0.2.1", "no data"),
    ("192.0.2.2", "no data"),
    ("192.0.2.3", "no data"),
    ("192.0.2.4", "no data"),
    ("2001:db8::bad", "Suspicious"),
    ("192.0.2.20", "Suspicious"),
    ("192.0.2.21", "Malicious"),
    ("legacy.example", "Malicious"),
    ("negative.example", "Clean"),
    ("hxxp://evil[.]com", "no data"),
    ("hxxp://phish[.]example/login", "Malicious"),
    ("198.51.100[.]7", "Malicious"),
    ("phish(.)example", "no data"),
    ("evil{.}example[dot]com", "no data"),
    ("hXXps://phish[.]example/login", "no data"),
    ("8.8.8.8", "no data"),
    ("2001:db8::1", "no data"),
    ("da39a3ee5e6b4b0d3255bfef95601890afd80709", "no data"),
    ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "no data"),
    ("bücher.example", "no data"),
    ("EXAMPLE.com", "Clean"),
    ("http://example.com/path?q=1", "no data"),
    ("user_agent:Mozilla/5.0 (X11; Linux x86_64)", "no data"),
    ("domain:fileserver01", "not looked up: internal, never sent to Threatscore"),
    ("::ffff:192.0.2.1", "no data"),
    ("10.0.0.0/8", "not looked up: a network range (IPv4 CIDR)"),
    ("192.168.10.0/24", "not looked up: a network range (IPv4 CIDR)"),
    ("someone@example.com", "not looked up: an e-mail address (XDR type email)"),
    ("phisher[@]evil[.]com", "not looked up: an e-mail address (XDR type email)"),
    ("WKSTN-042", "not looked up: cannot tell its type (a host name without its domain?)"),
    ("CVE-2021-44228", "not looked up: a vulnerability id (XDR type cve)"),
    ("C:\\Windows\\Temp\\evil.exe", "not looked up: cannot tell its type: say it as TYPE:VALUE"),
    ("1.2.3", "not looked up: cannot tell its type: say it as TYPE:VALUE"),
    ("ftp://files.example/x", "not looked up: cannot tell its type: say it as TYPE:VALUE"),
    ("email:boss@example.com", "not looked up: the relay does not look up email"),
    ("ip:999.1.1.1", "not looked up: not a valid value for the type ip"),
    ("http://exa mple.com/", "not looked up: not a valid value for the type url"),
)


def test_an_analysts_file_answers_every_typeable_value_and_says_why_for_the_others(
    catalogue, capsys, tmp_path
):
    assert len(ANALYST_FILE) == 43
    pasted = tmp_path / "ticket.txt"
    pasted.write_text("".join(f"{line}\n" for line, _ in ANALYST_FILE), encoding="utf-8")

    status, out, err = run(capsys, "lookup", "--file", str(pasted))

    assert status == 1 and err == ""  # some were not looked up
    lines = out.splitlines()
    assert len(lines) == 1 + 43 + 1  # the header, a row for each line, the summary
    for (given, expected), row in zip(ANALYST_FILE, lines[1:-1], strict=True):
        assert row.startswith(given + " "), row  # the value as given
        said = row[len(given) :].split(None, 1)[1]
        assert said.startswith(expected), (given, row)
        assert not said.startswith("error:"), row
    assert lines[-1] == (
        "43 values: 8 malicious, 3 suspicious, 3 clean, 16 no data, 0 failed, 13 not looked up"
    )
    # The refanged value is what Threatscore was asked, once for all its spellings.
    assert catalogue.calls_for("http://evil.com") == 1
    assert catalogue.calls_for("http://phish.example/login") == 1
    assert catalogue.calls_for("hxxp://evil[.]com") == 0


# --- on a terminal -------------------------------------------------------------------------


def lookup_on_a_terminal(catalogue, columns: int, **env: str) -> str:
    """`python -m relay lookup` with its standard output on a pseudo-terminal `columns` wide."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "lookup", "198.51.100.7", "203.0.113.5", "example.com", "10.0.0.0/8"],
        cwd=ROOT,
        env={**without_relay_settings(os.environ), "THREATSCORE_API_URL": catalogue.url, **env},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 1
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_on_a_terminal_verdicts_are_in_colour_and_rows_fit_its_width(catalogue):
    shown = lookup_on_a_terminal(catalogue, 100)

    assert "\033[31mMalicious" in shown and "\033[33mSuspicious" in shown and "\033[32mClean" in shown
    plain = re.sub(r"\033\[[0-9;]*m", "", shown)
    assert max(len(line) for line in plain.splitlines()) <= 100
    assert "Malicious" in plain and "not looked up: a network range" in plain
    assert plain.splitlines()[-1].startswith("4 values: 1 malicious, 1 suspicious, 1 clean")


def test_no_colour_on_a_terminal_with_no_color_set(catalogue):
    shown = lookup_on_a_terminal(catalogue, 100, NO_COLOR="1")
    assert "\033[" not in shown and "Malicious" in shown


def test_the_function_does_not_load_the_command_line():
    # The command line (its table, colours, terminal) stays out of the function's cold start.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, main; print(sorted(m for m in sys.modules if m.startswith('relay.cli')))",
        ],
        cwd=ROOT,
        env={**without_relay_settings(os.environ), "RELAY_AUTH": "none"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.splitlines()[-1] == "[]"


def test_lookup_never_sends_internal_values_unless_told(catalogue, capsys, monkeypatch):
    internal = ("10.0.0.1", "domain:intranet", "http://intranet.local/")
    status, out, _ = run(capsys, "lookup", "198.51.100.7", *internal)

    assert status == 1  # left out, as an unsupported type is
    rows = table_rows(out)
    for value in internal:  # each row shows the value as given
        assert "not looked up: internal, never sent to Threatscore" in rows[value]
        assert "RELAY_LOOKUP_INTERNAL=true" in rows[value]
    assert "Malicious" in rows["198.51.100.7"]
    assert catalogue.total_calls == 1 and catalogue.calls_for("198.51.100.7") == 1

    monkeypatch.setenv("RELAY_LOOKUP_INTERNAL", "true")
    status, out, _ = run(capsys, "lookup", *internal)
    assert status == 0 and "not looked up:" not in out
    assert [catalogue.calls_for(value) for value in ("10.0.0.1", "intranet", "http://intranet.local/")] == [
        1,
        1,
        1,
    ]
