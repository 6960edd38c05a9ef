"""The commands and their arguments: each command is one entry of `COMMANDS`.

`lookup` and `health` build the relay as the function does (`relay.app.build_source`,
the answer cache, `Handlers` over a `Lookup`) and call the same handlers, through the
same parsing of the observables; `lookup` also keeps each lookup's outcome, so that
the table reads the answers' facts beside the CTIM answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relay import module_type, token
from relay.cli.progress import Progress
from relay.cli.reading import Asked, UsageError, lines_asked, values_asked
from relay.cli.table import (
    Row,
    looked_up_rows,
    not_looked_up,
    render_table,
    style_for,
    summary,
)
from relay.config import ConfigError, Settings, declared_settings
from relay.errors import RelayError
from relay.handlers import Handlers, RequestContext
from relay.logs import redact
from relay.lookup import Lookup, Outcome
from relay.observables import TYPES, TYPES_BY_API
from relay.schemas import INTERNAL, INVALID_VALUE, UNSUPPORTED_TYPE, parse_observables
from relay.text import escaped
from relay.threatscore import AnswerSource

OK, FAILED, USAGE = 0, 1, 2


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
        print(f"error: {escaped(str(error))}", file=sys.stderr)
        return USAGE
    except ConfigError as error:
        print(f"error: {escaped(str(error))}", file=sys.stderr)
        return USAGE


# --- the relay, as the function builds it ----------------------------------------


def load_settings() -> Settings:
    settings = Settings.from_env()
    _log_to_stderr(settings.log_level)
    return settings


@dataclass(frozen=True)
class LocalRelay:
    handlers: Handlers
    outcomes: dict[str, Outcome]  # each lookup's outcome by `Observable.cache_key`: the answers


def build_relay(settings: Settings, watch: Callable[[], None] | None = None) -> LocalRelay:
    """The handlers the function serves, in front of the Threatscore client the settings call for,
    with the outcome of each lookup kept (the normalised answers behind the table's scores).

    `watch`, when given, is called as each Threatscore lookup finishes (the progress line).
    """
    from relay.app import build_source, make_session  # the function's own builders
    from relay.cache import build_cache

    source = build_source(settings, make_session(settings))
    if watch is not None:
        source = _WatchedSource(source, watch)
    lookup = _KeptLookup(source, build_cache(settings), settings.threatscore_max_concurrency)
    return LocalRelay(Handlers(settings, lookup), lookup.outcomes)


class _KeptLookup(Lookup):
    """The relay's `Lookup`, keeping each outcome (answer or error) by `Observable.cache_key`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, Outcome] = {}

    def look_up(self, observables, deadline, stats) -> dict[str, Outcome]:
        outcomes = super().look_up(observables, deadline, stats)
        self.outcomes.update(outcomes)
        return outcomes


class _WatchedSource:
    """An `AnswerSource` that says when each lookup is over (answered or failed)."""

    def __init__(self, source: AnswerSource, finished: Callable[[], None]):
        self._source = source
        self._finished = finished

    def fetch(self, value: str, deadline: float | None = None) -> dict | None:
        try:
            return self._source.fetch(value, deadline)
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
        return escaped(redact(super().format(record)), keep="\n")


# --- lookup ------------------------------------------------------------------------


def lookup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "values",
        nargs="*",
        metavar="VALUE",
        help="an observable: its type is told from its form (ip, ipv6, domain, url, md5, sha1, "
        "sha256), or said as TYPE:VALUE (user_agent:sqlmap/1.7); defanged values (hxxp://evil[.]com) "
        "are refanged; - reads them from standard input",
    )
    parser.add_argument("--file", action="append", default=[], metavar="F", help="one observable per line")
    parser.add_argument(
        "--json", action="store_true", help="print the exact body /observe/observables would answer"
    )


def run_lookup(args: argparse.Namespace) -> int:
    asked = values_asked(lines_asked(args.values, args.file, sys.stdin))
    if not asked:
        raise UsageError("no observable given (VALUE..., --file F, or - for standard input)")
    settings = load_settings()
    batch = _Batch(asked)
    for position, item in enumerate(asked):
        if item.type is None:
            batch.rows[position] = not_looked_up(item.given, None, item.reason)
        elif len(item.value) > settings.max_value_length:
            reason = f"longer than {settings.max_value_length} characters (RELAY_MAX_VALUE_LENGTH)"
            batch.rows[position] = not_looked_up(item.given, item.type, reason)
        else:
            batch.ask(position)
    # The relay's own parsing, as for a request: it leaves out the types the backend does not
    # look up and the values not valid for their type.
    dropped: list[tuple[int, str]] = []
    try:
        observables = parse_observables(
            batch.request_body(),
            settings.max_observables,
            settings.max_value_length,
            TYPES_BY_API[settings.threatscore_api],
            dropped,
            settings.lookup_internal,
        )
    except RelayError as error:  # more values than RELAY_MAX_OBSERVABLES
        raise UsageError(error.message) from None
    drops = dict(dropped)
    for position, index in batch.wanted:
        if index in drops:
            item = asked[position]
            reason = _drop_reason(drops[index], item.type or "", settings)
            batch.rows[position] = not_looked_up(item.given, item.type, reason)

    progress = Progress(len({observable.cache_key for observable in observables}), sys.stderr)
    relay = build_relay(settings, watch=progress.one_done)
    context = RequestContext.start(settings)
    with progress:
        answer = relay.handlers.observe(observables, context)
        references = relay.handlers.refer(observables, context)["data"]

    left_out = [row for row in batch.rows if row is not None]
    if args.json:
        print(escaped_json(json.dumps(answer, indent=2, ensure_ascii=False)))
        for row in left_out:  # not in the body: said on standard error
            print(escaped(f"not looked up: {row.observable}: {row.message}"), file=sys.stderr)
    else:
        kept = [index for index in range(len(batch.request)) if index not in drops]  # as `observables`
        looked_up = {
            index: (observable, reference.get("url", ""))
            for index, observable, reference in zip(kept, observables, references, strict=True)
        }
        answered = [(position, index) for position, index in batch.wanted if index in looked_up]
        rows = looked_up_rows(
            [(asked[position].given, *looked_up[index]) for position, index in answered],
            answer,
            {key: outcome.answer for key, outcome in relay.outcomes.items()},
        )
        for (position, _index), row in zip(answered, rows, strict=True):
            batch.rows[position] = row
        table = [row for row in batch.rows if row is not None]
        style = style_for(sys.stdout)
        print(render_table(table, style))
        print(summary(table, style))
    return FAILED if answer.get("errors") or left_out else OK


class _Batch:
    """The values asked, their rows as they are known, and the relay's request for the rest:
    each distinct (type, value) once, however many spellings of it were asked."""

    def __init__(self, asked: list[Asked]):
        self.asked = asked
        self.rows: list[Row | None] = [None] * len(asked)
        self.request: dict[tuple[str, str], int] = {}  # (type, value) -> its place in the request
        self.wanted: list[tuple[int, int]] = []  # (place in `asked`, place in the request)

    def ask(self, position: int) -> None:
        item = self.asked[position]
        key = (item.type or "", item.value)
        self.wanted.append((position, self.request.setdefault(key, len(self.request))))

    def request_body(self) -> bytes:
        return json.dumps([{"type": kind, "value": value} for kind, value in self.request]).encode()


def _drop_reason(reason: str, observable_type: str, settings: Settings) -> str:
    """Why the relay's parsing left a value out, as the table says it."""
    if reason == INVALID_VALUE:
        return f"not a valid value for the type {observable_type}"
    if reason == INTERNAL:
        return "internal, never sent to Threatscore (RELAY_LOOKUP_INTERNAL=true sends it)"
    if reason != UNSUPPORTED_TYPE:
        return reason
    api = settings.threatscore_api
    others = sorted(other for other, types in TYPES_BY_API.items() if observable_type in types)
    if others:
        backends = ", ".join(others)
        return f"the {api} API (THREATSCORE_API={api}) does not look up {observable_type}; {backends} does"
    return f"the relay does not look up {observable_type} (it looks up {', '.join(TYPES)})"


# --- health, settings, token --------------------------------------------------------


def no_arguments(_parser: argparse.ArgumentParser) -> None:
    pass


def run_health(_args: argparse.Namespace) -> int:
    settings = load_settings()
    answer = build_relay(settings).handlers.health(RequestContext.start(settings))
    if answer.get("errors"):
        for error in answer["errors"]:
            print(escaped(f"{error['code']}: {error['message']}"))
        return FAILED
    probe = f"looked up {settings.health_observable}"
    print(escaped(f"ok: Threatscore answered at {settings.threatscore_api_url} ({probe})"))
    return OK


def run_settings(_args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    declared = declared_settings()
    width = max(len(item.env) for item in declared)
    for item in declared:
        value = getattr(settings, item.field)
        shown = ("set" if value else "unset") if item.secret else format_setting(value) or "(not set)"
        default = " (default)" if value == item.default else ""
        print(f"{item.env.ljust(width)}  {escaped(shown)}{default}")
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


def escaped_json(text: str) -> str:
    """JSON text with each character that is not printable written as a JSON escape: the same
    JSON, and nothing in it acts on the terminal."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or char == "\n" else json.dumps(char, ensure_ascii=True)[1:-1]
        for char in text
    )
