"""Observables: which types the relay supports and how each value is validated.

Pure functions. An observable keeps the caller's value untouched (it is echoed
back in every entity) next to the canonical form that is looked up and cached,
so equivalent spellings cost one lookup.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

# XDR type -> how the type is named in titles shown to analysts.
TYPE_NAMES = {
    "ip": "IP",
    "ipv6": "IPv6",
    "domain": "domain",
    "url": "URL",
    "md5": "MD5",
    "sha1": "SHA-1",
    "sha256": "SHA-256",
    "user_agent": "user agent",
}
# The types each Threatscore API (THREATSCORE_API) looks up; others are dropped silently.
TYPES_BY_API = {
    "v3": frozenset(TYPE_NAMES),
    "score": frozenset({"ip", "ipv6", "domain"}),
}
# The score API's, as before there was a choice (the default of `parse_observables`).
SUPPORTED_TYPES = {name: TYPE_NAMES[name] for name in ("ip", "ipv6", "domain")}

HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
_HEX = re.compile(r"[0-9a-fA-F]+")


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
    """The canonical lookup form of `value`, or None when it is not valid for the type.

    (Its length was checked against RELAY_MAX_VALUE_LENGTH before.)
    """
    text = value.strip()
    if not text or not text.isprintable():
        return None
    if observable_type == "ip":
        return _ipv4(text)
    if observable_type == "ipv6":
        return _ipv6(text)
    if observable_type == "domain":
        return _domain(text)
    if observable_type in HASH_LENGTHS:
        return _hash(text, HASH_LENGTHS[observable_type])
    if observable_type == "url":
        return _url(text)
    if observable_type == "user_agent":
        return text  # printable text: Threatscore gets it as sent (less surrounding blanks)
    return None


def _hash(text: str, length: int) -> str | None:
    """Hex of the type's length; Threatscore knows hashes in lower case."""
    if len(text) != length or not _HEX.fullmatch(text):
        return None
    return text.lower()


def _url(text: str) -> str | None:
    """An absolute http(s) URL with a host: scheme and host lower-cased, the host in IDNA
    form (so that spellings of one URL share a lookup), the rest exactly as sent.

    Built from the parsed parts: the authority is the text right after `scheme://`, never
    found by searching (`http://t/x` has a `t` in its scheme)."""
    try:
        parts = urlsplit(text)
        port = parts.port  # refuses a port that is not a number in range
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        return None
    authority_at = len(parts.scheme) + len("://")
    if text[len(parts.scheme) : authority_at] != "://" or not text.startswith(parts.netloc, authority_at):
        return None  # urlsplit read something other than the text as sent
    rest = text[authority_at + len(parts.netloc) :]  # path, query and fragment, as sent
    userinfo, _, hostport = parts.netloc.rpartition("@")
    # The port as written (`:080` is port 80) goes; an empty one (`host:`) too.
    host = _url_host(hostport.rpartition(":")[0] if port is not None else hostport.rstrip(":"))
    if host is None:
        return None
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port}" if port is not None else "")
    return f"{scheme}://{netloc}{rest}"


def _url_host(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    address = _ipv4(host)
    if address is not None:
        return address
    return _domain(host)


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
