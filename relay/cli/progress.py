"""The progress line of a batch: `looking up [####------] 12/40 (3 s)` on standard error,
only on a terminal and only once a batch takes longer than a moment."""

from __future__ import annotations

import threading
import time
from typing import TextIO

PROGRESS_AFTER = 0.5  # seconds: a quicker batch shows no progress line


class Progress:
    """`looking up: 12/40` on stderr while a batch runs longer than a moment (only on a terminal)."""

    def __init__(self, total: int, stream: TextIO):
        self._total = total
        self._stream = stream
        self._done = 0
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    def one_done(self) -> None:
        with self._lock:
            self._done += 1

    def __enter__(self) -> Progress:
        if self._total > 1 and self._stream.isatty():
            self._thread = threading.Thread(target=self._show, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._finished.set()
        if self._thread is not None:
            self._thread.join()
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()

    def _show(self) -> None:
        if self._finished.wait(PROGRESS_AFTER):
            return
        started = time.monotonic() - PROGRESS_AFTER
        while True:
            with self._lock:
                done = min(self._done, self._total)
            width = 30
            filled = width * done // self._total
            bar = "#" * filled + "-" * (width - filled)
            elapsed = time.monotonic() - started
            self._stream.write(f"\rlooking up [{bar}] {done}/{self._total} ({elapsed:.0f} s)")
            self._stream.flush()
            self._shown = True
            if self._finished.wait(0.1):
                return
