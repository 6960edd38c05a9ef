"""`python -m relay COMMAND` (relay/cli/): the function's settings and code, from a shell."""

from __future__ import annotations

import io

from relay.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The command's exit status, standard output and standard error."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def table_rows(out: str) -> dict[str, str]:
    """The table's rows by their first word (the summary line after them left out)."""
    lines = out.splitlines()[1:]
    return {line.split()[0]: line for line in lines[:-1]}


class Terminal(io.StringIO):
    """An output stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True
