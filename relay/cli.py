"""The command line: `python -m relay COMMAND`, with the function's settings and code, no server.

    python -m relay lookup VALUE... [--file F] [--json]   look observables up (as /observe/observables)
    python -m relay health                                 the /health probe
    python -m relay token [--aud URL] [--limit N]          a token for RELAY_AUTH=secret
    python -m relay settings                               the effective settings (secrets: set/unset)
    python -m relay module-type --url URL --region R       the XDR module type for a deployed URL

Settings come from the environment, read by the same `Settings.from_env` as
the function; `lookup` and `health` call the same handlers the function
calls (`relay.app.build_source`, `build_handlers`), through the same
parsing of the observables. A command is one entry of `COMMANDS`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from relay import module_type, token
from relay.config import ConfigError, Settings, declared_settings
from relay.errors import RelayError
from relay.handlers import RequestContext
from relay.logs import redact
from relay.observables import TYPES_BY_API
from relay.schemas import INVALID_VALUE, UNSUPPORTED_TYPE, parse_observables
from relay.threatscore import ScoreSource

OK, FAILED, USAGE = 0, 1, 2

# XDR's observable type names: only these count as a `TYPE:` prefix, so that
# `http://x` or an IPv6 address is never read as one.
XDR_TYPES = frozenset(
    {
        "amp_computer_guid",
        "certificate_common_name",
        "certificate_issuer",
        "certificate_serial",
        "cisco_mid",
        "cisco_cm_id",
        "cisco_uc_id",
        "cve",
        "device",
        "domain",
        "email",
        "email_messageid",
        "email_subject",
        "file_name",
        "file_path",
        "hostname",
        "imei",
        "imsi",
        "ip",
        "ipv6",
        "mac_address",
        "md5",
        "ms_machine_id",
        "mutex",
        "ngfw_id",
        "ngfw_name",
        "odns_identity",
        "odns_identity_label",
        "orbital_node_id",
        "pki_serial",
        "process_name",
        "registry_key",
        "s1_agent_id",
        "sha1",
        "sha256",
        "swc_device_id",
        "url",
        "user",
        "user_agent",
    }
)
HASH_TYPES = {32: "md5", 40: "sha1", 64: "sha256"}
HEX = re.compile(r"[0-9a-fA-F]+")
URL = re.compile(r"https?://", re.IGNORECASE)
DOMAIN = re.compile(r"[^\s/\\:@?#]+\.[^\s/\\:@?#]+")
SCORE_IN_REASON = re.compile(r"score\s+(-?\d+(?:\.\d+)?(?:\s*%)?)", re.IGNORECASE)
PROGRESS_AFTER = 0.5  # seconds: a quicker batch shows no progress line


class UsageError(Exception):
    """Bad usage of a command: exit status 2, with this message."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relay",
        description="The relay from the command line: the function's settings (environment) and code.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    args = parser.parse_args(argv)
    if args.command is None:  # the commands, not just "COMMAND is required"
        parser.print_help(sys.stderr)
        return USAGE
    try:
        return args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE


# --- the relay, as the function builds it ----------------------------------------


def load_settings() -> Settings:
    settings = Settings.from_env()
    _log_to_stderr(settings.log_level)
    return settings


def build_relay(settings: Settings, watch: Callable[[], None] | None = None):
    """The handlers the function serves, in front of the Threatscore client the settings call for.

    `watch`, when given, is called as each Threatscore lookup finishes (the progress line).
    """
    from relay.app import build_handlers, build_source, make_session  # the function's own builders
    from relay.cache import build_cache

    source = build_source(settings, make_session(settings))
    if watch is not None:
        source = _WatchedSource(source, watch)
    return build_handlers(settings, source, build_cache(settings))


class _WatchedSource:
    """A `ScoreSource` that says when each lookup is over (answered or failed)."""

    def __init__(self, source: ScoreSource, finished: Callable[[], None]):
        self._source = source
        self._finished = finished

    def score(self, value: str, deadline: float | None = None) -> dict | None:
        try:
            return self._source.score(value, deadline)
        finally:
            self._finished()


def _log_to_stderr(level: str) -> None:
    """The relay's log records, as plain lines on stderr (stdout is the command's answer).

    Only warnings and worse, unless LOG_LEVEL asks for less (DEBUG or INFO show more).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("relay: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# --- lookup ------------------------------------------------------------------------


def lookup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "values",
        nargs="*",
        metavar="VALUE",
        help="an observable: its type is inferred from its form (ip, ipv6, domain, url, md5, sha1, "
        "sha256), or said as TYPE:VALUE (user_agent:sqlmap/1.7); - reads them from standard input",
    )
    parser.add_argument("--file", action="append", default=[], metavar="F", help="one observable per line")
    parser.add_argument(
        "--json", action="store_true", help="print the exact body /observe/observables would answer"
    )


def run_lookup(args: argparse.Namespace) -> int:
    items = _observables_asked(args.values, args.file)
    if not items:
        raise UsageError("no observable given (VALUE..., --file F, or - for standard input)")
    settings = load_settings()
    body = json.dumps([{"type": observable_type, "value": value} for observable_type, value in items])
    dropped: list[tuple[int, str]] = []
    try:
        observables = parse_observables(
            body.encode(),
            settings.max_observables,
            settings.max_value_length,
            TYPES_BY_API[settings.threatscore_api],
            dropped,
        )
    except RelayError as error:
        raise UsageError(error.message) from None
    progress = _Progress(len({observable.cache_key for observable in observables}), sys.stderr)
    handlers = build_relay(settings, watch=progress.one_done)
    context = RequestContext.start(settings)
    with progress:
        answer = handlers.observe(observables, context)
        references = handlers.refer(observables, context)["data"]
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        rows = _rows(items, dropped, observables, answer, references)
        print(render_table(rows))
    failed = bool(answer.get("errors")) or bool(dropped)
    return FAILED if failed else OK


def _observables_asked(values: list[str], files: list[str]) -> list[tuple[str, str]]:
    """(type, value) for every observable asked, in order, exact repeats once."""
    lines: list[str] = []
    for value in values:
        if value == "-":
            lines.extend(sys.stdin.read().splitlines())
        else:
            lines.append(value)
    for path in files:
        try:
            with open(path, encoding="utf-8") as file:
                lines.extend(file.read().splitlines())
        except OSError as error:
            raise UsageError(f"--file {path}: {error.strerror}") from None
    items: list[tuple[str, str]] = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        item = typed_observable(text)
        if item not in items:
            items.append(item)
    return items


def typed_observable(text: str) -> tuple[str, str]:
    """`TYPE:VALUE` when TYPE is one of XDR's type names, else the type the value's form says."""
    prefix, separator, rest = text.partition(":")
    if separator and prefix.lower() in XDR_TYPES and rest:
        return prefix.lower(), rest
    inferred = infer_type(text)
    if inferred is None:
        raise UsageError(
            f"cannot tell the type of {text[:100]!r}: say it as TYPE:VALUE (e.g. user_agent:...)"
        )
    return inferred, text


def infer_type(value: str) -> str | None:
    """The XDR type a value's form says: ip, ipv6, url, md5, sha1, sha256 or domain; None when unclear."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return "ip" if address.version == 4 else "ipv6"
    if URL.match(value):
        return "url"
    if len(value) in HASH_TYPES and HEX.fullmatch(value):
        return HASH_TYPES[len(value)]
    if DOMAIN.fullmatch(value) and not value.replace(".", "").isdigit():
        return "domain"
    return None


@dataclass
class Row:
    observable: str
    type: str
    verdict: str = ""
    score: str = ""
    categories: str = ""
    judgements: str = ""
    link: str = ""
    error: str = ""


DROP_WORDS = {
    UNSUPPORTED_TYPE: "not looked up: this relay does not support the type",
    INVALID_VALUE: "not looked up: not a valid value for the type",
}


def _rows(
    items: list[tuple[str, str]],
    dropped: list[tuple[int, str]],
    observables: list,
    answer: dict,
    references: list[dict],
) -> list[Row]:
    data = answer.get("data", {})
    verdicts = {_key(doc["observable"]): doc for doc in _docs(data, "verdicts")}
    judgements = _docs(data, "judgements")
    by_id = {doc.get("id"): doc for doc in (*judgements, *_docs(data, "indicators"))}
    based_on: dict[str, list[str]] = {}
    for relation in _docs(data, "relationships"):
        if relation.get("relationship_type") == "based-on":
            based_on.setdefault(relation.get("source_ref"), []).append(relation.get("target_ref"))
    errors = _errors_by_value(answer.get("errors", []), [observable.value for observable in observables])
    links = {index: reference.get("url", "") for index, reference in enumerate(references)}
    drops = dict(dropped)
    rows: list[Row] = []
    looked_up = iter(enumerate(observables))
    next_observable = next(looked_up, None)
    for index, (observable_type, value) in enumerate(items):
        row = Row(value, observable_type)
        rows.append(row)
        if index in drops:
            row.error = DROP_WORDS.get(drops[index], f"not looked up: {drops[index]}")
            continue
        if next_observable is None:
            continue
        position, observable = next_observable
        next_observable = next(looked_up, None)
        row.link = links.get(position, "")
        if observable.value in errors:
            row.error = errors[observable.value]
            continue
        key = (observable.type, observable.value)
        row.judgements = str(sum(1 for doc in judgements if _key(doc.get("observable", {})) == key))
        verdict = verdicts.get(key)
        if verdict is None:
            row.verdict = "no data"
            continue
        row.verdict = verdict.get("disposition_name", "")
        aggregate = by_id.get(verdict.get("judgement_id"), {})
        found = SCORE_IN_REASON.search(aggregate.get("reason", ""))
        row.score = found.group(1) if found else ""
        indicators = [by_id.get(ref, {}) for ref in based_on.get(aggregate.get("id"), [])]
        row.categories = ", ".join(_indicator_word(doc) for doc in indicators if doc)
    return rows


def _indicator_word(indicator: dict) -> str:
    """`phishing` for a category, `flag: attack` for an indicator flag (the indicator's tags)."""
    tags = indicator.get("tags") or [indicator.get("title", "")]
    return f"flag: {tags[0]}" if "indicator" in tags[1:] else str(tags[0])


def _docs(data: Any, kind: str) -> list[dict]:
    if not isinstance(data, dict):
        return []
    return list((data.get(kind) or {}).get("docs", []))


def _key(observable: dict) -> tuple[str, str]:
    return observable.get("type", ""), observable.get("value", "")


def _errors_by_value(errors: list[dict], values: list[str]) -> dict[str, str]:
    """Each error's message by the value it names (`"value: message"`), the longest value first."""
    found: dict[str, str] = {}
    for error in errors:
        message = error.get("message", "")
        for value in sorted(set(values), key=len, reverse=True):
            if message.startswith(f"{value}: ") and value not in found:
                found[value] = f"{error.get('code', 'error')}: {message[len(value) + 2 :]}"
                break
    return found


COLUMNS = (
    ("observable", "observable"),
    ("type", "type"),
    ("verdict", "verdict"),
    ("score", "score"),
    ("categories", "categories"),
    ("judgements", "judgements"),
    ("link", "Threatscore link"),
)


def render_table(rows: Iterable[Row]) -> str:
    """One line per observable; a failed one shows its error instead of its verdict."""
    rows = list(rows)
    widths = {name: len(title) for name, title in COLUMNS}
    for row in rows:
        if not row.error:
            for name, _title in COLUMNS:
                widths[name] = max(widths[name], len(getattr(row, name)))
        else:
            for name in ("observable", "type"):
                widths[name] = max(widths[name], len(getattr(row, name)))
    lines = ["  ".join(title.ljust(widths[name]) for name, title in COLUMNS).rstrip()]
    for row in rows:
        if row.error:
            first = f"{row.observable.ljust(widths['observable'])}  {row.type.ljust(widths['type'])}"
            lines.append(f"{first}  error: {row.error}")
        else:
            lines.append(
                "  ".join(getattr(row, name).ljust(widths[name]) for name, _title in COLUMNS).rstrip()
            )
    return "\n".join(lines)


class _Progress:
    """`looking up: 12/40` on stderr while a batch runs longer than a moment (only on a terminal)."""

    def __init__(self, total: int, stream: TextIO):
        self._total = total
        self._stream = stream
        self._done = 0
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    def one_done(self) -> None:
        with self._lock:
            self._done += 1

    def __enter__(self) -> _Progress:
        if self._total > 1 and self._stream.isatty():
            self._thread = threading.Thread(target=self._show, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._finished.set()
        if self._thread is not None:
            self._thread.join()
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()

    def _show(self) -> None:
        if self._finished.wait(PROGRESS_AFTER):
            return
        started = time.monotonic() - PROGRESS_AFTER
        while True:
            with self._lock:
                done = min(self._done, self._total)
            width = 30
            filled = width * done // self._total
            bar = "#" * filled + "-" * (width - filled)
            elapsed = time.monotonic() - started
            self._stream.write(f"\rlooking up [{bar}] {done}/{self._total} ({elapsed:.0f} s)")
            self._stream.flush()
            self._shown = True
            if self._finished.wait(0.1):
                return


# --- health, settings, token --------------------------------------------------------


def no_arguments(_parser: argparse.ArgumentParser) -> None:
    pass


def run_health(_args: argparse.Namespace) -> int:
    settings = load_settings()
    answer = build_relay(settings).health(RequestContext.start(settings))
    if answer.get("errors"):
        for error in answer["errors"]:
            print(f"{error['code']}: {error['message']}")
        return FAILED
    print(
        f"ok: Threatscore answered at {settings.threatscore_api_url} (looked up {settings.health_observable})"
    )
    return OK


def run_settings(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    declared = declared_settings()
    width = max(len(item.env) for item in declared)
    for item in declared:
        value = getattr(settings, item.field)
        shown = ("set" if value else "unset") if item.secret else format_setting(value) or "(not set)"
        default = " (default)" if value == item.default else ""
        print(f"{item.env.ljust(width)}  {shown}{default}")
    return OK


def format_setting(value: Any) -> str:
    """A setting's value as one would write it in its variable (`3,5`, `a,b`, `3600`); unset: empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(format_setting(part) for part in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


COMMANDS: tuple[Command, ...] = (
    Command(
        "lookup", "look observables up, as /observe/observables answers them", lookup_arguments, run_lookup
    ),
    Command("health", "the /health probe of Threatscore", no_arguments, run_health),
    Command("token", "print a bearer token for RELAY_AUTH=secret", token.add_arguments, token.run),
    Command("settings", "the effective settings (secrets shown as set or unset)", no_arguments, run_settings),
    Command(
        "module-type",
        "write the XDR module type for a deployed relay's URL",
        module_type.add_arguments,
        module_type.run,
    ),
)
