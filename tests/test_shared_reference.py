"""The shared references beside the clone: skipped with a reason when absent, required by CI."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REQUIRE_SHARED, ROOT, shared_reference


def test_a_missing_reference_skips_naming_what_is_missing(monkeypatch):
    monkeypatch.delenv(REQUIRE_SHARED, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs XDR's nothing: ../shared/reference/no-such-file"):
        shared_reference("no-such-file", "XDR's nothing")


def test_ci_makes_a_missing_reference_fail(monkeypatch):
    monkeypatch.setenv(REQUIRE_SHARED, "1")
    with pytest.raises(pytest.fail.Exception, match="no-such-file is missing"):
        shared_reference("no-such-file", "XDR's nothing")


@pytest.mark.parametrize("present", [True, False])
def test_ci_requires_the_references_only_where_they_are_present(tmp_path, present):
    """.ci/run in a clone with (or without) ../shared/reference beside it, `make` replaced by a
    script that shows what it was given."""
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", project / ".ci" / "run")
    if present:
        (tmp_path / "shared" / "reference").mkdir(parents=True)
    tools = tmp_path / "bin"
    tools.mkdir()
    make = tools / "make"
    make.write_text(f'#!/bin/sh\necho "make $*: ${{{REQUIRE_SHARED}:-not set}}"\n')
    make.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != REQUIRE_SHARED}
    env["PATH"] = f"{tools}:{env['PATH']}"

    result = subprocess.run(
        ["bash", str(project / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"make test: {'1' if present else 'not set'}"
