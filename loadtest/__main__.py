"""python -m loadtest [--requests N] [--clients N] ...: prints the report; exits 1 when a check fails."""

from __future__ import annotations

import argparse
import logging
import sys

from loadtest.run import LoadConfig, run_load


def main(argv: list[str] | None = None) -> int:
    defaults = LoadConfig()
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--observables", type=int, default=defaults.observables, help="per request")
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--latency", type=float, default=defaults.latency, help="seconds per lookup")
    parser.add_argument("--max-rss-growth-mb", type=float, default=defaults.max_rss_growth_mb)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--instances", type=int, default=defaults.instances, help="relay processes")
    parser.add_argument("--redis", action="store_true", help="share a redis-server, restarted mid-run")
    args = parser.parse_args(argv)
    config = LoadConfig(
        requests=args.requests,
        clients=args.clients,
        observables=args.observables,
        fault_rate=args.fault_rate,
        latency=args.latency,
        max_rss_growth_mb=args.max_rss_growth_mb,
        seed=args.seed,
        instances=args.instances,
        redis=args.redis,
    )
    # The fake Threatscore runs in this process: its access log and the tracebacks of
    # its injected resets are noise here.
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    print(f"loadtest: starting ({config.requests} requests, {config.clients} clients)...", flush=True)
    report = run_load(config, progress=lambda line: print(line, flush=True))
    print(report.render(), flush=True)
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
