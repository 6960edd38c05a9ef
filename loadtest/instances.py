"""The many-instance mode of the load run (`--instances 3 --redis`).

Several relay processes share one real redis-server; the clients spread their
requests over the instances in turn, and Redis is restarted (killed, then
started again on its port, empty) halfway through the run. The checks are the
single-instance run's: no 5xx, every observable accounted for, every log line
JSON, no ERROR line; memory is summed over the instances.
"""

from __future__ import annotations

import itertools
import secrets
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from loadtest.run import LoadConfig, LoadReport, _Run, check_relay_log, relay_env, start_fake
from tests.redis_process import RedisProcess
from tests.relay_process import RelayProcess


class Instances:
    """The relays as one: each client thread talks to one instance (the clients are spread
    over them in turn), as a caller behind a load balancer keeps its connection; `rss_bytes`
    sums them.

    One instance per client, not one per request: a keep-alive connection left idle while
    its client talks to the others would be closed by gunicorn (2 s) just as it is reused.
    """

    def __init__(self, relays: list[RelayProcess]):
        self.relays = relays
        self._turns = itertools.cycle(relays)
        self._lock = threading.Lock()
        self._mine = threading.local()

    @property
    def url(self) -> str:
        relay = getattr(self._mine, "relay", None)
        if relay is None:
            with self._lock:
                relay = self._mine.relay = next(self._turns)
        return relay.url

    def rss_bytes(self) -> int:
        return sum(relay.rss_bytes() for relay in self.relays)


def _restart_redis_halfway(
    run: _Run, redis: RedisProcess, report: LoadReport, finished: threading.Event
) -> None:
    while not finished.is_set() and run.done < run.config.requests // 2:
        finished.wait(0.05)
    if finished.is_set():
        return
    report.notes.append(f"Redis killed after {run.done} requests")
    redis.stop()
    finished.wait(0.5)  # long enough for requests to find it gone
    redis.start()
    report.notes.append(f"Redis back after {run.done} requests")


def run_many_instances(config: LoadConfig, log_dir: Path | None = None, progress=None) -> LoadReport:
    report = LoadReport(config)
    fake = start_fake(config)
    with tempfile.TemporaryDirectory() as scratch:
        logs = log_dir or Path(scratch)
        redis = RedisProcess(logs).start() if config.redis else None
        env = relay_env(fake, read_timeout=1.0)
        if redis is not None:
            env["REDIS_URL"] = redis.url
            env["REDIS_SIGNING_KEY"] = secrets.token_urlsafe(32)  # sealed as a deployment seals
            # High enough never to hold the run back, so that the shared limiter's every call
            # (its Lua scripts included) goes through the Redis restart too.
            env["THREATSCORE_RATE_LIMIT"] = "1000"
        relays: list[RelayProcess] = []
        finished = threading.Event()
        try:
            relays += [RelayProcess(env, logs) for _ in range(config.instances)]
            instances = Instances(relays)
            report.rss_start = instances.rss_bytes()
            run = _Run(config, instances, report, progress)  # type: ignore[arg-type]
            restarter = None
            if redis is not None:
                restarter = threading.Thread(
                    target=_restart_redis_halfway, args=(run, redis, report, finished)
                )
                restarter.start()
            started = time.monotonic()
            clients = [threading.Thread(target=run.client, name=f"client-{n}") for n in range(config.clients)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            report.duration = time.monotonic() - started
            finished.set()
            if restarter is not None:
                restarter.join()
            report.rss_end = instances.rss_bytes()
            if not report.rss_after_warmup:
                report.rss_after_warmup = report.rss_end
        finally:
            finished.set()
            for relay in relays:
                relay.stop()
            if redis is not None:
                redis.stop()
            fake.stop()
        lines = 0
        for relay in relays:
            check_relay_log(relay, report)
            lines += report.request_log_lines
        report.request_log_lines = lines
    report.upstream_calls = fake.total_calls
    report.faults_injected = Counter(fake.faults_injected)
    return report
