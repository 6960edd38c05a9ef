"""Bench cases G-J: many instances, one Threatscore.

Real `functions-framework` relay processes share one real `redis-server` on
127.0.0.1, in front of the bench's fake Threatscore:

- G: 3 instances, 90 concurrent requests (30 each) for one new observable, 300 ms upstream:
  one upstream call (in-instance and cross-instance single flight).
- H: 3 instances, 300 distinct observables at once, THREATSCORE_RATE_LIMIT=20: counted where
  the lookups arrive (the fake), never more than 20 in any second, the busiest 5-second window
  at most 110, the 300 no faster than the limit allows (about 15 s), all answered in time.
- I: Redis stopped after warming, the same batch again: 0 errors, 0 upstream calls for what the
  memory tier holds, answered within 2x the warm time.
- J: the same cached answer through two instances: identical entities.

`cases_g_h_i_j` returns rows (case, what, measured, target, passed) for bench.py's table.
"""

from __future__ import annotations

import http.client
import json
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from simulator import Scripted
from simulator import ThreatscoreSimulator as ThreatscoreSimulator
from tests import answers
from tests.redis_process import RedisProcess
from tests.relay_process import RelayProcess

OBSERVE = "/observe/observables"
RATE_LIMIT = 20
H_OBSERVABLES = 300
H_DEADLINE = 30.0
G_REQUESTS_PER_INSTANCE = 30
G_UPSTREAM_SECONDS = 0.3
I_OBSERVABLES = 100

Row = tuple[str, str, str, str, bool]


def post(url: str, observables: list[dict], timeout: float = 120) -> dict:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", OBSERVE, json.dumps(observables), {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def ips(prefix: str, count: int) -> list[dict]:
    return [{"type": "ip", "value": f"{prefix}.{index // 250}.{index % 250}"} for index in range(count)]


def all_at_once(calls: list[Callable[[], object]]) -> list[object]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait(timeout=60)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [future.result() for future in [pool.submit(run, call) for call in calls]]


def verdicts(body: dict) -> int:
    return body.get("data", {}).get("verdicts", {}).get("count", 0)


def errors(body: dict) -> int:
    return len(body.get("errors", []))


def entities(body: dict) -> dict:
    return body.get("data", {})


class Arrivals:
    """When each lookup reached the fake Threatscore: its `fallback` runs as a request arrives."""

    def __init__(self, fake: ThreatscoreSimulator):
        self.times: list[float] = []
        self._lock = threading.Lock()
        fake.fallback(self._arrived)

    def _arrived(self, value: str) -> Scripted:
        with self._lock:
            self.times.append(time.time())
        return Scripted(status=200, body=answers.FOUR_ENGINES)

    def busiest_second(self) -> int:
        """The most arrivals in one calendar second."""
        return max(Counter(math.floor(t) for t in self.times).values(), default=0)

    def busiest_sliding(self, window: float) -> int:
        times = sorted(self.times)
        best, first = 0, 0
        for last, at in enumerate(times):
            while times[first] <= at - window:
                first += 1
            best = max(best, last - first + 1)
        return best


def case_g(fake: ThreatscoreSimulator, relays: list[RelayProcess]) -> Row:
    value = "198.18.7.7"
    # The fake adds its own latency to every call: together, G_UPSTREAM_SECONDS.
    fake.answer(value, answers.FOUR_ENGINES, delay=max(0.0, G_UPSTREAM_SECONDS - fake.latency))
    calls = [
        lambda url=relay.url: post(url, [{"type": "ip", "value": value}])
        for relay in relays
        for _ in range(G_REQUESTS_PER_INSTANCE)
    ]
    bodies = all_at_once(calls)
    upstream = fake.calls_for(value)
    answered = sum(1 for body in bodies if verdicts(body) == 1 and not errors(body))
    return (
        "G",
        f"{len(relays)} instances, {len(calls)} concurrent requests for one new observable,"
        f" {G_UPSTREAM_SECONDS * 1000:g} ms upstream",
        f"{upstream} upstream call(s); {answered}/{len(calls)} answered",
        "1 upstream call",
        upstream == 1 and answered == len(calls),
    )


def case_j(fake: ThreatscoreSimulator, relays: list[RelayProcess]) -> Row:
    value = {"type": "ip", "value": "198.18.9.9"}
    fake.answer(value["value"], answers.FOUR_ENGINES)
    first = post(relays[0].url, [value])
    time.sleep(1.1)  # later, through another instance: its own request time must not show
    second = post(relays[1].url, [value])
    same = entities(first) == entities(second) and verdicts(first) == 1
    judgements = entities(first).get("judgements", {}).get("count", 0)
    return (
        "J",
        "the same cached answer through two instances, 1 s apart",
        f"{'identical' if same else 'DIFFERENT'} entities ({judgements} judgements, 1 verdict);"
        f" {fake.calls_for(value['value'])} upstream call",
        "identical entities",
        same,
    )


def case_h(fake: ThreatscoreSimulator, relays: list[RelayProcess]) -> Row:
    arrivals = Arrivals(fake)
    batch = ips("198.19", H_OBSERVABLES)
    share = len(batch) // len(relays)
    parts = [batch[i * share : (i + 1) * share] for i in range(len(relays))]

    def timed_post(url: str, part: list[dict]) -> tuple[dict, float]:
        started = time.monotonic()
        body = post(url, part)
        return body, time.monotonic() - started

    results = all_at_once(
        [
            lambda url=relay.url, part=part: timed_post(url, part)
            for relay, part in zip(relays, parts, strict=True)
        ]
    )
    fake.fallback(None)
    answered = sum(verdicts(body) for body, _ in results)
    slowest = max(seconds for _, seconds in results)
    span = max(arrivals.times) - min(arrivals.times) if arrivals.times else 0.0
    per_second = arrivals.busiest_second()
    sliding_second = arrivals.busiest_sliding(1.0)
    five = arrivals.busiest_sliding(5.0)
    fastest_allowed = (H_OBSERVABLES / RATE_LIMIT) - 1  # the first second's turns come at once
    passed = (
        per_second <= RATE_LIMIT
        and five <= 110
        and span >= fastest_allowed
        and answered == H_OBSERVABLES
        and len(arrivals.times) == H_OBSERVABLES
        and slowest < H_DEADLINE
    )
    return (
        "H",
        f"{len(relays)} instances, {H_OBSERVABLES} distinct observables at once,"
        f" THREATSCORE_RATE_LIMIT={RATE_LIMIT}",
        f"busiest second {per_second} (any 1-s window: {sliding_second}), busiest 5 s {five};"
        f" {len(arrivals.times)} upstream calls over {span:.1f} s; {answered}/{H_OBSERVABLES}"
        f" answered, slowest request {slowest:.1f} s (deadline {H_DEADLINE:g} s)",
        f"<= {RATE_LIMIT} a second, <= 110 in 5 s, about {H_OBSERVABLES / RATE_LIMIT:g} s, all in time",
        passed,
    )


def case_i(fake: ThreatscoreSimulator, relays: list[RelayProcess], redis: RedisProcess) -> Row:
    batch = ips("198.20", I_OBSERVABLES)
    for item in batch:
        fake.answer(item["value"], answers.FOUR_ENGINES)
    for relay in relays:  # warming: Redis, and each instance's memory tier
        post(relay.url, batch)

    def pass_through_all() -> tuple[list[dict], float]:
        started = time.monotonic()
        bodies = [post(relay.url, batch) for relay in relays]
        return bodies, time.monotonic() - started

    _, warm_seconds = pass_through_all()
    calls_before = fake.total_calls
    redis.stop()
    bodies, outage_seconds = pass_through_all()
    upstream = fake.total_calls - calls_before
    failed = sum(errors(body) for body in bodies)
    answered = sum(verdicts(body) for body in bodies)
    expected = I_OBSERVABLES * len(relays)
    passed = failed == 0 and upstream == 0 and answered == expected and outage_seconds <= 2 * warm_seconds
    return (
        "I",
        f"Redis stopped after warming: the same {I_OBSERVABLES}-observable batch through each of"
        f" {len(relays)} instances",
        f"{failed} errors, {upstream} upstream calls, {answered}/{expected} answered;"
        f" {outage_seconds * 1000:.0f} ms vs {warm_seconds * 1000:.0f} ms warm"
        f" ({outage_seconds / warm_seconds:.2f}x)",
        "0 errors, 0 upstream calls, <= 2x the warm time",
        passed,
    )


def cases_g_h_i_j(fake: ThreatscoreSimulator, relay_env: dict[str, str], log_dir: Path) -> list[Row]:
    """Starts one redis-server and the instances, runs the four cases, stops them all."""
    redis = RedisProcess(log_dir).start()
    relays: list[RelayProcess] = []
    try:
        # A signing key of the run's own: the relay then seals its entries as a deployment does.
        shared = {**relay_env, "REDIS_URL": redis.url, "REDIS_SIGNING_KEY": secrets.token_urlsafe(32)}
        plain = [RelayProcess(shared, log_dir) for _ in range(3)]
        relays += plain
        limited_env = {**shared, "THREATSCORE_RATE_LIMIT": str(RATE_LIMIT), "RELAY_DEADLINE": str(H_DEADLINE)}
        limited = [RelayProcess(limited_env, log_dir) for _ in range(3)]
        relays += limited
        for relay in relays:  # the first request of each process, not its cache
            post(relay.url, [{"type": "ip", "value": "192.0.2.1"}])
        rows = [case_g(fake, plain), case_j(fake, plain), case_h(fake, limited)]
        for relay in limited:
            relay.stop()
        rows.append(case_i(fake, plain, redis))
        return rows
    finally:
        for relay in relays:
            relay.stop()
        redis.stop()


if __name__ == "__main__":  # these cases alone: PYTHONPATH=. .venv/bin/python bench/instances.py
    import logging
    import tempfile

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreatscoreSimulator(latency=0.1).start()
    try:
        with tempfile.TemporaryDirectory() as logs:
            env = {"THREATSCORE_API_URL": server.url, "RELAY_AUTH": "none", "RELAY_LOOKUP_INTERNAL": "true"}
            for row in cases_g_h_i_j(server, env, Path(logs)):
                print(" | ".join(str(cell) for cell in row))
    finally:
        server.stop()
