"""The commands: lookup (its exit status, what it reads, its table on a terminal and piped),
health, settings, and `python -m relay` itself."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

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
    assert "malicious_host, blocklist, flag: blocklist, flag: attack" in rows["198.51.100.7"]
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
