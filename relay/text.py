"""Text from outside shown safely: never a character that acts on whoever shows it.

Threatscore's strings end up in XDR's UI (CTIM titles, tags, descriptions),
in log lines and on a terminal (`python -m relay lookup`). A terminal obeys
escape sequences (an OSC 52 sequence writes the clipboard, others clear the
screen or draw a link), a carriage return overwrites what was shown, and the
bidirectional controls (U+202A-U+202E, U+2066-U+2069) reorder what follows.

- `cleaned`: what the relay keeps of an upstream string (every string of an
  answer, as it enters the relay in `relay.schemas`, and upstream words quoted
  in error messages): escape sequences dropped whole, controls and line breaks
  made spaces, format characters (bidi controls, zero-width characters) and
  unassigned or private-use code points dropped, a lone surrogate made U+FFFD,
  runs of blanks made one.
- `escaped`: what the command line shows of any text it did not make itself
  (a value the user typed): each such character spelled out (`\\x1b`, `\\u202e`).
"""

from __future__ import annotations

import re
import unicodedata

# Upstream words quoted in a message are cut to this many characters.
QUOTE_LIMIT = 200

# ECMA-48 sequences, 7-bit (ESC ...) and 8-bit (C1) forms: a control sequence (CSI,
# parameters, final byte); a control string (OSC, DCS, SOS, PM, APC) up to its terminator
# (BEL, ST); any other escape (ESC and one final byte, such as ESC c: reset).
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]"
)
# Characters that become a space: controls (C0, DEL, C1) and separators other than the space.
_AS_SPACE = frozenset({"Cc", "Zs", "Zl", "Zp"})
# A lone surrogate (text that was not valid UTF-16/UTF-8 upstream) shows as U+FFFD, as any
# decoder shows an invalid sequence. The other characters that are not printable go:
# format characters (bidi controls, zero-width ones, the BOM...), private-use and
# unassigned code points.
_REPLACEMENT = "\ufffd"


def cleaned(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Text from upstream made fit to show: one line of printable characters, at most
    `limit` characters (cut with an ellipsis)."""
    text = text[: limit * 4]  # bounds the work; what is shown is at most `limit` anyway
    if not text.isprintable():  # the usual string is printable: no scan of its characters
        text = _ESCAPE_SEQUENCE.sub("", text)
        text = "".join(_visible(char) for char in text)
    words = " ".join(text.split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def _visible(char: str) -> str:
    # Python's "not printable" is exactly these categories and the ones dropped (but " ").
    if char.isprintable():
        return char
    category = unicodedata.category(char)
    if category in _AS_SPACE:
        return " "
    return _REPLACEMENT if category == "Cs" else ""


def escaped(text: str, keep: str = "") -> str:
    """`text` with every character that is not printable (but those in `keep`) spelled out as
    Python writes it (`\\x1b`, `\\u202e`): shown, never obeyed."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char in keep else repr(char)[1:-1] for char in text)
