"""`make demo`: the Threatscore simulator and the relay in front of it, on loopback, until Ctrl-C.

    python -m simulator demo [--port 8080] [--simulator-port 8081]

The simulator runs in this process (its catalogue on); the relay runs as
`make run` runs it (functions-framework, 127.0.0.1 only, `RELAY_AUTH=none`),
in a process group of its own, its log in `.simulator/demo-relay.log`. Once
the relay's /health answers, the demo prints commands to paste. Ctrl-C (or
SIGTERM) stops the relay's whole process group, then the simulator; if this
process dies anyway, the relay is told by the kernel (Linux) and stops too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from relay.config import setting_names
from simulator.catalogue import ENTRIES
from simulator.server import ThreatscoreSimulator

ROOT = Path(__file__).resolve().parent.parent
LOG_FILE = ROOT / ".simulator" / "demo-relay.log"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator demo",
        description="The Threatscore simulator and the relay in front of it, on 127.0.0.1, until Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT") or 8080), help="the relay's port"
    )
    parser.add_argument("--simulator-port", type=int, help="the simulator's port (default: the relay's + 1)")
    args = parser.parse_args(argv)
    relay_port = args.port
    simulator_port = args.simulator_port or relay_port + 1
    for name, port in (("relay", relay_port), ("simulator", simulator_port)):
        if not _port_is_free(port):
            option = "PORT=..." if name == "relay" else "--simulator-port"
            print(f"demo: port {port} (the {name}'s) is taken; choose another with {option}", file=sys.stderr)
            return 1

    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, lambda *_: stop.set())

    started = time.monotonic()
    simulator = ThreatscoreSimulator(port=simulator_port, catalogue=True).start()
    relay = None
    try:
        relay = _start_relay(relay_port, simulator.url)
        relay_url = f"http://127.0.0.1:{relay_port}"
        if not _wait_until_ready(relay, relay_url, stop):
            if stop.is_set():
                return 130
            print(f"demo: the relay did not start; its log ({LOG_FILE}):", file=sys.stderr)
            print(_tail(LOG_FILE), file=sys.stderr)
            return 1
        print(banner(relay_url, simulator.url, time.monotonic() - started), flush=True)
        while not stop.wait(0.5):
            if relay.poll() is not None:
                print(
                    f"demo: the relay stopped (exit status {relay.returncode}); log: {LOG_FILE}",
                    file=sys.stderr,
                )
                return 1
        return 0
    finally:
        if relay is not None:
            _stop_group(relay)
        simulator.stop()
        print("demo: relay and simulator stopped.", flush=True)


def _start_relay(port: int, simulator_url: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if name not in setting_names()}
    env.update(
        {
            "RELAY_AUTH": "none",
            "THREATSCORE_API_URL": simulator_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    LOG_FILE.parent.mkdir(exist_ok=True)
    with LOG_FILE.open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - our own entry point
            [
                str(Path(sys.executable).parent / "functions-framework"),
                "--target=relay",
                "--source=main.py",
                "--host=127.0.0.1",
                f"--port={port}",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, by us
            preexec_fn=_stop_when_parent_dies,  # noqa: PLW1509 - only sets a flag of the child
        )


def _stop_when_parent_dies() -> None:
    """In the child, before exec: SIGTERM when the demo process dies (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _wait_until_ready(relay: subprocess.Popen, relay_url: str, stop: threading.Event) -> bool:
    """True once the relay's /health answers ok (which also means the simulator answered)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and not stop.is_set():
        if relay.poll() is not None:
            return False
        try:
            answer = requests.post(f"{relay_url}/health", timeout=2).json()
            if answer.get("data", {}).get("status") == "ok":
                return True
        except (requests.RequestException, ValueError):
            pass
        stop.wait(0.1)
    return False


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the whole process group (gunicorn and its worker); SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT)
    # A worker may outlive its master by a moment: the group goes entirely.
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=STOP_TIMEOUT)


def banner(relay_url: str, simulator_url: str, seconds: float) -> str:
    observables = '[{"type": "ip", "value": "198.51.100.7"}, {"type": "ip", "value": "203.0.113.5"}, ' + (
        '{"type": "domain", "value": "example.com"}, {"type": "ip", "value": "192.0.2.1"}]'
    )
    catalogue = "\n".join(f"  {entry.value:34} {entry.type:10} {entry.what}" for entry in ENTRIES)
    return f"""
Ready in {seconds:.1f} s.
  relay:     {relay_url}  (loopback only; RELAY_AUTH=none: no token is checked, for this demo only)
  simulator: {simulator_url}  (Threatscore's score and v3 APIs, invented answers)
  relay log: {LOG_FILE.relative_to(ROOT)}

The simulator's catalogue (any other value: no data):
{catalogue}

Try, in another terminal:

  curl -s -X POST {relay_url}/deliberate/observables -d '{observables}'
  curl -s -X POST {relay_url}/observe/observables -d '[{{"type": "ip", "value": "203.0.113.5"}}]'
  curl -s -X POST {relay_url}/refer/observables -d '[{{"type": "domain", "value": "example.com"}}]'
  curl -s -X POST {relay_url}/observe/observables -d '[{{"type": "ip", "value": "192.0.2.66"}}]'
  curl -s -X POST {relay_url}/health

The command line (same code, no server; it asks the simulator directly):

  export THREATSCORE_API_URL={simulator_url}
  .venv/bin/python -m relay lookup 198.51.100.7 203.0.113.5 example.com 192.0.2.1 192.0.2.66
  .venv/bin/python -m relay lookup --json 198.51.100.7
  .venv/bin/python -m relay lookup http://phish.example/login 44d88612fea8a8f36de82e1278abb02f \\
      user_agent:sqlmap/1.7
  .venv/bin/python -m relay health

Ctrl-C stops the relay and the simulator.
"""


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As a server binds (SO_REUSEADDR): connections of a stopped server in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    sys.exit(main())
