"""What can only be internal: the observables the relay does not send to Threatscore.

An investigation is full of the organisation's own addresses and host names;
none of them means anything to a third party, and each one tells it something
about the network. `is_internal` says which observables are of that kind:

- addresses that are private, loopback, link-local, shared (CGNAT, 100.64.0.0/10),
  unique-local (fc00::/7), multicast, unspecified or reserved, in any IPv6 form
  that carries an IPv4 address (IPv4-mapped, NAT64, 6to4);
- host names under `localhost`, `.local`, `.internal`, `.lan` or `.home.arpa`,
  or without a dot;
- URLs (and e-mail addresses) whose host is one of these.

The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
2001:db8::/32, 3fff::/20) and the names RFC 2606 and RFC 6761 set aside for
examples and tests (`.example`, `example.com`, `example.net`, `example.org`,
`.test`, `.invalid`) are not internal: no organisation's network uses them
(RFC 6761 asks software not to treat them as special).

Pure functions; `relay.schemas.parse_observables` applies them unless
RELAY_LOOKUP_INTERNAL is set.
"""

from __future__ import annotations

import bisect
import ipaddress
import unicodedata
from urllib.parse import urlsplit

from relay.observables import Observable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_IPV4_INTERNAL = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 is the unspecified address
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # reserved: IETF protocol assignments (but see _IPV4_GLOBAL)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # reserved: benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, with 255.255.255.255 (broadcast)
    )
)
# Anycast services in 192.0.0.0/24 that IANA lists as globally reachable.
_IPV4_GLOBAL = tuple(ipaddress.IPv4Network(network) for network in ("192.0.0.9/32", "192.0.0.10/32"))
# The same as numbers, sorted (the networks do not overlap): a check is one binary search.
_IPV4_FIRSTS = tuple(sorted(int(net.network_address) for net in _IPV4_INTERNAL))
_IPV4_LASTS = tuple(sorted(int(net.broadcast_address) for net in _IPV4_INTERNAL))
_IPV4_GLOBAL_NUMBERS = frozenset(int(net.network_address) for net in _IPV4_GLOBAL)

# Outside global unicast (2000::/3) every IPv6 address is loopback, unspecified,
# unique-local (fc00::/7), link-local (fe80::/10), site-local, multicast (ff00::/8) or
# reserved; within it, only these are internal.
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV6_INTERNAL_IN_GLOBAL_UNICAST = (ipaddress.IPv6Network("2001:2::/48"),)  # benchmarking
# IPv6 forms of an IPv4 address: internal exactly when that address is.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")

# Host names that only a local resolver answers: RFC 6761 (localhost), RFC 6762 (.local,
# multicast DNS), RFC 8375 (.home.arpa), ICANN's private-use .internal, and the .lan of
# home routers.
INTERNAL_NAME_SUFFIXES = ("localhost", "local", "internal", "lan", "home.arpa")
# The dots UTS 46 reads as dots (IDNA maps them to "." before a name is looked up).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})

_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"), 16: frozenset("0123456789abcdefABCDEF")}

ADDRESS_TYPES = frozenset({"ip", "ipv6"})
NAME_TYPES = frozenset({"domain", "hostname"})


def is_internal(observable: Observable) -> bool:
    """Whether `observable` can only be internal (by its type and canonical lookup value)."""
    kind, value = observable.type, observable.lookup_value
    if kind in ADDRESS_TYPES:
        address = _address(value)
        return address is not None and is_internal_address(address)
    if kind in NAME_TYPES:
        return is_internal_host(value)
    if kind == "url":
        return is_internal_url(value)
    if kind == "email":
        return is_internal_host(value.rpartition("@")[2])
    return False  # hashes, user agents...: nothing about a network


def is_internal_address(address: Address) -> bool:
    number = int(address)
    if address.version == 4:
        if number in _IPV4_GLOBAL_NUMBERS:
            return False
        index = bisect.bisect_right(_IPV4_FIRSTS, number) - 1
        return index >= 0 and number <= _IPV4_LASTS[index]
    if _within(number, _IPV4_MAPPED) or _within(number, _NAT64):
        return is_internal_address(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    if _within(number, _SIX_TO_FOUR):
        return is_internal_address(ipaddress.IPv4Address((number >> 80) & 0xFFFFFFFF))
    if not _within(number, _IPV6_GLOBAL_UNICAST):
        return True
    return any(_within(number, network) for network in _IPV6_INTERNAL_IN_GLOBAL_UNICAST)


def _within(number: int, network: ipaddress.IPv6Network) -> bool:
    """`number in network` for an IPv6 address's number, without building an address."""
    shift = 128 - network.prefixlen
    return number >> shift == int(network.network_address) >> shift


def is_internal_host(host: str) -> bool:
    """A URL's host or a domain: an address (in any form a browser reads as one), else a name."""
    text = host.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_DOTS)
    text = text.lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    address = _address(text) if ":" in text else _whatwg_ipv4(text)
    if address is not None:
        return is_internal_address(address)
    return is_internal_name(text)


def is_internal_name(name: str) -> bool:
    """A host name without a dot, or under one of `INTERNAL_NAME_SUFFIXES`."""
    name = name.rstrip(".").lower()
    if "." not in name:
        return True
    return any(name == suffix or name.endswith(f".{suffix}") for suffix in INTERNAL_NAME_SUFFIXES)


def is_internal_url(url: str) -> bool:
    """An http(s) URL whose host is internal (a URL without a host says nothing: False)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return False
    if not host:
        return False
    return is_internal_host(host)


def _address(text: str) -> Address | None:
    try:
        if ":" in text:
            return ipaddress.IPv6Address(text.partition("%")[0])  # a zone id says nothing of the address
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def _whatwg_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a browser makes of a host that ends in a number (`127.1`, `0x7f.0.0.1`,
    `2130706433`, `0177.0.0.1`), as the WHATWG URL standard parses it; None for a name."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or len(parts) > 4 or _number(parts[-1]) is None:
        return None
    numbers = [_number(part) for part in parts]
    if any(number is None for number in numbers):
        return None
    *first, last = numbers
    if any(number > 255 for number in first) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(first):
        value += number * 256 ** (3 - index)
    return ipaddress.IPv4Address(value)


def _number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host: decimal, 0x hexadecimal or 0-led octal."""
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:] or "0", 16
    elif len(part) > 1 and part.startswith("0"):
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits or any(char not in _DIGITS[base] for char in digits):
        return None
    digits = digits.lstrip("0") or "0"
    if len(digits) > 12:  # past any IPv4 number in any base: not an address (and no huge int)
        return None
    return int(digits, base)
