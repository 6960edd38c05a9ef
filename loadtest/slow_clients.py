"""What a local relay survives at the connection level: idle connections, slow clients, long request lines.

`make run` (functions-framework's gunicorn, on its own) is not meant to face
the internet: on Google Cloud, Google's front end takes the connections and
hands the function whole requests. This phase measures how little a bare
local relay takes, so that the docs can say so with numbers. Each step
opens more hostile connections to a real relay process on 127.0.0.1, then
asks `/version` with a well-behaved client: the relay survives a step when
that answer comes within `probe_timeout`. The steps of a kind stop at the
first one the relay does not survive, so the phase is bounded in time.

    python -m loadtest.slow_clients [--probe-timeout S]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from tests.relay_process import RelayProcess

MIB = 1024 * 1024


@dataclass(frozen=True)
class SlowClientConfig:
    idle_connections: tuple[int, ...] = (5, 10, 25, 50, 100, 200)
    slow_clients: tuple[int, ...] = (2, 4, 8, 9, 16, 32)
    request_line_mib: tuple[int, ...] = (1, 4, 16)
    probe_timeout: float = 5.0
    trickle_every: float = 0.5  # seconds between two bytes of a slow client's request head
    request_line_timeout: float = 60.0  # the longest a single long request line may take


@dataclass
class Step:
    kind: str
    size: int  # connections, clients, or MiB of request line
    survived: bool
    probe_seconds: float | None  # None: no answer within the probe timeout
    relay_cpu_seconds: float = 0.0
    note: str = ""


@dataclass
class SlowClientReport:
    config: SlowClientConfig
    steps: list[Step] = field(default_factory=list)

    def survived(self, kind: str) -> int:
        """The largest step of `kind` the relay survived (0: none)."""
        return max((step.size for step in self.steps if step.kind == kind and step.survived), default=0)

    def first_failure(self, kind: str) -> Step | None:
        return next((step for step in self.steps if step.kind == kind and not step.survived), None)

    def render(self) -> str:
        lines = [
            "slow clients: a local relay (functions-framework alone),"
            f" probe /version within {self.config.probe_timeout:g} s"
        ]
        for kind, unit in (
            ("idle", "silent connections"),
            ("slow", "slow clients"),
            ("request line", "MiB request line"),
        ):
            for step in (step for step in self.steps if step.kind == kind):
                answer = (
                    f"answered in {step.probe_seconds:.2f} s"
                    if step.probe_seconds is not None
                    else "NO ANSWER"
                )
                cpu = f", relay CPU {step.relay_cpu_seconds:.1f} s" if kind == "request line" else ""
                lines.append(
                    f"  {step.size:>4} {unit}: {answer}{cpu}{' (' + step.note + ')' if step.note else ''}"
                )
        return "\n".join(lines)


def _probe(url: str, timeout: float) -> float | None:
    started = time.monotonic()
    try:
        response = requests.post(url + "/version", timeout=timeout)
    except requests.RequestException:
        return None
    return time.monotonic() - started if response.status_code == 200 else None


def _relay_cpu_seconds(relay: RelayProcess) -> float:
    parent = psutil.Process(relay.process.pid)
    total = 0.0
    for proc in [parent, *parent.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


@contextlib.contextmanager
def _connections(port: int, count: int, first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if first_bytes:
                sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _recovered(relay: RelayProcess, timeout: float) -> bool:
    """Whether the relay answers again once the hostile connections are gone."""
    deadline = time.monotonic() + 4 * timeout
    while time.monotonic() < deadline:
        if _probe(relay.url, timeout) is not None:
            return True
    return False


def _idle_step(relay: RelayProcess, count: int, config: SlowClientConfig) -> Step:
    with _connections(relay.port, count):
        time.sleep(0.2)  # let the server accept them
        seconds = _probe(relay.url, config.probe_timeout)
    return Step("idle", count, seconds is not None, seconds)


def _slow_step(relay: RelayProcess, count: int, config: SlowClientConfig) -> Step:
    stop = threading.Event()
    with _connections(relay.port, count, b"POST /version HTTP/1.1\r\nHost: relay\r\n") as opened:

        def trickle() -> None:
            while not stop.wait(config.trickle_every):
                for sock in opened:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X")  # a header that never ends

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        time.sleep(0.2)
        seconds = _probe(relay.url, config.probe_timeout)
        stop.set()
        trickler.join(timeout=5)
    return Step("slow", count, seconds is not None, seconds)


def _request_line_step(relay: RelayProcess, mib: int, config: SlowClientConfig) -> Step:
    cpu_before = _relay_cpu_seconds(relay)
    started = time.monotonic()
    note = ""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=config.request_line_timeout) as sock:
        sock.sendall(b"GET /" + b"a" * (mib * MIB) + b" HTTP/1.1\r\nHost: relay\r\n\r\n")
        try:
            answer = sock.recv(64)
            note = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
        except TimeoutError:
            note = f"no answer within {config.request_line_timeout:g} s"
    spent = time.monotonic() - started
    seconds = _probe(relay.url, config.probe_timeout)
    survived = seconds is not None and spent <= config.probe_timeout
    return Step(
        "request line",
        mib,
        survived,
        seconds,
        _relay_cpu_seconds(relay) - cpu_before,
        f"{note}, {spent:.1f} s",
    )


def run_slow_clients(
    config: SlowClientConfig, log_dir: Path | None = None, progress=None
) -> SlowClientReport:
    """Every step, each kind up to the first one the relay does not survive."""
    report = SlowClientReport(config)
    env = {"RELAY_AUTH": "none", "THREATSCORE_API_URL": "http://127.0.0.1:9", "LOG_LEVEL": "WARNING"}
    kinds = (
        (config.idle_connections, _idle_step),
        (config.slow_clients, _slow_step),
        (config.request_line_mib, _request_line_step),
    )
    with tempfile.TemporaryDirectory() as scratch:
        relay = RelayProcess(env, log_dir or Path(scratch))
        try:
            for sizes, run_step in kinds:
                for size in sizes:
                    step = run_step(relay, size, config)
                    report.steps.append(step)
                    if progress:
                        progress(f"  ... {step.kind} {size}: {'survived' if step.survived else 'stopped'}")
                    if not step.survived:
                        if not _recovered(relay, config.probe_timeout):
                            relay.stop()  # a fresh relay for the next kind
                            relay = RelayProcess(env, log_dir or Path(scratch))
                        break
        finally:
            relay.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    defaults = SlowClientConfig()
    parser = argparse.ArgumentParser(prog="python -m loadtest.slow_clients", description=__doc__)
    parser.add_argument("--probe-timeout", type=float, default=defaults.probe_timeout)
    args = parser.parse_args(argv)
    config = SlowClientConfig(probe_timeout=args.probe_timeout)
    print("slow clients: starting (127.0.0.1 only)...", flush=True)
    print(run_slow_clients(config, progress=lambda line: print(line, flush=True)).render(), flush=True)
    return 0  # a measurement, not a pass/fail check: the limits are functions-framework's


if __name__ == "__main__":
    sys.exit(main())
