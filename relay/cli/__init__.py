"""The command line: `python -m relay COMMAND`, with the function's settings and code, no server.

    python -m relay lookup VALUE... [--file F] [--json]   look observables up (as /observe/observables)
    python -m relay health                                 the /health probe
    python -m relay token [--aud URL] [--limit N]          a token for RELAY_AUTH=secret
    python -m relay settings                               the effective settings (secrets: set/unset)
    python -m relay module-type --url URL --region R       the XDR module type for a deployed URL

Settings come from the environment, read by the same `Settings.from_env` as
the function; `lookup` and `health` call the same handlers the function
calls (`relay.app.build_source`, `relay.handlers.Handlers`), through the same
parsing of the observables. A command is one entry of `COMMANDS`.

One concern per module: `commands` (the arguments and each command), `reading`
(the values asked and their types), `table` (the lookup's table and summary),
`progress` (the progress line of a long batch).
"""

from relay.cli.commands import COMMANDS, FAILED, OK, USAGE, Command, format_setting, main
from relay.cli.reading import UsageError

__all__ = ["COMMANDS", "FAILED", "OK", "USAGE", "Command", "UsageError", "format_setting", "main"]
