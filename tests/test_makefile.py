"""The Makefile as a newcomer meets it, and what the deployed upload leaves out."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.relay_process import ROOT, free_port, without_relay_settings

TARGETS = (
    "help",
    "demo",
    "run",
    "test",
    "lint",
    "unit",
    "bench",
    "loadtest",
    "clean",
    "deploy",
    "register",
    "destroy",
)


def make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_make_alone_lists_the_targets():
    alone, help_ = make(), make("help")
    assert alone.returncode == 0 and alone.stdout == help_.stdout
    listed = [line.split()[0] for line in alone.stdout.splitlines() if line.startswith("  ")]
    assert tuple(listed) == TARGETS
    assert "clean" in alone.stdout and "3.11 or newer" in alone.stdout


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The Makefile and requirements in a folder of their own: the real .venv stays untouched."""
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def fake_python(folder: Path, version: str) -> Path:
    """A `python3` that says it is `version` (and is too old for the Makefile's check)."""
    script = folder / f"python{version}"
    script.write_text(f'#!/bin/sh\n[ "$1" = "-V" ] && echo "Python {version}" && exit 0\nexit 1\n')
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("target", ["demo", "run", "test"])
def test_a_python_older_than_3_11_is_refused_in_one_line_and_no_venv_is_made(project_copy, target):
    python = fake_python(project_copy, "3.10.12")

    result = make(target, f"PYTHON={python}", cwd=project_copy)

    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Python 3.11 or newer is needed" in line and "Python 3.10.12" in line
    assert not (project_copy / ".venv").exists()


def test_a_missing_python_is_named(project_copy):
    result = make("demo", "PYTHON=no-such-python3", cwd=project_copy)
    assert result.returncode != 0
    assert "'no-such-python3' is not found" in result.stderr
    assert not (project_copy / ".venv").exists()


@pytest.mark.process
def test_a_failed_install_leaves_no_broken_venv(project_copy):
    (project_copy / "requirements.txt").write_text("this is not a requirement ===\n")

    result = make("demo", cwd=project_copy)

    assert result.returncode != 0
    assert "installing requirements.txt failed (.venv removed)" in result.stderr
    assert not (project_copy / ".venv").exists()


def test_the_simulator_is_not_uploaded():
    ignored = (ROOT / ".gcloudignore").read_text().split()
    assert "simulator/" in ignored and ".simulator/" in ignored
    assert ".simulator/" in (ROOT / ".gitignore").read_text().split()


def _first_words_of_make_run(env: dict[str, str]) -> str:
    """What `make run` prints before the relay serves; then it is stopped (its whole session)."""
    port = free_port()
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "functions-framework" in line:  # make echoes the command that serves: the hint came before
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    return "".join(lines)


@pytest.mark.process
def test_make_run_says_it_asks_the_real_threatscore_and_that_make_demo_shows_answers():
    said = _first_words_of_make_run(without_relay_settings(os.environ))

    assert "make run: the relay sends its lookups to https://api.threatscore.cyberprotect.cloud" in said
    assert "allow-listed" in said
    assert "make demo" in said
    assert said.index("make demo") < said.index("functions-framework")


@pytest.mark.process
def test_make_run_names_the_url_it_was_given_and_nothing_more():
    env = {**without_relay_settings(os.environ), "THREATSCORE_API_URL": "http://127.0.0.1:8081"}

    said = _first_words_of_make_run(env)

    assert "make run: the relay sends its lookups to http://127.0.0.1:8081 (Threatscore's v3 API)." in said
    assert "make demo" not in said


# What each line of .gitignore stands for in a working tree (deploy.env is the operator's own).
MADE_BY_TARGETS = {
    ".venv/": ".venv/bin/python",
    "__pycache__/": "relay/__pycache__/app.cpython-313.pyc",
    "*.pyc": "tests/__pycache__/test_app.cpython-313.pyc",
    ".pytest_cache/": ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/": ".ruff_cache/0.1/1",
    ".hypothesis/": ".hypothesis/examples/x",
    "bench-results/": "bench-results/run.json",
    ".schemathesis/": ".schemathesis/x",
    ".simulator/": ".simulator/xdr-key.pem",
    ".deploy/": ".deploy/source/relay/app.py",
}


def test_make_clean_leaves_the_tree_as_a_fresh_clone(tmp_path):
    ignored = [
        line.strip()
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(ignored) == {*MADE_BY_TARGETS, "deploy.env"}  # a new ignored path: add it here and to clean
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    for name in ("Makefile", ".gitignore"):
        shutil.copy(ROOT / name, clone / name)
    subprocess.run(["git", "add", "Makefile", ".gitignore"], cwd=clone, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t", "--allow-empty"],
        cwd=clone,
        check=True,
    )
    for path in [*MADE_BY_TARGETS.values(), "deploy.env"]:
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_text("x")

    result = make("clean", cwd=clone)

    assert result.returncode == 0, result.stderr
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert status == ["!! deploy.env"]
