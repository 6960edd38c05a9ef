"""`make bench`: the relay's speed targets (issue 4), measured in one run, as one markdown table.

It starts the Threatscore simulator (simulator/, in this process) that
sleeps a set latency per call and counts the calls it receives, and the relay
as real `functions-framework --target=relay` processes (RELAY_AUTH=none,
functions-framework's default server: gunicorn, 1 worker, 4 x cores threads).
Cases A-F run for each backend (THREATSCORE_API=score, then v3), side by side
in the one table; the v3 answer is a found one with every field, so that its
mapping (indicators, sighting, relationships) is part of what is measured.
The yardsticks are trivial functions served the same way (bench/trivial*.py).
Cases G-J (bench/instances.py) run three instances on one redis-server; case K
(bench/outage.py) runs them through a Threatscore outage, with the circuit
breaker and without it (the relay as it was before), side by side.

Every target is a ratio or a count, so that a noisy machine moves both sides.
Exits 1 when a target is missed. The table is also written to
bench-results/latest.md, with the processes' logs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import instances  # noqa: E402 - cases G-J (bench/instances.py): instances sharing one Redis
import outage  # noqa: E402 - case K (bench/outage.py): a Threatscore outage, the circuit breaker

from simulator import ThreatscoreSimulator  # noqa: E402
from tests import answers  # noqa: E402 - after the path is set
from tests.relay_process import stop_process, without_relay_settings  # noqa: E402

FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"
RESULTS = ROOT / "bench-results"
LOGS = RESULTS / "logs"
OBSERVE = "/observe/observables"
DEFAULT_CONCURRENCY = 10  # THREATSCORE_MAX_CONCURRENCY's default


@dataclass(frozen=True)
class Backend:
    """THREATSCORE_API and the found answer the fake gives every value."""

    api: str
    found: dict


BACKENDS = (Backend("score", answers.FOUR_ENGINES), Backend("v3", answers.V3_FOUND))


@dataclass
class Row:
    case: str
    backend: str
    what: str
    measured: str
    target: str
    passed: bool


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Function:
    """One `functions-framework` process on a free loopback port."""

    def __init__(self, name: str, source: Path, target: str, env: dict[str, str]):
        self.name = name
        self.port = free_port()
        self._log = open(LOGS / f"{name}-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(  # noqa: S603 - our own executable and arguments
            [
                str(FUNCTIONS_FRAMEWORK),
                f"--target={target}",
                f"--source={source}",
                "--host=127.0.0.1",
                f"--port={self.port}",
            ],
            cwd=ROOT,
            env={**without_relay_settings(os.environ), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_serving(self, timeout: float = 60) -> None:
        give_up_at = time.monotonic() + timeout
        while time.monotonic() < give_up_at:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not listen within {timeout} s")

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self._log.name}")

    def stop(self) -> None:
        """Stops it (once; later calls do nothing)."""
        stop_process(self.process)
        self._log.close()


# --- HTTP client ------------------------------------------------------------------------------------


def post(port: int, payload: object) -> dict:
    """POST /observe/observables on a new connection; the answer's JSON. Raises unless HTTP 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST", OBSERVE, body=json.dumps(payload), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def observables(values: list[str]) -> list[dict]:
    return [{"type": "ip", "value": value} for value in values]


def verdict_count(body: dict) -> int:
    return body.get("data", {}).get("verdicts", {}).get("count", 0)


def timed_post(port: int, payload: object) -> tuple[dict, float]:
    started = time.perf_counter()
    body = post(port, payload)
    return body, time.perf_counter() - started


def requests_per_second(port: int, payload: object, seconds: float, clients: int) -> float:
    """`clients` threads, each on its own keep-alive connection, posting as fast as answers come."""
    body = json.dumps(payload)
    headers = {"Content-Type": "application/json"}
    counts = [0] * clients
    failures: list[str] = []
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.connect()
        start.wait()
        try:
            while not stop.is_set():
                connection.request("POST", OBSERVE, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(f"HTTP {response.status}")
                    return
                counts[index] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"throughput run failed: {failures[0]}")
    return sum(counts) / elapsed


def first_answer_after_launch(
    name: str,
    source: Path,
    target: str,
    env: dict[str, str],
    payload: object,
    answered: Callable[[dict], bool],
) -> float:
    """Seconds from launching functions-framework to the first answered POST."""
    function = Function(name, source, target, env)
    try:
        while True:
            function.check_alive()
            try:
                body = post(function.port, payload)
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                time.sleep(0.002)
                continue
            if not answered(body):
                raise RuntimeError(f"{name} answered {body!r:.300}")
            return time.perf_counter() - function.started_at
    finally:
        function.stop()


# --- the cases --------------------------------------------------------------------------------------


def complete(body: dict, count: int) -> bool:
    return verdict_count(body) == count and "errors" not in body


def incomplete_note(ok: bool) -> str:
    return "" if ok else ", INCOMPLETE answer"


def cases_a_b_c(
    fake: ThreatscoreSimulator, relay: Function, sequential: Function, backend: Backend, args
) -> list[Row]:
    """A: a batch, cold; B: the same, warm; C: A with concurrency 1."""
    values = [f"10.0.{index // 256}.{index % 256}" for index in range(args.observables)]
    for value in values:
        fake.answer(value, backend.found)
    batch = observables(values)
    rounds = math.ceil(args.observables / DEFAULT_CONCURRENCY)

    calls_before = fake.total_calls
    body, cold = timed_post(relay.port, batch)
    calls_a = fake.total_calls - calls_before
    ok_a = complete(body, args.observables)
    limit_a = 1.3 * rounds * args.latency

    calls_before = fake.total_calls
    body, warm = timed_post(relay.port, batch)
    calls_b = fake.total_calls - calls_before
    ok_b = complete(body, args.observables)

    body, one_at_a_time = timed_post(sequential.port, batch)
    ok_c = complete(body, args.observables)
    return [
        Row(
            "A",
            backend.api,
            f"{args.observables} distinct observables, cold cache",
            f"{cold:.3f} s ({calls_a} upstream calls){incomplete_note(ok_a)}",
            f"≤ {limit_a:.3f} s (1.3 × {rounds} × {args.latency * 1000:g} ms)",
            ok_a and cold <= limit_a,
        ),
        Row(
            "B",
            backend.api,
            "the same again, warm cache",
            f"{warm * 1000:.1f} ms = {100 * warm / cold:.1f} % of A, {calls_b} upstream calls"
            f"{incomplete_note(ok_b)}",
            "≤ 5 % of A, 0 upstream calls",
            ok_b and warm <= 0.05 * cold and calls_b == 0,
        ),
        Row(
            "C",
            backend.api,
            "A with THREATSCORE_MAX_CONCURRENCY=1",
            f"{one_at_a_time:.3f} s; A / C = {cold / one_at_a_time:.3f}{incomplete_note(ok_c)}",
            "A / C ≤ 0.15",
            ok_c and cold / one_at_a_time <= 0.15,
        ),
    ]


def case_d(fake: ThreatscoreSimulator, relay: Function, trivial: Function, backend: Backend, args) -> Row:
    """Requests per second for one cached observable. Short runs of the relay and of the trivial
    function in turn, so that whatever else the machine does weighs on both alike."""
    fake.answer("192.0.2.10", backend.found)
    cached = observables(["192.0.2.10"])
    post(relay.port, cached)  # now cached
    for port in (relay.port, trivial.port):  # keep-alive connections and server threads up
        requests_per_second(port, cached, 0.3, args.clients)
    relay_rates, trivial_rates = [], []
    for _ in range(args.pairs):
        relay_rates.append(requests_per_second(relay.port, cached, args.throughput_seconds, args.clients))
        trivial_rates.append(requests_per_second(trivial.port, cached, args.throughput_seconds, args.clients))
    ratio = statistics.median(r / t for r, t in zip(relay_rates, trivial_rates, strict=True))
    return Row(
        "D",
        backend.api,
        f"1 cached observable, {args.clients} keep-alive clients, req/s"
        f" (median of {args.pairs} paired {args.throughput_seconds:g} s runs)",
        f"{statistics.median(relay_rates):.0f} req/s = {100 * ratio:.0f} % of trivial"
        f" ({statistics.median(trivial_rates):.0f} req/s)",
        # Issue 10: each log line is now written before its response leaves (no background
        # writer), and the bar for that is 65 % (it was 70 % with the writer thread).
        "≥ 65 % of trivial",
        ratio >= 0.65,
    )


def case_f(fake: ThreatscoreSimulator, relay: Function, backend: Backend, args) -> Row:
    """A stampede: many requests at once for one observable nobody has asked about yet."""
    value = "192.0.2.20"
    fake.answer(value, backend.found)
    gate = threading.Barrier(args.stampede)
    bodies: list[dict] = []

    def client() -> None:
        gate.wait()
        bodies.append(post(relay.port, observables([value])))

    threads = [threading.Thread(target=client) for _ in range(args.stampede)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    calls = fake.calls_for(value)
    answered = sum(1 for body in bodies if complete(body, 1))
    return Row(
        "F",
        backend.api,
        f"{args.stampede} concurrent requests, one cold observable",
        f"{calls} upstream call; {answered} answered in {seconds:.2f} s",
        "1 upstream call",
        calls == 1 and answered == args.stampede,
    )


def case_e(fake: ThreatscoreSimulator, relay_env: dict[str, str], args) -> list[Row]:
    """Cold starts with upstream latency 0, interleaved so that drift hits every kind alike
    (the relay with each backend, and the yardsticks)."""
    fake.latency = 0.0
    probe = observables(["192.0.2.30"])
    # Bytecode on: the first, discarded round writes the .pyc files that every later start reads,
    # as a deployed image that carries them would.
    bytecode = {"PYTHONDONTWRITEBYTECODE": ""}
    kinds = {
        f"relay {backend.api}": (
            ROOT / "main.py",
            "relay",
            {**relay_env, "THREATSCORE_API": backend.api, **bytecode},
            lambda body: complete(body, 1),
        )
        for backend in BACKENDS
    }
    kinds["trivial with deps"] = (
        ROOT / "bench" / "trivial_with_deps.py",
        "trivial",
        bytecode,
        lambda body: True,
    )
    kinds["bare trivial"] = (ROOT / "bench" / "trivial.py", "trivial", bytecode, lambda body: True)
    starts: dict[str, list[float]] = {kind: [] for kind in kinds}
    for attempt in range(args.starts + 1):
        for kind, (source, target, env, answered) in kinds.items():
            if kind.startswith("relay "):
                # Each backend's own found answer (its cache starts empty: one real lookup).
                fake.answer("192.0.2.30", next(b.found for b in BACKENDS if kind == f"relay {b.api}"))
            name = f"cold-{kind.replace(' ', '-')}"
            seconds = first_answer_after_launch(name, source, target, env, probe, answered)
            if attempt > 0:  # the first round warms the disk cache and writes .pyc files
                starts[kind].append(seconds)
    medians = {kind: statistics.median(times) for kind, times in starts.items()}
    rows = []
    for backend in BACKENDS:
        relay = medians[f"relay {backend.api}"]
        versus_deps = relay / medians["trivial with deps"]
        versus_bare = relay / medians["bare trivial"]
        rows.append(
            Row(
                "E",
                backend.api,
                f"cold start to the first answered observe (median of {args.starts})",
                f"{relay * 1000:.0f} ms = {versus_deps:.2f} × trivial with deps"
                f" ({medians['trivial with deps'] * 1000:.0f} ms); {versus_bare:.2f} × bare trivial"
                f" ({medians['bare trivial'] * 1000:.0f} ms)",
                "≤ 1.1 × trivial with deps",
                versus_deps <= 1.1,
            )
        )
    return rows


def cases_a_to_f_but_e(
    fake: ThreatscoreSimulator, trivial: Function, relay_env: dict[str, str], backend: Backend, args
) -> list[Row]:
    """A-D and F against relay processes of one backend (E is measured for both at once)."""
    relay = Function(f"relay-{backend.api}", ROOT / "main.py", "relay", relay_env)
    sequential = Function(
        f"relay-{backend.api}-concurrency-1",
        ROOT / "main.py",
        "relay",
        {**relay_env, "THREATSCORE_MAX_CONCURRENCY": "1"},
    )
    try:
        for function in (relay, sequential, trivial):
            function.wait_until_serving()
        # Warm the processes (first request, connections to the fake), not their caches.
        fake.answer("192.0.2.1", backend.found)
        for function in (relay, sequential, trivial):
            post(function.port, observables(["192.0.2.1"]))
        rows = cases_a_b_c(fake, relay, sequential, backend, args)
        sequential.stop()
        rows.append(case_d(fake, relay, trivial, backend, args))
        rows.append(case_f(fake, relay, backend, args))
        return rows
    finally:
        relay.stop()
        sequential.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="upstream seconds per call (0.1)")
    parser.add_argument("--observables", type=int, default=50, help="observables in cases A-C (50)")
    parser.add_argument("--clients", type=int, default=8, help="client threads in case D (8)")
    parser.add_argument("--pairs", type=int, default=6, help="relay/trivial run pairs in case D (6)")
    parser.add_argument("--throughput-seconds", type=float, default=1.0, help="each D run, seconds (1)")
    parser.add_argument("--starts", type=int, default=9, help="cold starts of each kind in case E (9)")
    parser.add_argument("--stampede", type=int, default=100, help="concurrent requests in case F (100)")
    args = parser.parse_args()
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake's request log

    fake = ThreatscoreSimulator(latency=args.latency).start()
    relay_env = {
        "THREATSCORE_API_URL": fake.url,
        "RELAY_AUTH": "none",
        "THREATSCORE_MAX_CONCURRENCY": str(DEFAULT_CONCURRENCY),
        # The cases look up private (10.0.0.0/8) and benchmarking (198.18.0.0/15) addresses,
        # which the relay never sends upstream by default.
        "RELAY_LOOKUP_INTERNAL": "true",
    }
    functions: list[Function] = []
    rows: list[Row] = []
    try:
        trivial = Function("trivial", ROOT / "bench" / "trivial.py", "trivial", {})
        functions.append(trivial)
        for backend in BACKENDS:
            fake.reset()  # call counts per backend
            rows += cases_a_to_f_but_e(
                fake, trivial, {**relay_env, "THREATSCORE_API": backend.api}, backend, args
            )
        trivial.stop()
        rows += case_e(fake, relay_env, args)
        # G-K script answers in the score API's shape.
        score_env = {**relay_env, "THREATSCORE_API": "score"}
        rows.extend(
            Row(case, "score", *rest) for case, *rest in instances.cases_g_h_i_j(fake, score_env, LOGS)
        )
        rows.extend(Row(case, "score", *rest) for case, *rest in outage.case_k(fake, score_env, LOGS))
    finally:
        for function in functions:
            function.stop()
        fake.stop()

    rows.sort(key=lambda row: (row.case, [b.api for b in BACKENDS].index(row.backend)))
    table = render(rows, args)
    print(table)
    (RESULTS / "latest.md").write_text(table + "\n")
    return 0 if all(row.passed for row in rows) else 1


def render(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "| case | backend | what | measured | target | result |",
        "|---|---|---|---|---|---|",
        *(
            f"| {row.case} | {row.backend} | {row.what} | {row.measured} | {row.target}"
            f" | {_verdict(row.passed)} |"
            for row in rows
        ),
        "",
        f"Upstream latency {args.latency * 1000:g} ms per call (0 in E); THREATSCORE_MAX_CONCURRENCY"
        f" {DEFAULT_CONCURRENCY}; functions-framework defaults (gunicorn gthread, 1 worker,"
        f" {4 * (os.cpu_count() or 1)} threads). Machine: {machine()}.",
    ]
    return "\n".join(lines)


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()}"


if __name__ == "__main__":
    sys.exit(main())
