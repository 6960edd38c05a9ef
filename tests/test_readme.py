"""The docs' commands work as written: `make demo`, then every marked example of README.md and
docs/*.md, run as a user would; and the docs agree with the code.

A block marked `<!-- example -->` is run with bash from the project's
folder, its output compared with the `<!-- output -->` block after it (`...`
stands for anything). `exit=N` says the status it ends with (default 0);
`background` marks a block that starts its own servers (it gets ports of its
own, and whatever it leaves behind is stopped). The ports of the docs (8080
the relay, 8081 the simulator) are swapped for free ones. The older markers
`<!-- readme-example -->` and `<!-- readme-output -->` mean the same. A shell
block that cannot run here says why in `<!-- not-run: REASON -->`; a shell
block with neither marker fails. The configuration table is checked against
`Settings`, the code map against the files in relay/, the links against the
pages and their sections.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from relay.cli import format_setting
from relay.config import Settings, declared_settings
from tests.relay_process import ROOT, without_relay_settings

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXTS = {path: path.read_text(encoding="utf-8") for path in DOCUMENTS}
README = TEXTS[ROOT / "README.md"]
CONFIGURATION = ROOT / "docs" / "configuration.md"
DEVELOPMENT = ROOT / "docs" / "development.md"
README_RELAY_PORT, README_SIMULATOR_PORT = 8080, 8081

EXAMPLE_MARK = re.compile(r"<!-- (?:readme-)?example(?P<options>(?: [^>]*)?)-->")
EXAMPLE = re.compile(EXAMPLE_MARK.pattern + r"\s*```sh\n(?P<script>.*?)```", re.S)
OUTPUT = re.compile(r"\s*<!-- (?:readme-)?output -->\s*```text\n(?P<output>.*?)```", re.S)
NOT_RUN = re.compile(r"<!-- not-run: (?P<reason>\S[^>]*\S) -->")
SHELL_FENCE = re.compile(r"^[ \t]*```(?:sh|bash|shell|console)[ \t]*$", re.M)


@dataclass(frozen=True)
class Example:
    script: str
    output: str | None
    exit_status: int
    background: bool
    where: str

    def __str__(self) -> str:
        return self.where


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def doc_examples() -> list[Example]:
    examples = []
    for path, text in TEXTS.items():
        for match in EXAMPLE.finditer(text):
            options = match.group("options").split()
            output = OUTPUT.match(text, match.end())
            status = next((int(option[5:]) for option in options if option.startswith("exit=")), 0)
            examples.append(
                Example(
                    script=match.group("script"),
                    output=output.group("output") if output else None,
                    exit_status=status,
                    background="background" in options,
                    where=f"{name(path)}:{text.count(chr(10), 0, match.start()) + 1}",
                )
            )
    return examples


def matches(template: str, text: str) -> bool:
    """`text` is `template`, where `...` stands for anything (trailing spaces ignored)."""
    pattern = ".*?".join(re.escape(part) for part in _tidy(template).split("..."))
    return re.fullmatch(pattern, _tidy(text), re.S) is not None


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def two_free_ports() -> int:
    """A port P such that P and P + 1 are both free (the relay's and the simulator's)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65535 and _free(port) and _free(port + 1):
            return port
    raise RuntimeError("no two free neighbouring ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        # As a server binds (SO_REUSEADDR): connections of a stopped server in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def on_ports(script: str, port: int) -> str:
    return (
        script.replace(f"127.0.0.1:{README_SIMULATOR_PORT}", f"127.0.0.1:{port + 1}")
        .replace(f"127.0.0.1:{README_RELAY_PORT}", f"127.0.0.1:{port}")
        .replace(f"--port {README_SIMULATOR_PORT}", f"--port {port + 1}")
        .replace(f"--port={README_RELAY_PORT}", f"--port={port}")
    )


def user_env() -> dict[str, str]:
    """The user's environment, without relay settings a developer may have exported."""
    return without_relay_settings(os.environ)


def processes_using(port: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if f"--port={port}" in command or f"--port {port}" in command:
            found.append(process)
    return found


class Demo:
    """`make demo` as a user starts it: its own terminal session, Ctrl-C to stop it."""

    def __init__(self, port: int, log: Path):
        self.port = port
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.log = log
        self.process = subprocess.Popen(
            ["make", "demo", f"PORT={port}"],
            cwd=ROOT,
            env=user_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # as a terminal's foreground group: Ctrl-C reaches make and the demo
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("Ready in"):
                self.ready.set()
        self.ready.set()  # ended: whoever waits, wakes

    def output(self) -> str:
        return "".join(self.lines)

    def ctrl_c(self) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        finally:
            self._reader.join(timeout=10)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    demo = Demo(two_free_ports(), tmp_path_factory.mktemp("demo") / "demo.log")
    try:
        assert demo.ready.wait(120), "make demo was not ready within 120 s"
        assert demo.process.poll() is None, f"make demo ended:\n{demo.output()}"
        yield demo
    finally:
        demo.kill()


EXAMPLES = doc_examples()


def test_the_docs_have_examples_to_check():
    in_readme = [example for example in EXAMPLES if example.where.startswith("README.md:")]
    # The first section shows the demo; the command line section has its own.
    assert sum(1 for example in in_readme if not example.background) >= 5
    assert any(example.background for example in EXAMPLES)
    assert README.index("make demo") < README.index("## Two commands")
    assert {example.where.split(":")[0] for example in EXAMPLES} >= {
        "README.md",
        "docs/command-line.md",
        "docs/configuration.md",
        "docs/security.md",
    }


def test_the_readme_is_a_front_door():
    assert README.count("\n") <= 260
    for page in ("configuration", "ctim-mapping", "deploying", "security", "caching-and-scale"):
        assert f"(docs/{page}.md)" in README
    for page in ("performance", "troubleshooting", "development", "command-line"):
        assert f"(docs/{page}.md)" in README


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_every_shell_block_runs_or_says_why_not(path):
    text = TEXTS[path]
    for fence in SHELL_FENCE.finditer(text):
        before = text[: fence.start()].rstrip()
        last = before.splitlines()[-1].strip() if before else ""
        line = text.count("\n", 0, fence.start()) + 1
        assert EXAMPLE_MARK.fullmatch(last) or NOT_RUN.fullmatch(last), (
            f"{name(path)}:{line}: a shell block needs <!-- example --> or <!-- not-run: REASON --> before it"
        )
    # A marker always leads to a block: one before a text block or a typo would check nothing.
    marks = [line for line in text.splitlines() if EXAMPLE_MARK.fullmatch(line.strip())]
    assert len(marks) == len(EXAMPLE.findall(text)), name(path)


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_the_docs_name_no_issue_numbers(path):
    assert re.findall(r"\bissues? \d+|\(#\d+\)", TEXTS[path], re.I) == []


def _without_code(text: str) -> str:
    return re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.S | re.M)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    found: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", _without_code(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_every_link_reaches_a_page_and_section(path):
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(TEXTS[path])):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{name(path)}: {target}: no such file"
        if anchor:
            assert anchor in anchors(linked.read_text(encoding="utf-8")), (
                f"{name(path)}: {target}: no such section"
            )


def test_the_code_map_names_every_module_of_relay():
    text = DEVELOPMENT.read_text(encoding="utf-8")
    section = text[text.index("## The code") :]
    section = section[: section.index("\n## ", 1)]
    named = set(re.findall(r"`(relay/[\w/.]+)`", section))
    files = {f"relay/{path.name}" for path in (ROOT / "relay").glob("*.py")}
    packages = {f"relay/{path.parent.name}/" for path in (ROOT / "relay").glob("*/__init__.py")}
    assert files | packages == named, "docs/development.md, The code: name each module of relay/ once"


@pytest.mark.process
@pytest.mark.parametrize("example", [e for e in EXAMPLES if not e.background], ids=str)
def test_a_readme_example_answers_as_shown_while_make_demo_runs(demo, example):
    result = subprocess.run(
        ["bash", "-c", on_ports(example.script, demo.port)],
        cwd=ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == example.exit_status, result.stdout + result.stderr
    if example.output is not None:
        assert matches(on_ports(example.output, demo.port), result.stdout), result.stdout


@pytest.mark.process
@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.background], ids=str)
def test_a_readme_example_with_servers_of_its_own_answers_as_shown(example):
    port = two_free_ports()
    script = subprocess.Popen(
        ["bash", "-c", on_ports(example.script, port)],
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = script.communicate(timeout=120)
    finally:
        with_leftovers = processes_using(port) + processes_using(port + 1)
        if script.poll() is None or with_leftovers:
            _stop_session(script.pid)

    assert script.returncode == example.exit_status, stdout + stderr
    assert example.output is not None
    assert matches(on_ports(example.output, port), stdout), stdout
    assert with_leftovers == [], "the example left servers running"


def _stop_session(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.process
def test_ctrl_c_stops_make_demo_and_leaves_nothing_running(demo):
    # Run last in this module (pytest keeps the order of the file): it stops the shared demo.
    assert "RELAY_AUTH=none" in demo.output()
    assert f"http://127.0.0.1:{demo.port}" in demo.output()
    assert "python -m relay lookup" in demo.output()
    children = psutil.Process(demo.process.pid).children(recursive=True)
    relay = [
        p
        for p in psutil.process_iter(["cmdline"])
        if f"--port={demo.port}" in " ".join(p.info["cmdline"] or [])
    ]
    assert relay, "the relay process was not found"

    demo.ctrl_c()

    assert "relay and simulator stopped" in demo.output()
    gone, alive = psutil.wait_procs([*children, *relay], timeout=15)
    assert alive == [], f"left running: {[p.pid for p in alive]}"
    deadline = time.monotonic() + 15
    while not (_free(demo.port) and _free(demo.port + 1)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _free(demo.port) and _free(demo.port + 1)


# --- the configuration table ---------------------------------------------------------


def settings_table() -> dict[str, str]:
    text = CONFIGURATION.read_text(encoding="utf-8")
    start = text.index("<!-- settings-table -->")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] in ("variable", "---"):
            continue
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_configuration_table_lists_every_setting_with_its_default():
    table = settings_table()
    declared = declared_settings()

    assert list(table) == [setting.env for setting in declared]
    for setting in declared:
        shown = format_setting(setting.default)
        expected = f"`{shown}`" if shown else "not set"
        by_backend = {api: getattr(Settings(threatscore_api=api), setting.field) for api in ("v3", "score")}
        if setting.default is None and by_backend["v3"] is not None:  # the backend's own default
            expected = "; ".join(f"{api}: `{format_setting(value)}`" for api, value in by_backend.items())
        assert table[setting.env] == expected, setting.env


def test_the_template_rule_of_the_examples():
    assert matches('{"a":1,...,"c":3}', '{"a":1,"b":2,"c":3}')
    assert not matches('{"a":1,...,"c":3}', '{"a":2,"b":2,"c":3}')
    assert matches("x  \ny", "x\ny  \n")
