"""Observable types: the one registry of the types the relay knows, and how each value is checked.

Each entry of `OBSERVABLE_TYPES` says, for one XDR observable type, how analysts
call it, how a value is checked and put in canonical form, how a bare value of
that type is recognised (the command line), and which Threatscore APIs
(THREATSCORE_API) look it up. The request parsing (`relay.schemas`), the
handlers (titles, the health probe), the command line, the OpenAPI description
and the docs' type table all follow it (the tests check the last two).

Pure functions. An observable keeps the caller's value untouched (it is echoed
back in every entity) next to the canonical form that is looked up and cached,
so equivalent spellings cost one lookup.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from relay.config import THREATSCORE_APIS

_HEX = re.compile(r"[0-9a-fA-F]+")

# The Threatscore APIs (THREATSCORE_API), each a backend of its own.
BACKENDS = THREATSCORE_APIS
EVERY_BACKEND = frozenset(BACKENDS)


@dataclass(frozen=True)
class ObservableType:
    name: str  # XDR's type name, lower case
    title: str  # how titles shown to analysts name it ("Search for this SHA-256")
    canonical: Callable[[str], str | None]  # the stripped, printable value -> its lookup form, or None
    backends: frozenset[str]  # the Threatscore APIs that look it up
    # Whether a bare value has this type's form (the command line types values by it); None: a
    # value of this type must be said as TYPE:VALUE (any text could be a user agent).
    recognises: Callable[[str], bool] | None = None


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
    """The canonical lookup form of `value`, or None when it is not valid for the type
    (or the type is not one of the registry's).

    (Its length was checked against RELAY_MAX_VALUE_LENGTH before.)
    """
    known = TYPES.get(observable_type)
    text = value.strip()
    if known is None or not text or not text.isprintable():
        return None
    return known.canonical(text)


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


def _md5(text: str) -> str | None:
    return _hash(text, 32)


def _sha1(text: str) -> str | None:
    return _hash(text, 40)


def _sha256(text: str) -> str | None:
    return _hash(text, 64)


def _printable_text(text: str) -> str | None:
    return text  # printable text: Threatscore gets it as sent (less surrounding blanks)


# --- how a bare value is recognised (the command line's typing) ------------------------

_URL_START = re.compile(r"https?://", re.IGNORECASE)
_DOTTED_NAME = re.compile(r"[^\s/\\:@?#]+\.[^\s/\\:@?#]+")


def _looks_like_ipv4(text: str) -> bool:
    return _ipv4(text) is not None


def _looks_like_ipv6(text: str) -> bool:
    return ":" in text and _ipv6(text) is not None


def _looks_like_url(text: str) -> bool:
    return _URL_START.match(text) is not None


def _looks_like_domain(text: str) -> bool:
    """A dotted name that is not all digits (`1.2.3` is no domain, nor a valid address)."""
    return _DOTTED_NAME.fullmatch(text) is not None and not text.replace(".", "").isdigit()


def _hex_of_length(length: int) -> Callable[[str], bool]:
    def looks_like_hash(text: str) -> bool:
        return len(text) == length and _HEX.fullmatch(text) is not None

    return looks_like_hash


# --- the registry ---------------------------------------------------------------------------

OBSERVABLE_TYPES: tuple[ObservableType, ...] = (
    ObservableType("ip", "IP", _ipv4, EVERY_BACKEND, _looks_like_ipv4),
    ObservableType("ipv6", "IPv6", _ipv6, EVERY_BACKEND, _looks_like_ipv6),
    ObservableType("domain", "domain", _domain, EVERY_BACKEND, _looks_like_domain),
    ObservableType("url", "URL", _url, frozenset({"v3"}), _looks_like_url),
    ObservableType("md5", "MD5", _md5, frozenset({"v3"}), _hex_of_length(32)),
    ObservableType("sha1", "SHA-1", _sha1, frozenset({"v3"}), _hex_of_length(40)),
    ObservableType("sha256", "SHA-256", _sha256, frozenset({"v3"}), _hex_of_length(64)),
    ObservableType("user_agent", "user agent", _printable_text, frozenset({"v3"})),
)
TYPES = {observable_type.name: observable_type for observable_type in OBSERVABLE_TYPES}
# Views of the registry: XDR type -> its title; Threatscore API -> the types it looks up.
TYPE_NAMES = {observable_type.name: observable_type.title for observable_type in OBSERVABLE_TYPES}
TYPES_BY_API = {api: frozenset(t.name for t in OBSERVABLE_TYPES if api in t.backends) for api in BACKENDS}

# XDR's observable type names (its whole vocabulary, most of which Threatscore does not know):
# only these count as a `TYPE:` prefix on the command line, so that `http://x` or an IPv6
# address is never read as one.
XDR_TYPE_NAMES = frozenset(
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


def recognised_type(text: str) -> str | None:
    """The registry's type whose form a bare value has (the first in registry order), or None."""
    for observable_type in OBSERVABLE_TYPES:
        if observable_type.recognises is not None and observable_type.recognises(text):
            return observable_type.name
    return None


_E_MAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_CVE = re.compile(r"CVE-\d{4}-\d{4,}", re.IGNORECASE)


def unrecognised_reason(text: str) -> str:
    """Why a bare value that no type recognises is not looked up, in words an analyst acts on."""
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            pass
        else:
            return f"a network range (IPv{network.version} CIDR): Threatscore looks up one address at a time"
    if _CVE.fullmatch(text):
        return "a vulnerability id (XDR type cve): Threatscore does not look vulnerabilities up"
    if _E_MAIL.fullmatch(text):
        return "an e-mail address (XDR type email): Threatscore does not look e-mail addresses up"
    if not any(mark in text for mark in " .:/") and any(char.isalpha() for char in text):
        return (
            "cannot tell its type (a host name without its domain?):"
            " give its full name, or say it as TYPE:VALUE"
        )
    return "cannot tell its type: say it as TYPE:VALUE (e.g. user_agent:...)"
