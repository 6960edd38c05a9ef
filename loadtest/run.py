"""The load run: a real relay process, a fake Threatscore with faults, many concurrent clients.

Every answer is checked as it arrives: HTTP status, CTIM shape, and that each
observable sent comes back exactly once, as a verdict or as an error entry
that names it and says why. The relay's memory (RSS) is sampled after the
first requests and at the end, and its log is checked line by line.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from simulator import Scripted, ThreatscoreSimulator
from tests import answers
from tests.ctim import check_answer
from tests.relay_process import RelayProcess

MB = 1024 * 1024
# An error with this code lost a result to a bug of the relay, not to Threatscore.
CODES_WITHOUT_CAUSE = frozenset({"internal error"})


@dataclass(frozen=True)
class LoadConfig:
    requests: int = 5000
    clients: int = 32
    observables: int = 3  # per request
    fault_rate: float = 0.05  # share of Threatscore lookups that fail
    latency: float = 0.02  # seconds Threatscore takes for every lookup
    max_rss_growth_mb: float = 50.0
    seed: int = 1
    instances: int = 1  # relay processes (loadtest/instances.py when more than one, or with Redis)
    redis: bool = False  # share one redis-server, restarted halfway through the run

    @property
    def warmup(self) -> int:
        """Requests after which memory is first sampled: the first thousand, or a fifth of a short run."""
        return min(1000, self.requests // 5)


def upstream_faults(read_timeout: float) -> list[Scripted]:
    """What the fake answers instead, for the injected share of lookups."""
    return [
        Scripted(status=500, body=answers.ERROR_500, label="500 JSON"),
        Scripted(status=502, body=answers.PROXY_502_HTML, content_type="text/html", label="502 HTML"),
        Scripted(status=503, body="", label="503"),
        Scripted(status=429, body=answers.ERROR_500, headers={"Retry-After": "1"}, label="429"),
        Scripted(body=answers.FOUR_ENGINES, fault="reset", label="reset mid-body"),
        Scripted(body="{not json", label="invalid JSON"),
        Scripted(body='"a string"', label="JSON of the wrong type"),
        Scripted(body=answers.RESULTS_UNDER_OTHER_KEY, label="changed structure"),
        Scripted(body=answers.FOUR_ENGINES, delay=read_timeout + 0.5, label="no answer in time"),
    ]


def found_answer(value: str) -> Scripted:
    """A scored answer for any value, varied but the same for the same value."""
    rng = random.Random(value)
    engines = [round(rng.uniform(-0.2, 1.0), 3) for _ in range(rng.randint(1, 4))]
    return Scripted(body=answers.with_scores(*engines, aggregate=round(rng.uniform(0, 1), 3)))


def observables_for(index: int, config: LoadConfig) -> list[dict]:
    """Distinct observables for request `index`, in the spellings callers use."""
    rng = random.Random(config.seed * 1_000_003 + index)
    numbers = rng.sample(range(1, 60_000), config.observables)
    made = []
    for position, number in enumerate(numbers):
        kind = ("ip", "ipv6", "domain")[(index + position) % 3]
        if kind == "ip":
            value = f"198.18.{number // 256}.{number % 256}"
        elif kind == "ipv6":
            value = f"2001:DB8::{number:x}" if rng.random() < 0.5 else f"2001:db8:0:0:0:0:0:{number:x}"
        else:
            value = f"Host-{number}.Example." if rng.random() < 0.5 else f"host-{number}.example"
        made.append({"type": kind, "value": value})
    return made


def account(sent: list[dict], answer: dict) -> tuple[int, Counter, list[str]]:
    """(verdicts, errors by code, problems) of one answer, checking every observable sent."""
    problems: list[str] = []
    try:
        check_answer(answer)
    except AssertionError as exc:
        problems.append(f"not valid CTIM: {str(exc)[:200]}")
    verdicts = answer.get("data", {}).get("verdicts", {}).get("docs", [])
    seen = Counter((verdict["observable"]["type"], verdict["observable"]["value"]) for verdict in verdicts)
    codes: Counter = Counter()
    for error in answer.get("errors", []):
        codes[error.get("code")] += 1
        named = [item for item in sent if str(error.get("message", "")).startswith(f"{item['value']}: ")]
        if not named:
            problems.append(f"an error names no observable sent: {error}")
            continue
        cause = error["message"][len(named[0]["value"]) + 2 :].strip()
        if not cause or error.get("code") in CODES_WITHOUT_CAUSE:
            problems.append(f"an error without a cause: {error}")
        seen[(named[0]["type"], named[0]["value"])] += 1
    for item in sent:
        times = seen.pop((item["type"], item["value"]), 0)
        if times != 1:
            problems.append(f"{item['type']} {item['value']!r} came back {times} times")
    problems.extend(f"{kind} {value!r} came back but was not sent" for kind, value in seen)
    return len(verdicts), codes, problems


@dataclass
class LoadReport:
    config: LoadConfig
    duration: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    observables_sent: int = 0
    verdicts: int = 0
    errors_by_code: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # the first few, with their request
    problem_count: int = 0
    transport_failures: int = 0
    rss_start: int = 0
    rss_after_warmup: int = 0
    rss_end: int = 0
    upstream_calls: int = 0
    faults_injected: Counter = field(default_factory=Counter)
    request_log_lines: int = 0
    log_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what happened during the run (Redis restarts)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    @property
    def rss_growth(self) -> int:
        return self.rss_end - self.rss_after_warmup

    def failures(self) -> list[str]:
        """What did not meet the checks; empty when the run passed."""
        failed = []
        if self.answered != self.config.requests or self.transport_failures:
            failed.append(
                f"{self.config.requests - self.answered} requests got no answer "
                f"({self.transport_failures} transport failures)"
            )
        if self.server_errors:
            failed.append(f"{self.server_errors} answers were 5xx")
        if set(self.statuses) - {200}:
            failed.append(f"statuses other than 200: {dict(self.statuses)}")
        accounted = self.verdicts + sum(self.errors_by_code.values())
        if self.problem_count or accounted != self.observables_sent:
            failed.append(
                f"{self.problem_count} answers lost or garbled observables "
                f"({accounted} of {self.observables_sent} accounted for)"
            )
        if self.rss_growth > self.config.max_rss_growth_mb * MB:
            failed.append(
                f"RSS grew by {self.rss_growth / MB:.1f} MB (limit {self.config.max_rss_growth_mb:g} MB)"
            )
        if self.request_log_lines != self.config.requests:
            failed.append(f"{self.request_log_lines} request log lines for {self.config.requests} requests")
        failed.extend(self.log_problems)
        return failed

    def render(self) -> str:
        config = self.config
        lat = sorted(self.latencies) or [0.0]

        def pct(share: float) -> float:
            return lat[min(len(lat) - 1, int(share * len(lat)))] * 1000

        codes = ", ".join(f"{code} {count}" for code, count in self.errors_by_code.most_common()) or "none"
        faults = (
            ", ".join(f"{label} {count}" for label, count in self.faults_injected.most_common()) or "none"
        )
        rate = self.answered / max(self.duration, 1e-9)
        lines = [
            f"loadtest: {config.requests} requests from {config.clients} clients, {config.observables} "
            f"observables each; Threatscore: {config.fault_rate:.0%} faults, "
            f"{config.latency * 1000:g} ms latency",
            f"  time:        {self.duration:.1f} s, {rate:.0f} requests/s; "
            f"latency p50 {pct(0.5):.0f} ms, p95 {pct(0.95):.0f} ms, p99 {pct(0.99):.0f} ms, "
            f"max {lat[-1] * 1000:.0f} ms (mean {statistics.fmean(lat) * 1000:.0f} ms)",
            f"  HTTP:        {', '.join(f'{s} x{n}' for s, n in sorted(self.statuses.items()))}; "
            f"5xx: {self.server_errors}; no answer: {config.requests - self.answered}",
            f"  observables: {self.observables_sent} sent, {self.verdicts} verdicts, "
            f"{sum(self.errors_by_code.values())} errors, "
            f"{self.observables_sent - self.verdicts - sum(self.errors_by_code.values())} unaccounted; "
            f"answers with problems: {self.problem_count}",
            f"  errors:      {codes}",
            f"  upstream:    {self.upstream_calls} lookups, faults injected: {faults}",
            f"  relay RSS:   {self.rss_start / MB:.1f} MB at start, "
            f"{self.rss_after_warmup / MB:.1f} MB after {config.warmup} requests, "
            f"{self.rss_end / MB:.1f} MB at the end: "
            f"{self.rss_growth / MB:+.1f} MB (limit {config.max_rss_growth_mb:g} MB)",
            f"  relay log:   {self.request_log_lines} request lines, every stdout line JSON"
            + ("" if not self.log_problems else f"; {len(self.log_problems)} problems"),
        ]
        lines += [
            f"  instances:   {config.instances}, Redis: {'; '.join(self.notes)}" for _ in self.notes[:1]
        ]
        lines += [f"  problem: {problem}" for problem in self.problems[:10]]
        failures = self.failures()
        lines += [f"  FAILED: {failure}" for failure in failures]
        lines.append("RESULT: " + ("FAIL" if failures else "PASS"))
        return "\n".join(lines)


class _Run:
    """The shared state of one run's client threads."""

    def __init__(self, config: LoadConfig, relay: RelayProcess, report: LoadReport, progress):
        self.config = config
        self.relay = relay
        self.report = report
        self.progress = progress
        self.lock = threading.Lock()
        self.next_index = 0
        self.done = 0

    def take(self) -> int | None:
        with self.lock:
            if self.next_index >= self.config.requests:
                return None
            self.next_index += 1
            return self.next_index - 1

    def client(self) -> None:
        with requests.Session() as session:
            while (index := self.take()) is not None:
                self.one_request(session, index)

    def one_request(self, session: requests.Session, index: int) -> None:
        sent = observables_for(index, self.config)
        path = "/deliberate/observables" if index % 5 == 4 else "/observe/observables"
        started = time.monotonic()
        try:
            response = session.post(self.relay.url + path, json=sent, timeout=60)
            status, answer = response.status_code, response.json()
        except (requests.RequestException, ValueError) as exc:
            with self.lock:
                self.report.transport_failures += 1
                self.report.problem_count += 1
                self.report.problems.append(f"request {index}: {type(exc).__name__}: {str(exc)[:200]}")
            return
        elapsed = time.monotonic() - started
        verdicts, codes, problems = (
            account(sent, answer) if status == 200 else (0, Counter(), [f"HTTP {status}"])
        )
        with self.lock:
            report = self.report
            report.statuses[status] += 1
            report.latencies.append(elapsed)
            report.observables_sent += len(sent)
            report.verdicts += verdicts
            report.errors_by_code.update(codes)
            if problems:
                report.problem_count += 1
                if len(report.problems) < 10:
                    report.problems.append(f"request {index} {sent}: {'; '.join(problems)[:400]}")
            self.done += 1
            done = self.done
        if done == self.config.warmup:
            self.report.rss_after_warmup = self.relay.rss_bytes()
        if self.progress and done % 1000 == 0:
            self.progress(
                f"  ... {done}/{self.config.requests} requests, RSS {self.relay.rss_bytes() / MB:.1f} MB"
            )


def check_relay_log(relay: RelayProcess, report: LoadReport) -> None:
    """Every stdout line is one JSON object; one request line per request; no traceback, no ERROR."""
    try:
        records = relay.log_records()
    except ValueError as exc:
        report.log_problems.append(f"a relay log line is not JSON: {str(exc)[:200]}")
        return
    request_lines = [record for record in records if record.get("logger") == "relay.request"]
    report.request_log_lines = len(request_lines)
    errors = [record for record in records if record.get("severity") in ("ERROR", "CRITICAL")]
    if errors:
        report.log_problems.append(f"{len(errors)} ERROR log lines, the first: {errors[0]['message'][:200]}")
    if "Traceback" in relay.stderr_text():
        report.log_problems.append("a traceback on the relay's stderr")


def start_fake(config: LoadConfig, read_timeout: float = 1.0) -> ThreatscoreSimulator:
    fake = ThreatscoreSimulator(latency=config.latency).start()
    fake.fallback(found_answer)
    fake.inject_faults(config.fault_rate, upstream_faults(read_timeout), seed=config.seed)
    return fake


def relay_env(fake: ThreatscoreSimulator, read_timeout: float = 1.0) -> dict[str, str]:
    return {
        # Its answers are shaped like the score API's.
        "THREATSCORE_API": "score",
        "THREATSCORE_API_URL": fake.url,
        "THREATSCORE_TIMEOUT": f"{read_timeout:g}",
        "RELAY_DEADLINE": "5",
        "RELAY_AUTH": "none",
        "LOG_LEVEL": "INFO",
        # Its values are in the benchmarking range (198.18.0.0/15), which the relay never sends
        # upstream by default (reserved: it can only be internal).
        "RELAY_LOOKUP_INTERNAL": "true",
    }


def run_load(config: LoadConfig, log_dir: Path | None = None, progress=None) -> LoadReport:
    """Runs the whole load test and returns its report (see `LoadReport.failures`)."""
    if config.instances > 1 or config.redis:
        from loadtest.instances import run_many_instances

        return run_many_instances(config, log_dir, progress)
    report = LoadReport(config)
    read_timeout = 1.0
    fake = start_fake(config, read_timeout)
    env = relay_env(fake, read_timeout)
    with tempfile.TemporaryDirectory() as scratch:
        relay = RelayProcess(env, log_dir or Path(scratch))
        try:
            report.rss_start = relay.rss_bytes()
            run = _Run(config, relay, report, progress)
            started = time.monotonic()
            clients = [threading.Thread(target=run.client, name=f"client-{n}") for n in range(config.clients)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            report.duration = time.monotonic() - started
            report.rss_end = relay.rss_bytes()
            if not report.rss_after_warmup:
                report.rss_after_warmup = report.rss_end
        finally:
            relay.stop()
            fake.stop()
        check_relay_log(relay, report)
    report.upstream_calls = fake.total_calls
    report.faults_injected = Counter(fake.faults_injected)
    return report
