"""The progress line of a long batch, on a terminal only."""

from __future__ import annotations

import io
import time

from relay.cli import progress as progress_module
from relay.cli.progress import Progress
from tests.cli import Terminal


def test_a_slow_batch_shows_its_progress_on_a_terminal(monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_AFTER", 0.0)
    terminal = Terminal()
    progress = Progress(4, terminal)

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
    monkeypatch.setattr(progress_module, "PROGRESS_AFTER", 0.0)
    pipe = io.StringIO()
    with Progress(4, pipe):
        pass
    assert pipe.getvalue() == ""
    monkeypatch.setattr(progress_module, "PROGRESS_AFTER", 60.0)
    terminal = Terminal()
    with Progress(4, terminal):
        pass  # over before the moment
    assert terminal.getvalue() == ""
