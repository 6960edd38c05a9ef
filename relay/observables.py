"""Observables: which types the relay supports and how each value is validated.

Pure functions. An observable keeps the caller's value untouched (it is echoed
back in every entity) next to the canonical form that is looked up and cached,
so equivalent spellings cost one lookup.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import idna

# XDR type -> how the type is named in titles shown to analysts.
SUPPORTED_TYPES = {"ip": "IP", "ipv6": "IPv6", "domain": "domain"}


@dataclass(frozen=True)
class Observable:
    type: str  # lower-cased XDR type
    value: str  # exactly as the caller sent it
    lookup_value: str  # canonical form sent to Threatscore

    @property
    def cache_key(self) -> str:
        # An IPv4-mapped IPv6 address is looked up as its IPv4 address: it shares
        # that address's lookup and cache entry.
        kind = "ip" if self.type == "ipv6" and ":" not in self.lookup_value else self.type
        return f"{kind}:{self.lookup_value}"

    def to_ctim(self) -> dict:
        return {"type": self.type, "value": self.value}


def canonical_value(observable_type: str, value: str) -> str | None:
    """The canonical lookup form of `value`, or None when it is not valid for the type."""
    text = value.strip()
    if not text or not text.isprintable():
        return None
    if observable_type == "ip":
        return _ipv4(text)
    if observable_type == "ipv6":
        return _ipv6(text)
    if observable_type == "domain":
        return _domain(text)
    return None


def _ipv4(text: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _ipv6(text: str) -> str | None:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    # An IPv4-mapped address is that IPv4 address; Threatscore knows it as such.
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    # A zone id (fe80::1%eth0) only means something on the caller's host.
    return ipaddress.IPv6Address(int(address)).compressed


def _domain(text: str) -> str | None:
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return None
    try:
        # UTS 46 maps case and width variants, then IDNA 2008 rejects what is
        # not a valid label (spaces, controls, bidi marks, symbols...).
        ascii_name = idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    labels = ascii_name.split(".")
    if any(not label for label in labels) or labels[-1].isdigit():
        return None
    return ascii_name.lower()
