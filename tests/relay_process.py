"""The relay as a real `functions-framework --target=relay` process on a loopback port.

Used by the process tests, the schemathesis run and the load test. Its stdout
and stderr are kept apart, in files, so that the log format can be checked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from relay.config import setting_names

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the relay exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


class RelayProcess:
    """One relay process; `stop()` it (or use it as a context manager)."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = log_dir / f"relay-{self.port}.stdout"
        self.stderr_path = log_dir / f"relay-{self.port}.stderr"
        with self.stdout_path.open("wb") as stdout, self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 - our own entry point
                [
                    str(VENV_BIN / "functions-framework"),
                    "--target=relay",
                    "--host=127.0.0.1",
                    f"--port={self.port}",
                ],
                cwd=ROOT,
                env={**without_relay_settings(os.environ), **env, "PYTHONUNBUFFERED": "1"},
                stdout=stdout,
                stderr=stderr,
            )
        try:
            wait_for_port(self.port, self.process)
        except Exception:
            self.stop()
            raise

    def rss_bytes(self) -> int:
        """Resident memory of the relay: the server process and its workers."""
        parent = psutil.Process(self.process.pid)
        return sum(proc.memory_info().rss for proc in [parent, *parent.children(recursive=True)])

    def stdout_lines(self) -> list[str]:
        return self.stdout_path.read_text(encoding="utf-8").splitlines()

    def log_records(self) -> list[dict]:
        """Every stdout line as JSON; raises if one is not a JSON object."""
        records = []
        for line in self.stdout_lines():
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a log line is not a JSON object: {line[:200]}")
            records.append(record)
        return records

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> RelayProcess:
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


def stop_process(process: subprocess.Popen) -> None:
    """Terminates a process (a no-op once it has exited); kills it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def without_relay_settings(environ) -> dict[str, str]:
    """`environ` less the relay's settings: a test or a benchmark sets its own, and only those."""
    return {name: value for name, value in environ.items() if name not in setting_names()}
