"""python -m simulator [--port PORT] ... | xdr-token --aud URL ... | demo [--port PORT]

python -m simulator --port 8081            serve both Threatscore APIs and XDR's key set
python -m simulator xdr-token --aud URL    print an XDR-style RS256 token for RELAY_AUTH=jwks
python -m simulator demo                   the simulator and the relay in front of it (make demo)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from simulator.server import V3_PATH, ThreatscoreSimulator
from simulator.xdr import DEFAULT_KEY_FILE, XdrKeys

DEFAULT_PORT = 8081


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["xdr-token"]:
        return xdr_token(argv[1:])
    if argv[:1] == ["demo"]:
        from simulator.demo import main as demo

        return demo(argv[1:])
    return serve(argv)


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A Threatscore simulator: the score API, the v3 API and XDR's key set, on a local port. "
        "Other commands: `xdr-token` (python -m simulator xdr-token --help), `demo`.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}; 0: any")
    parser.add_argument("--latency", type=_non_negative, default=0.0, help="seconds added to each lookup")
    parser.add_argument(
        "--fault-rate", type=_share, default=0.0, help="share of lookups that fail at random, 0 to 1"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults (default: 0)")
    parser.add_argument(
        "--answers",
        type=Path,
        metavar="DIR",
        help="a folder of answers to serve instead of the simulator's own catalogue "
        "(see simulator/answers.py)",
    )
    parser.add_argument(
        "--key-file", type=Path, default=DEFAULT_KEY_FILE, help="XDR's signing key (made if missing)"
    )
    parser.add_argument("--quiet", action="store_true", help="no line per request")
    args = parser.parse_args(argv)

    catalogue: object = True
    if args.answers is not None:
        from simulator.answers import AnswersError, load_answers

        try:
            catalogue = load_answers(args.answers)
        except AnswersError as error:
            print(f"error: --answers: {error}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    simulator = ThreatscoreSimulator(
        host=args.host,
        port=args.port,
        latency=args.latency,
        catalogue=catalogue,
        xdr_keys=XdrKeys.load_or_create(args.key_file),
        log_requests=not args.quiet,
    )
    if args.fault_rate:
        simulator.inject_faults(args.fault_rate, seed=args.seed)
    try:
        simulator.start()
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"Threatscore simulator on {simulator.url}", flush=True)
    print(
        f"  score API: GET {simulator.url}/api/score/VALUE; v3: POST {simulator.url}{V3_PATH}; "
        f"XDR keys: {simulator.url}/.well-known/jwks",
        flush=True,
    )
    wait_for_a_stop_signal()
    simulator.stop()
    return 0


def wait_for_a_stop_signal() -> None:
    """Returns on SIGINT (Ctrl-C) or SIGTERM."""
    stopped = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        pass


def xdr_token(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator xdr-token",
        description="Print an RS256 token as XDR signs it for a module, with the simulator's key. "
        "Run the relay with RELAY_AUTH=jwks, RELAY_JWKS_HOSTS=<the simulator's host:port>, "
        "RELAY_JWKS_URL_TEMPLATE=http://{host}/.well-known/jwks and RELAY_ACCESS_KEYS=<tenant>=<key>.",
    )
    parser.add_argument(
        "--aud", required=True, type=_http_url, metavar="URL", help="the relay's URL (aud claim)"
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="the module's entities limit (CTR_ENTITIES_LIMIT claim)",
    )
    parser.add_argument(
        "--access-key",
        metavar="KEY",
        help="the module's Relay access key (ACCESS_KEY claim): one of the relay's RELAY_ACCESS_KEYS;"
        " default: the ACCESS_KEY environment variable, if set",
    )
    parser.add_argument(
        "--simulator",
        default=f"127.0.0.1:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"the simulator serving the key set: the jwks_host claim (default: 127.0.0.1:{DEFAULT_PORT})",
    )
    parser.add_argument(
        "--minutes", type=_positive_int, default=60, help="minutes until it expires (default: 60)"
    )
    parser.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="the simulator's signing key")
    args = parser.parse_args(argv)
    keys = XdrKeys.load_or_create(args.key_file)
    # From the environment by default: a key typed on a command line lands in the shell's history.
    access_key = args.access_key if args.access_key is not None else os.environ.get("ACCESS_KEY") or None
    token = keys.token(
        jwks_host=args.simulator,
        audience=args.aud,
        entities_limit=args.limit,
        access_key=access_key,
        minutes=args.minutes,
    )
    print(token)
    return 0


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {raw!r}")
    return value


def _non_negative(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or more, got {raw!r}")
    return value


def _share(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {raw!r}")
    return value


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"must be an http(s) URL, got {raw!r}")
    return raw.strip()


if __name__ == "__main__":
    sys.exit(main())
