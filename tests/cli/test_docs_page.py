"""docs/command-line.md works as written: each marked example, run with bash from the project's
folder against the simulator's catalogue, prints what the page shows and ends as it says.

The markers are the README's (`<!-- readme-example [exit=N] -->`, then `<!-- readme-output -->`,
where `...` stands for anything); the page's simulator address (127.0.0.1:8081) is swapped for
the test's own.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from simulator import ThreatscoreSimulator
from tests.relay_process import ROOT, without_relay_settings

PAGE = ROOT / "docs" / "command-line.md"
TEXT = PAGE.read_text(encoding="utf-8")
EXAMPLE = re.compile(r"<!-- readme-example(?P<options>[^>]*)-->\s*```sh\n(?P<script>.*?)```", re.S)
OUTPUT = re.compile(r"\s*<!-- readme-output -->\s*```text\n(?P<output>.*?)```", re.S)
PAGE_SIMULATOR = "127.0.0.1:8081"


def examples() -> list[tuple[int, str, str | None, int]]:
    """(line, script, output, exit status) of each marked example."""
    found = []
    for match in EXAMPLE.finditer(TEXT):
        output = OUTPUT.match(TEXT, match.end())
        status = next((int(o[5:]) for o in match.group("options").split() if o.startswith("exit=")), 0)
        line = TEXT.count("\n", 0, match.start()) + 1
        found.append((line, match.group("script"), output.group("output") if output else None, status))
    return found


def matches(template: str, text: str) -> bool:
    """`text` is `template`, where `...` stands for anything (trailing spaces ignored)."""
    pattern = ".*?".join(re.escape(part) for part in _tidy(template).split("..."))
    return re.fullmatch(pattern, _tidy(text), re.S) is not None


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


@pytest.fixture(scope="module")
def simulator():
    with ThreatscoreSimulator(catalogue=True) as running:
        yield running


def test_the_page_has_examples_of_each_command():
    scripts = "\n".join(script for _, script, _, _ in examples())
    for command in ("lookup -", "lookup --json", "health", "settings", "token"):
        assert f"python -m relay {command}" in scripts, command


@pytest.mark.parametrize(("line", "script", "output", "status"), examples(), ids=lambda x: str(x)[:20])
def test_an_example_answers_as_shown(simulator, line, script, output, status):
    address = simulator.url.removeprefix("http://")
    result = subprocess.run(
        ["bash", "-c", script.replace(PAGE_SIMULATOR, address)],
        cwd=ROOT,
        env=without_relay_settings(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == status, f"docs/command-line.md:{line}\n{result.stdout}{result.stderr}"
    assert output is not None, f"docs/command-line.md:{line} shows no output"
    assert matches(output.replace(PAGE_SIMULATOR, address), result.stdout), result.stdout
