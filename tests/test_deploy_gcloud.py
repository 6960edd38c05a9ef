"""Every gcloud command `make deploy`, `make register` and `make destroy` can issue, and every one
docs/deploying.md shows, parsed by the real Google Cloud CLI.

With an empty configuration (CLOUDSDK_CONFIG pointing at an empty folder) gcloud checks a
command's arguments and then stops at "You do not currently have an active account selected":
reaching that line proves the command well formed. The commands come from the recording fake
gcloud (every egress and Redis option, first and second runs, destroy) and from the dry runs'
printed lines, for each egress and Redis option. (`make register` talks to XDR, not to gcloud: it issues none.)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fake_gcloud import PROJECT, REGION, FakeGcloud

REAL_GCLOUD = shutil.which("gcloud")
pytestmark = pytest.mark.skipif(REAL_GCLOUD is None, reason="the Google Cloud CLI (gcloud) is not installed")
NO_ACCOUNT = "You do not currently have an active account selected"
BASE = {"GCP_PROJECT": PROJECT, "GCP_REGION": REGION, "XDR_REGION": "eu"}
VARIANTS = [
    {"RELAY_AUTH": "jwks"},
    {"RELAY_AUTH": "secret", "SECRET_THREATSCORE_API_KEY": "threatscore-key"},
    {"RELAY_AUTH": "jwks", "EGRESS": "static"},
    {"RELAY_AUTH": "jwks", "REDIS": "memorystore"},
    {
        "RELAY_AUTH": "secret",
        "EGRESS": "static",
        "REDIS": "memorystore",
        "SECRET_THREATSCORE_API_KEY": "threatscore-key",
    },
    {"RELAY_AUTH": "jwks", "SECRET_REDIS_URL": "my-redis-url", "RELAY_ANY_ORGANISATION": "true"},
]


def real_gcloud(args: list[str], config: Path) -> tuple[list[str], int, str]:
    result = subprocess.run(
        [REAL_GCLOUD, *args],
        env={**os.environ, "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return args, result.returncode, result.stderr


def printed_commands(output: str) -> list[list[str]]:
    """The `[dry run] gcloud ...` lines, as argument lists (the `# standard input` note dropped)."""
    commands = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("[dry run] gcloud "):
            commands.append(shlex.split(line.removeprefix("[dry run] gcloud ").split("   # ")[0]))
    return commands


def docs_commands() -> list[list[str]]:
    """Every `gcloud ...` line of docs/deploying.md's shell blocks (placeholders filled in)."""
    page = ROOT / "docs" / "deploying.md"
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("gcloud "):
                commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.timeout(900)
def test_every_command_passes_the_real_gclouds_argument_checks(tmp_path):
    commands: list[list[str]] = []
    for number, variant in enumerate(VARIANTS):
        fake = FakeGcloud(tmp_path / f"run{number}")
        # Secrets of the operator's, and a Redis URL secret that exists with another value (a new
        # version is added; destroy only unbinds it).
        fake.seed("secrets threatscore-key", "secrets my-redis-url", "secrets relay-redis-url")
        settings = {**BASE, **variant}
        for target, extra in (("deploy", {}), ("destroy", {"CONFIRM": PROJECT})):
            result = fake.run(target, **settings, **extra)
            assert result.returncode == 0, result.stdout + result.stderr
        commands += fake.commands()
        if number in (0, len(VARIANTS) - 1):  # the plainest and the fullest, as dry runs print them
            for target in ("deploy", "destroy"):
                dry = fake.run(target, **settings, DRY_RUN="1")
                assert dry.returncode == 0, dry.stderr
                printed = printed_commands(dry.stdout)
                assert printed
                commands += printed
    shown = docs_commands()
    assert len(shown) >= 8  # the page's gcloud commands were found
    commands += shown

    unique = {tuple(command) for command in commands}
    assert len(unique) > 40
    config = tmp_path / "empty-gcloud-config"
    config.mkdir()
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda args: real_gcloud(list(args), config), sorted(unique)))
    refused = [
        f"gcloud {shlex.join(args)}\n  -> exit {code}: {stderr.strip()[:400]}"
        for args, code, stderr in outcomes
        if not (NO_ACCOUNT in stderr or code == 0)
    ]
    assert refused == []
    # The check can fail: a misspelt flag is refused before any account is looked for.
    _, code, stderr = real_gcloud(
        ["run", "services", "update", "relay", f"--region={REGION}", "--cpu-bost"], config
    )
    assert code != 0 and NO_ACCOUNT not in stderr and "unrecognized arguments" in stderr
