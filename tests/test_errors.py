"""The failure table (relay/errors.py): every failure the relay can emit is a row of it, with its
code, a typical message, what it means and what the operator does; docs/troubleshooting.md shows it."""

from __future__ import annotations

import importlib
import pkgutil
import re

import relay
from relay import errors
from relay.errors import RelayError, failure_table
from tests.conftest import ROOT

TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
TABLE_START, TABLE_END = "<!-- failure-table -->", "<!-- /failure-table -->"


def every_failure() -> list[type[RelayError]]:
    """Every subclass of RelayError anywhere in relay/ (each module imported first), in order."""
    for module in pkgutil.walk_packages(relay.__path__, "relay."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: list[type[RelayError]] = []

    def walk(cls: type[RelayError]) -> None:
        for subclass in cls.__subclasses__():
            if subclass.__module__.startswith("relay.") and subclass not in found:
                found.append(subclass)
                walk(subclass)

    walk(RelayError)
    return found


def relay_sources() -> dict[str, str]:
    return {str(path.relative_to(ROOT)): path.read_text() for path in sorted((ROOT / "relay").rglob("*.py"))}


def test_every_failure_has_its_own_row():
    failures = every_failure()
    assert len(failures) >= 19
    for failure in failures:
        row = {name: failure.__dict__.get(name) for name in ("example", "meaning", "action")}
        assert all(row.values()), f"{failure.__name__} needs its own example, meaning and action: {row}"
        assert "code" in failure.__dict__ or failure.code != RelayError.code, failure.__name__


def test_a_code_shared_by_several_failures_means_something_different_for_each():
    by_code: dict[str, list[type[RelayError]]] = {}
    for failure in every_failure():
        by_code.setdefault(failure.code, []).append(failure)
    assert len(by_code["authorization error"]) >= 2  # the caller's token; Threatscore refusing the relay
    assert len(by_code["not found"]) >= 2  # no such endpoint; Threatscore's URL is wrong
    assert len(by_code["unknown"]) >= 3  # a redirect; an unexpected status; a 200 carrying an error
    for code, failures in by_code.items():
        meanings = [failure.meaning for failure in failures]
        assert len(set(meanings)) == len(meanings), code


def test_the_relay_never_raises_the_bare_base():
    """`RelayError(...)` itself would be an `unknown` of no row: every raise names its failure."""
    bare = re.compile(r"(?<![\w.])RelayError\(")
    for path, source in relay_sources().items():
        for number, line in enumerate(source.splitlines(), 1):
            if bare.search(line) and not line.lstrip().startswith("class "):
                raise AssertionError(f"{path}:{number}: {line.strip()}")


def test_every_code_written_in_relay_is_in_the_table():
    codes = {failure.code for failure in every_failure()}
    written = set()
    for source in relay_sources().values():
        written |= set(re.findall(r'^\s+code = "([^"]+)"', source, re.M))
        written |= set(re.findall(r'"code": "([^"]+)"', source))
    assert written, "the search finds the codes"
    assert written <= codes


def test_every_failure_in_errors_py_is_raised_somewhere():
    """No row for a failure nothing raises (the table says what the relay really emits)."""
    sources = "\n".join(source for path, source in relay_sources().items() if path != "relay/errors.py")
    for failure in every_failure():
        if failure.__module__ == errors.__name__:
            assert re.search(rf"\b{failure.__name__}\(", sources), f"{failure.__name__} is never raised"


def test_the_troubleshooting_page_shows_the_failure_table():
    page = TROUBLESHOOTING.read_text(encoding="utf-8")
    assert TABLE_START in page and TABLE_END in page
    shown = page[page.index(TABLE_START) + len(TABLE_START) : page.index(TABLE_END)].strip() + "\n"
    expected = failure_table(every_failure())
    assert shown == expected, f"docs/troubleshooting.md: paste this table between the markers:\n{expected}"


def test_the_troubleshooting_page_has_a_section_for_every_code():
    page = TROUBLESHOOTING.read_text(encoding="utf-8")
    sections = set(re.findall(r"^### `([^`]+)`", page, re.M))
    assert sections == {failure.code for failure in every_failure()}
