"""`python -m relay COMMAND` (relay/cli.py): the function's settings and code, from a shell."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from relay import cli
from relay.cli import infer_type, main, typed_observable
from relay.logs import flush_logs
from relay.observables import Observable
from simulator import ThreatscoreSimulator
from tests.relay_process import ROOT, without_relay_settings

OBSERVE = "/observe/observables"
SECRET = "cli-test-secret-" + "z" * 32


@pytest.fixture(autouse=True)
def _the_processs_logging_is_restored():
    """The command line sends the log to stderr (root handlers): other tests log as the function does."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def catalogue_server():
    with ThreatscoreSimulator(catalogue=True) as simulator:
        yield simulator


@pytest.fixture
def catalogue(catalogue_server, monkeypatch) -> ThreatscoreSimulator:
    """The simulator with its catalogue, and the command line's settings pointing at it."""
    catalogue_server.reset()
    monkeypatch.setenv("THREATSCORE_API_URL", catalogue_server.url)
    monkeypatch.setenv("THREATSCORE_RETRIES", "0")
    return catalogue_server


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def table_rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines()[1:]}


# --- which type a value is ---------------------------------------------------------------


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
    assert typed_observable(text) == expected


@pytest.mark.parametrize("text", ["foo bar", "localhost", "sqlmap/1.7", "12345", "1.2.3", "nottype:x y"])
def test_a_value_of_no_clear_type_must_say_it(text):
    with pytest.raises(cli.UsageError, match="TYPE:VALUE"):
        typed_observable(text)


def test_only_xdr_type_names_count_as_a_prefix():
    assert infer_type("http://x.example") == "url"
    assert typed_observable("http://x.example") == ("url", "http://x.example")  # "http" is no type
    assert typed_observable("2001:db8::bad") == ("ipv6", "2001:db8::bad")  # "2001" is no type


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
    assert "malicious_host, blocklist, flag: blocklist, flag: attack" in rows["198.51.100.7"]
    assert rows["203.0.113.5"].split()[1:5] == ["ip", "Suspicious", "44.0", "%"]
    assert rows["example.com"].split()[1:5] == ["domain", "Clean", "5.0", "%"]
    assert rows["192.0.2.1"].split()[1:5] == ["ip", "no", "data", "0"]
    assert rows["198.51.100.7"].endswith(
        "https://console.threatscore.cyberprotect.cloud/search?query=198.51.100.7"
    )


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
    assert "not looked up: this relay does not support the type" in rows["someone@example.com"]
    assert "not looked up: not a valid value" in rows["999.1.1.1"]
    assert "Clean" in rows["example.com"]


def test_lookup_never_sends_internal_values_unless_told(catalogue, capsys, monkeypatch):
    internal = ("10.0.0.1", "domain:intranet", "http://intranet.local/")
    status, out, _ = run(capsys, "lookup", "198.51.100.7", *internal)

    assert status == 1  # left out, as an unsupported type is
    rows = table_rows(out)
    for value in ("10.0.0.1", "intranet", "http://intranet.local/"):
        assert "not looked up: internal, never sent to Threatscore" in rows[value]
        assert "RELAY_LOOKUP_INTERNAL=true" in rows[value]
    assert "Malicious" in rows["198.51.100.7"]
    assert catalogue.total_calls == 1 and catalogue.calls_for("198.51.100.7") == 1

    monkeypatch.setenv("RELAY_LOOKUP_INTERNAL", "true")
    status, out, _ = run(capsys, "lookup", *internal)
    assert status == 0 and "not looked up" not in out
    assert [catalogue.calls_for(value) for value in ("10.0.0.1", "intranet", "http://intranet.local/")] == [
        1,
        1,
        1,
    ]


@pytest.mark.parametrize(
    "argv", [["lookup"], ["lookup", "foo bar"], ["lookup", "--file", "/nonexistent/file"]]
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
    assert [line.split()[0] for line in out.splitlines()[1:]] == [
        "203.0.113.5",
        "198.51.100.7",
        "example.com",
    ]


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


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_slow_batch_shows_its_progress_on_a_terminal(monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_AFTER", 0.0)
    terminal = Terminal()
    progress = cli._Progress(4, terminal)

    with progress:
        deadline = time.monotonic() + 30
        while "0/4" not in terminal.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(4):
            progress.one_done()
        while "4/4" not in terminal.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)

    shown = terminal.getvalue()
    assert "looking up [" in shown and "0/4" in shown and "4/4" in shown
    assert shown.endswith("\r\033[K")  # the line is cleared at the end


def test_no_progress_line_when_not_a_terminal_or_quick(monkeypatch):
    monkeypatch.setattr(cli, "PROGRESS_AFTER", 0.0)
    pipe = io.StringIO()
    with cli._Progress(4, pipe):
        pass
    assert pipe.getvalue() == ""
    monkeypatch.setattr(cli, "PROGRESS_AFTER", 60.0)
    terminal = Terminal()
    with cli._Progress(4, terminal):
        pass  # over before the moment
    assert terminal.getvalue() == ""


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
    looked_up = subprocess.run(
        [sys.executable, "-m", "relay", "lookup", "198.51.100.7"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    moved = subprocess.run(
        [sys.executable, "-m", "relay.token"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    usage = subprocess.run(
        [sys.executable, "-m", "relay"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert looked_up.returncode == 0 and "Malicious" in looked_up.stdout
    assert looked_up.stderr == ""  # no log noise on a good lookup
    assert moved.returncode == 1 and "python -m relay token" in moved.stderr
    assert usage.returncode == 2 and "lookup" in usage.stderr


def test_the_table_reads_categories_and_scores_from_indicators_and_relationships():
    # The shape the v3 mapping gives (issue 8): the aggregate judgement based-on each indicator.
    observable = {"type": "url", "value": "http://phish.example/login"}
    answer = {
        "data": {
            "verdicts": {
                "count": 1,
                "docs": [
                    {"observable": observable, "disposition_name": "Malicious", "judgement_id": "j-aggregate"}
                ],
            },
            "judgements": {
                "count": 2,
                "docs": [
                    {
                        "id": "j-aggregate",
                        "observable": observable,
                        "reason": "Threatscore score 85.0 % (malicious)",
                    },
                    {"id": "j-row", "observable": observable, "reason": "Analysis 1f2e: score 0.85"},
                ],
            },
            "indicators": {
                "count": 2,
                "docs": [
                    {
                        "id": "i-phishing",
                        "title": "Threatscore category: phishing",
                        "tags": ["phishing", "category"],
                    },
                    {
                        "id": "i-compromise",
                        "title": "Threatscore indicator: compromise",
                        "tags": ["compromise", "indicator"],
                    },
                ],
            },
            "relationships": {
                "count": 3,
                "docs": [
                    {
                        "relationship_type": "based-on",
                        "source_ref": "j-aggregate",
                        "target_ref": "i-phishing",
                    },
                    {
                        "relationship_type": "based-on",
                        "source_ref": "j-aggregate",
                        "target_ref": "i-compromise",
                    },
                    {"relationship_type": "sighting-of", "source_ref": "s-1", "target_ref": "i-phishing"},
                ],
            },
        }
    }
    looked_up = [Observable("url", observable["value"], observable["value"])]
    [row] = cli._rows([("url", observable["value"])], [], looked_up, answer, [{"url": "https://ui/x"}])

    assert (row.verdict, row.score, row.categories, row.judgements) == (
        "Malicious",
        "85.0 %",
        "phishing, flag: compromise",
        "2",
    )
    assert row.link == "https://ui/x" and row.error == ""
