"""Reading the values asked (arguments, files, standard input) and telling each one's type.

The type of a bare value is the relay's own (`relay.observables.recognised_type`): the
command line has no rules of its own. What it adds is what analysts paste: values
defanged in tickets and mails (`hxxp://evil[.]com`) are refanged before typing, and a
value that cannot be typed gets a reason instead of stopping the batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TextIO

from relay.observables import TYPES, XDR_TYPE_NAMES, recognised_type, unrecognised_reason


class UsageError(Exception):
    """Bad usage of a command: exit status 2, with this message."""


@dataclass(frozen=True)
class Asked:
    """One value as asked: its line as given, its type (None: not told), the value looked up."""

    given: str  # as the analyst wrote it (less surrounding blanks): the table shows this
    type: str | None
    value: str  # refanged; what the relay is asked about
    reason: str = ""  # why it is not looked up, when its type could not be told


# Defanged spellings and what they stand for; brackets of any kind, any case.
_DEFANGED = (
    (re.compile(r"[\[({](?:\.|dot)[\])}]", re.IGNORECASE), "."),
    (re.compile(r"\[:\]"), ":"),
    (re.compile(r"\[@\]"), "@"),
    (re.compile(r"^hxxp(s?)://", re.IGNORECASE), r"http\1://"),
)


def refang(text: str) -> str:
    """`hxxp://evil[.]com` -> `http://evil.com`: `hxxp://`, `hxxps://`, `[.]`, `(.)`, `{.}`,
    `[dot]`, `[:]` and `[@]` undone; anything else as it is."""
    for pattern, replacement in _DEFANGED:
        text = pattern.sub(replacement, text)
    return text


def typed(text: str) -> Asked:
    """`TYPE:VALUE` when TYPE is one of XDR's type names, else the type the value's form says
    (after refanging); a value of no type the relay can tell says why."""
    prefix, separator, rest = text.partition(":")
    said = prefix.strip().lower()
    if separator and said in XDR_TYPE_NAMES and rest:
        known = TYPES.get(said)
        # Free text (a user agent) has no defanged form: it is looked up exactly as said.
        value = rest if known is not None and known.recognises is None else refang(rest)
        return Asked(text, said, value)
    value = refang(text)
    observable_type = recognised_type(value)
    if observable_type is None:
        return Asked(text, None, value, unrecognised_reason(value))
    return Asked(text, observable_type, value)


def lines_asked(values: list[str], files: list[str], stdin: TextIO) -> list[str]:
    """Every line asked, in order: the arguments (`-` is standard input), then each file;
    blank lines and `#` comments left out."""
    lines: list[str] = []
    for value in values:
        if value == "-":
            lines.extend(stdin.read().splitlines())
        else:
            lines.append(value)
    for path in files:
        try:
            with open(path, encoding="utf-8") as file:
                lines.extend(file.read().splitlines())
        except OSError as error:
            raise UsageError(f"--file {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--file {path}: not UTF-8 text") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def values_asked(lines: list[str]) -> list[Asked]:
    """Each distinct line typed, in order (a line repeated is one row; two spellings of one
    value, `evil[.]com` and `evil.com`, are two rows of one lookup)."""
    return [typed(line) for line in dict.fromkeys(lines)]
