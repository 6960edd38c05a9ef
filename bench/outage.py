"""Bench case K: a Threatscore outage, three instances, one Redis.

Three real `functions-framework` relay processes share one real `redis-server`
in front of the bench's fake Threatscore, which answers 503 to everything:

1. one batch of 50 new observables on one instance (the failures that open the breaker);
2. then a batch of 50 new observables on each instance at once: how long they take and what
   they cost Threatscore;
3. after the cool-down, the same again: Threatscore should see one probe, whatever the count
   of instances and lookups.

Measured twice: with the circuit breaker (BREAKER_FAILURES=5, BREAKER_COOL_DOWN=2) and with it
off (BREAKER_FAILURES=0: the relay as it was before the breaker), side by side.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from instances import all_at_once, errors, ips, post

from relay.breaker import OPEN_UNTIL_NAME
from relay.config import Settings
from relay.redis_link import RedisLink
from relay.redis_trust import RedisTrust
from simulator import Scripted
from simulator import ThreatscoreSimulator as ThreatscoreSimulator
from tests.redis_process import RedisProcess
from tests.relay_process import RelayProcess

Row = tuple[str, str, str, str, bool]

BATCH = 50
FAILURES = 5
COOL_DOWN = 2.0
OUTAGE = Scripted(status=503, body={"error": "down for maintenance"})


def _outage(fake: ThreatscoreSimulator, relays: list[RelayProcess], env: dict[str, str], prefix: str) -> dict:
    """`env`: the relays' settings; `prefix`: the first octet of the run's addresses (each batch
    new to the cache)."""
    fake.reset()
    fake.fallback(lambda _value: OUTAGE)
    try:
        started = time.monotonic()
        first = post(relays[0].url, ips(f"{prefix}.1", BATCH))
        opening_seconds = time.monotonic() - started
        opening_calls = fake.total_calls

        def batch(url: str, part: str) -> tuple[dict, float]:
            began = time.monotonic()
            body = post(url, ips(part, BATCH))
            return body, time.monotonic() - began

        open_results = all_at_once(
            [lambda url=relay.url, n=n: batch(url, f"{prefix}.{10 + n}") for n, relay in enumerate(relays)]
        )
        open_calls = fake.total_calls - opening_calls
        client = redis.Redis.from_url(env["REDIS_URL"])
        try:
            link = RedisLink(client, trust=RedisTrust.for_settings(Settings.from_env(env)))
            key = link.namespaced(OPEN_UNTIL_NAME)
            sealed = link.unseal(key, client.get(key))
            until = 0.0 if sealed is None else float(sealed.data)
        finally:
            client.close()
        probe_calls = None
        if until:
            time.sleep(max(0.0, until - time.time()) + 0.05)
            before = fake.total_calls
            all_at_once(
                [
                    lambda url=relay.url, n=n: batch(url, f"{prefix}.{20 + n}")
                    for n, relay in enumerate(relays)
                ]
            )
            probe_calls = fake.total_calls - before
        return {
            "opening_seconds": opening_seconds,
            "opening_calls": opening_calls,
            "opening_errors": errors(first),
            "open_slowest": max(elapsed for _body, elapsed in open_results),
            "open_calls": open_calls,
            "open_errors": sum(errors(body) for body, _elapsed in open_results),
            "probe_calls": probe_calls,
        }
    finally:
        fake.fallback(None)


def case_k(fake: ThreatscoreSimulator, relay_env: dict[str, str], log_dir: Path) -> list[Row]:
    rows: list[Row] = []
    redis_server = RedisProcess(log_dir).start()
    try:
        for label, breaker_env in (
            ("breaker", {"BREAKER_FAILURES": str(FAILURES), "BREAKER_COOL_DOWN": str(COOL_DOWN)}),
            ("off", {"BREAKER_FAILURES": "0"}),
        ):
            env = {**relay_env, **breaker_env, "REDIS_URL": redis_server.url}
            relays = [RelayProcess(env, log_dir) for _ in range(3)]
            try:
                for relay in relays:  # the first request of each process, before the outage
                    post(relay.url, [{"type": "ip", "value": "192.0.2.1"}])
                found = _outage(fake, relays, env, "61" if label == "off" else "60")
            finally:
                for relay in relays:
                    relay.stop()
            measured = (
                f"opening batch of {BATCH}: {found['opening_seconds']:.2f} s, {found['opening_calls']} calls;"
                f" then 3 x {BATCH} new at once: slowest {found['open_slowest']:.2f} s,"
                f" {found['open_calls']} calls, {found['open_errors']}/{3 * BATCH} errors"
            )
            if label == "breaker":
                probe_calls = found["probe_calls"]
                measured += f"; after the {COOL_DOWN:g} s cool-down, 3 x {BATCH} again: {probe_calls} call(s)"
                passed = (
                    found["open_slowest"] < 1.0 and found["open_calls"] == 0 and found["probe_calls"] == 1
                )
                rows.append(
                    (
                        "K",
                        f"503 outage, 3 instances, circuit breaker on (BREAKER_FAILURES={FAILURES},"
                        f" BREAKER_COOL_DOWN={COOL_DOWN:g})",
                        measured,
                        "once open: a batch of 50 within 1 s, 0 calls; 1 probe call per cool-down",
                        passed,
                    )
                )
            else:
                rows.append(
                    (
                        "K",
                        "the same outage, breaker off (BREAKER_FAILURES=0: the relay before the breaker)",
                        measured,
                        "for comparison (each lookup tries Threatscore with its retries)",
                        found["open_calls"] > 0,
                    )
                )
    finally:
        redis_server.stop()
    return rows


if __name__ == "__main__":  # this case alone: PYTHONPATH=.:bench .venv/bin/python bench/outage.py
    import logging
    import tempfile

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreatscoreSimulator(latency=0.1).start()
    try:
        with tempfile.TemporaryDirectory() as logs:
            env = {"THREATSCORE_API_URL": server.url, "RELAY_AUTH": "none", "THREATSCORE_API": "score"}
            for row in case_k(server, env, Path(logs)):
                print(" | ".join(str(cell) for cell in row))
    finally:
        server.stop()
