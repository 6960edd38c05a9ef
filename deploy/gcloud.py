"""Running `gcloud` for the deploy tools: never interactive, visible as it works, clear when it fails.

Every call gets `--project` and `--quiet`, its standard input is /dev/null (or the secret value it
is given, closed after it), and CLOUDSDK_CORE_DISABLE_PROMPTS is set: gcloud can never wait on a
question nobody sees. What gcloud says on its standard error (progress, warnings) is passed on as
it comes, indented; its standard output is kept for the caller (JSON of a describe). A call that
fails on an error Google documents as transient (IAM propagating, an API just enabled, concurrent
policy changes) is retried with backoff for at most IAM_RETRY_SECONDS, each error shown; any
other error stops at once with gcloud's error whole, the step that failed and what to do.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

from deploy.settings import DeployError

_NOT_FOUND = re.compile(r"NOT_FOUND|not found|was not found|does not exist", re.IGNORECASE)
# Errors Google documents as transient: a binding that follows the account's creation (IAM is
# eventually consistent), an API enabled moments ago, two writers of one IAM policy.
TRANSIENT = re.compile(
    r"Service account \S+ does not exist"
    r"|If you enabled this API recently, wait a few minutes"
    r"|concurrent policy changes"
    r"|Please retry the whole read-modify-write",
    re.IGNORECASE,
)
FIRST_DELAY_SECONDS, MAX_DELAY_SECONDS = 1.0, 30.0

# What to do, for the errors an operator meets first.
HINTS = (
    (
        re.compile(r"active account|gcloud auth login|Reauthentication failed|refresh token", re.I),
        "log gcloud in (`gcloud auth login`), then run the same make command again",
    ),
    (
        re.compile(r"billing", re.I),
        "the project needs a billing account: `gcloud billing projects link PROJECT --billing-account=ID`",
    ),
    (
        re.compile(r"Build failed|cloudbuild|build service account|artifactregistry", re.I),
        "the function's build lacks a permission: grant the build's service account the Cloud Build "
        "role (see docs/deploying.md, 'When the build fails with a permission error'), then rerun",
    ),
    (
        re.compile(r"PERMISSION_DENIED|does not have permission|permission .* denied|403", re.I),
        "your account lacks a role for this step: see docs/deploying.md, 'Roles you need', then rerun",
    ),
)
RERUN = "fix what gcloud says, then run the same make command again (nothing is created twice)"


@dataclass
class Answer:
    returncode: int
    stdout: str
    stderr: str


class Gcloud:
    """Runs `gcloud`, or prints what it would run (DRY_RUN). Every command is printed first."""

    def __init__(self, project: str, dry_run: bool, retry_seconds: float = 120.0):
        self.project = project
        self.dry_run = dry_run
        self.retry_seconds = retry_seconds
        self.started = time.monotonic()
        self.step_name = "starting"
        self.commands: list[list[str]] = []  # every command, as run or printed
        self.executable = "gcloud" if dry_run else shutil.which("gcloud")
        if self.executable is None:
            raise DeployError("gcloud is not on PATH (install the Google Cloud CLI, or try DRY_RUN=1)")

    # --- what the operator sees ---------------------------------------------------------------

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def step(self, name: str) -> None:
        """A line per step, with the time since the start."""
        self.step_name = name
        print(f"\n[{self.elapsed()}] {name}", flush=True)

    def command(self, args: list[str]) -> list[str]:
        return ["gcloud", *args, f"--project={self.project}", "--quiet"]

    # --- running ------------------------------------------------------------------------------

    def _spawn(self, command: list[str], stdin: str | None, stream: bool) -> Answer:
        environment = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
        process = subprocess.Popen(  # noqa: S603 - gcloud with our own arguments, no shell
            [self.executable, *command[1:]],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
        reader.start()
        if stdin is not None:
            try:
                process.stdin.write(stdin)
                process.stdin.close()
            except BrokenPipeError:
                pass
        errors = []
        for line in process.stderr:
            errors.append(line)
            if stream:
                print("    " + line.rstrip("\n"), flush=True)
        process.wait()
        reader.join()
        return Answer(process.returncode, "".join(output), "".join(errors))

    def _show(self, command: list[str], stdin_note: str | None) -> None:
        shown = shlex.join(command) + (f"   # standard input: {stdin_note}" if stdin_note else "")
        print(("  [dry run] " if self.dry_run else "  $ ") + shown, flush=True)

    def call(
        self,
        *args: str,
        stdin: str | None = None,
        stdin_note: str = "",
        stream: bool = True,
        allow_missing: bool = False,
    ) -> Answer | None:
        """Runs one command; retries the transient errors within the bound. None in a dry run, and
        when `allow_missing` and Google says the resource does not exist."""
        command = self.command(list(args))
        self.commands.append(command)
        self._show(command, stdin_note if stdin is not None or stdin_note else None)
        if self.dry_run:
            return None
        deadline = time.monotonic() + self.retry_seconds
        delay = FIRST_DELAY_SECONDS
        started = time.monotonic()
        while True:
            answer = self._spawn(command, stdin, stream)
            if answer.returncode == 0:
                took = time.monotonic() - started
                if took >= 5:
                    print(f"    done in {took:.0f} s", flush=True)
                return answer
            if allow_missing and _NOT_FOUND.search(answer.stderr) and not TRANSIENT.search(answer.stderr):
                return None
            left = deadline - time.monotonic()
            if not TRANSIENT.search(answer.stderr):
                raise self.failure(command, answer)
            if left <= 0:
                raise self.failure(
                    command,
                    answer,
                    f"still failing after {self.retry_seconds:g} s of retries (IAM_RETRY_SECONDS); "
                    "Google may need longer: run the same make command again in a few minutes",
                )
            pause = min(delay, left)
            first = next((line for line in answer.stderr.splitlines() if line.strip()), "")
            print(
                f"    transient error (Google propagating a change): {first.strip()}\n"
                f"    retrying in {pause:.0f} s ({left:.0f} s left of IAM_RETRY_SECONDS)",
                flush=True,
            )
            time.sleep(pause)
            delay = min(delay * 2, MAX_DELAY_SECONDS)

    def failure(self, command: list[str], answer: Answer, what_to_do: str | None = None) -> DeployError:
        if what_to_do is None:
            what_to_do = next((hint for pattern, hint in HINTS if pattern.search(answer.stderr)), RERUN)
        return DeployError(
            f"step failed: {self.step_name} (after {self.elapsed()})\n"
            f"  $ {shlex.join(command)}\n"
            f"gcloud said (exit status {answer.returncode}):\n{answer.stderr.rstrip()}\n"
            f"What to do: {what_to_do}"
        )

    def run(self, *args: str, stdin: str | None = None, stdin_note: str = "") -> str:
        answer = self.call(*args, stdin=stdin, stdin_note=stdin_note)
        return answer.stdout if answer else ""

    def describe(self, *args: str) -> dict | list | None:
        """The resource as JSON, or None when Google says it does not exist (or in a dry run)."""
        answer = self.call(*args, "--format=json", stream=False, allow_missing=True)
        if answer is None:
            if not self.dry_run:
                print("    (not found)", flush=True)
            return None
        try:
            return json.loads(answer.stdout or "{}")
        except json.JSONDecodeError:
            return {}

    def ensure(self, describe: list[str], create: list[str], what: str = "") -> dict | None:
        """Describe before create: creates the resource only when it is missing."""
        found = self.describe(*describe)
        if found is None:
            if what:
                print(f"    creating {what}", flush=True)
            self.run(*create)
        return found
