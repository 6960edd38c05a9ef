"""What can only be internal never leaves the relay (relay/internal.py), unless RELAY_LOOKUP_INTERNAL."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.internal import (
    INTERNAL_NAME_SUFFIXES,
    is_internal,
    is_internal_address,
    is_internal_host,
    is_internal_url,
)
from relay.observables import Observable, canonical_value
from relay.schemas import INTERNAL, parse_observables
from tests import answers
from tests.ctim import check_answer

REFER = "/refer/observables"


def observable(observable_type: str, value: str) -> Observable:
    lookup_value = canonical_value(observable_type, value)
    assert lookup_value is not None, (observable_type, value)
    return Observable(observable_type, value, lookup_value)


INTERNAL_OBSERVABLES = [
    # private
    ("ip", "10.0.0.1"),
    ("ip", "172.16.5.4"),
    ("ip", "172.31.255.255"),
    ("ip", "192.168.1.1"),
    # loopback, link-local, shared (CGNAT), unspecified, multicast, reserved, broadcast
    ("ip", "127.0.0.1"),
    ("ip", "127.0.0.100"),
    ("ip", "169.254.169.254"),
    ("ip", "100.64.0.1"),
    ("ip", "100.127.255.254"),
    ("ip", "0.0.0.0"),  # noqa: S104 - an observable, not an address to bind
    ("ip", "0.1.2.3"),
    ("ip", "224.0.0.251"),
    ("ip", "239.255.255.250"),
    ("ip", "240.0.0.1"),
    ("ip", "255.255.255.255"),
    ("ip", "192.0.0.8"),  # IETF protocol assignments
    ("ip", "198.18.0.1"),  # benchmarking (the load test's range)
    ("ip", "198.19.255.255"),
    # IPv6: loopback, unspecified, unique-local, link-local (with a zone), site-local, multicast
    ("ipv6", "::1"),
    ("ipv6", "::"),
    ("ipv6", "fc00::1"),
    ("ipv6", "fd12:3456:789a::1"),
    ("ipv6", "fe80::1"),
    ("ipv6", "fe80::1%eth0"),
    ("ipv6", "fec0::1"),
    ("ipv6", "ff02::1"),
    ("ipv6", "100::1"),  # discard-only
    ("ipv6", "2001:2::1"),  # benchmarking
    # IPv6 forms of internal IPv4 addresses
    ("ipv6", "::ffff:10.0.0.1"),
    ("ipv6", "::ffff:7f00:1"),
    ("ipv6", "64:ff9b::192.168.0.1"),
    ("ipv6", "2002:c0a8:101::1"),  # 6to4 of 192.168.1.1
    # names
    ("domain", "localhost"),
    ("domain", "db.localhost"),
    ("domain", "printer.local"),
    ("domain", "Printer.LOCAL."),
    ("domain", "vault.corp.internal"),
    ("domain", "nas.lan"),
    ("domain", "router.home.arpa"),
    ("domain", "intranet"),  # no dot
    ("domain", "intranet."),
    ("domain", "ｉｎｔｒａｎｅｔ.ｌｏｃａｌ"),  # full-width: the same name once IDNA maps it
    # URLs whose host is internal
    ("url", "http://intranet.local/"),
    ("url", "https://intranet/login"),
    ("url", "http://10.0.0.1:8080/admin"),
    ("url", "http://user:pass@192.168.0.10/"),
    ("url", "http://[fe80::1]/"),
    ("url", "http://[::ffff:10.0.0.1]/x"),
    ("url", "https://wiki.corp.internal/page?q=1#top"),
    ("url", "HTTP://LOCALHOST:3000/"),
]

EXTERNAL_OBSERVABLES = [
    # documentation ranges: the simulator's catalogue lives there
    ("ip", "192.0.2.1"),
    ("ip", "198.51.100.7"),
    ("ip", "203.0.113.5"),
    ("ipv6", "2001:db8::bad"),
    ("ipv6", "::ffff:192.0.2.1"),
    ("ipv6", "3fff::1"),  # documentation (RFC 9637)
    # public addresses
    ("ip", "1.1.1.1"),
    ("ip", "8.8.8.8"),
    ("ip", "100.63.255.255"),  # just below the shared range
    ("ip", "100.128.0.0"),  # just above it
    ("ip", "172.15.255.255"),
    ("ip", "172.32.0.0"),
    ("ip", "192.0.0.9"),  # a globally reachable anycast service in 192.0.0.0/24
    ("ip", "198.17.255.255"),
    ("ip", "198.20.0.0"),
    ("ip", "223.255.255.255"),
    ("ipv6", "2606:4700:4700::1111"),
    ("ipv6", "::ffff:8.8.8.8"),
    ("ipv6", "64:ff9b::8.8.8.8"),
    ("ipv6", "2002:808:808::1"),  # 6to4 of 8.8.8.8
    # example and test names (RFC 2606, RFC 6761): not internal
    ("domain", "example.com"),
    ("domain", "example.net"),
    ("domain", "example.org"),
    ("domain", "phish.example"),
    ("domain", "legacy.example"),
    ("domain", "host.test"),
    ("domain", "nothing.invalid"),
    # names that only look like internal ones
    ("domain", "local.example.com"),
    ("domain", "localhost.example"),
    ("domain", "intranet.com"),
    ("domain", "mylan.com"),
    ("domain", "internal.example.org"),
    ("domain", "home.arpa.example"),
    ("url", "http://phish.example/login"),
    ("url", "https://example.com/intranet.local"),
    ("url", "http://intranet.local@example.com/"),  # the host is example.com
    ("url", "http://[2001:db8::1]:443/"),
    ("url", "http://192.0.2.1/"),
    # no network in them
    ("md5", "44d88612fea8a8f36de82e1278abb02f"),
    ("user_agent", "curl/8.0 (intranet)"),
]


@pytest.mark.parametrize(("observable_type", "value"), INTERNAL_OBSERVABLES)
def test_what_can_only_be_internal(observable_type, value):
    assert is_internal(observable(observable_type, value))


@pytest.mark.parametrize(("observable_type", "value"), EXTERNAL_OBSERVABLES)
def test_documentation_example_and_public_values_are_not_internal(observable_type, value):
    assert not is_internal(observable(observable_type, value))


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "0x7f.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "10.1",
        "0xa000001",
        "192.168.257",
        "0",
        "0x" + "0" * 50 + "7f.1",
    ],
)
def test_hosts_a_browser_reads_as_internal_addresses(host):
    """The WHATWG URL parser reads these as IPv4 addresses: they are judged as such."""
    assert is_internal_host(host)
    assert is_internal_url(f"http://{host}/")


# --- properties ---------------------------------------------------------------------

ipv4_addresses = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6_addresses = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
DOCUMENTATION = [
    ipaddress.ip_network(network)
    for network in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20")
]
SHARED = ipaddress.IPv4Network("100.64.0.0/10")


@given(ipv4_addresses)
def test_an_ipv4_address_and_its_ipv6_forms_agree(address):
    internal = is_internal_address(address)
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    nat64 = ipaddress.IPv6Address(f"64:ff9b::{address}")
    assert is_internal_address(mapped) == is_internal_address(nat64) == internal
    # As observables: an IPv4-mapped IPv6 observable is judged as its IPv4 address.
    assert is_internal(observable("ipv6", str(mapped))) == is_internal(observable("ip", str(address)))


@given(ipv4_addresses)
def test_ipv4_agrees_with_the_standard_library_but_for_documentation(address):
    """Every address Python's `ipaddress` calls private, shared, loopback, link-local,
    multicast, reserved or unspecified is internal, but the documentation ranges; and
    nothing else is, but 192.0.0.0/24 (IETF protocol assignments, reserved)."""
    special = (
        address.is_private
        or address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address in SHARED
    )
    documentation = any(address in network for network in DOCUMENTATION)
    if documentation:
        assert not is_internal_address(address)
    elif special:
        assert is_internal_address(address)
    elif address not in ipaddress.IPv4Network("192.0.0.0/24"):
        assert not is_internal_address(address)


@given(ipv4_addresses)
def test_a_browsers_other_spellings_of_an_address_are_judged_as_the_address(address):
    number = int(address)
    octets = address.packed
    for host in (
        str(number),
        hex(number),
        ".".join(f"0{octet:o}" for octet in octets),
        f"{octets[0]}.{number & 0xFFFFFF}",
    ):
        assert is_internal_host(host) == is_internal_address(address), host


@given(ipv6_addresses)
def test_ipv6_outside_global_unicast_is_internal_and_inside_it_is_not(address):
    embeds_ipv4 = any(
        address in ipaddress.IPv6Network(network)
        for network in ("::ffff:0:0/96", "64:ff9b::/96", "2002::/16")
    )
    if embeds_ipv4:
        return  # judged by the IPv4 address (above)
    if address not in ipaddress.IPv6Network("2000::/3"):
        assert is_internal_address(address)
    elif address not in ipaddress.IPv6Network("2001:2::/48"):
        assert not is_internal_address(address)


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)


@given(names, st.sampled_from(INTERNAL_NAME_SUFFIXES))
def test_any_name_under_an_internal_suffix_is_internal(name, suffix):
    assert is_internal_host(f"{name}.{suffix}")
    assert is_internal(observable("domain", f"{name}.{suffix}"))


@given(labels.filter(lambda label: not label.isdigit()))
def test_any_name_without_a_dot_is_internal(label):
    assert is_internal_host(label)


@given(names, st.sampled_from(["example", "example.com", "example.net", "example.org", "test", "com", "io"]))
def test_names_under_public_or_example_domains_are_not_internal(name, parent):
    assert not is_internal(observable("domain", f"{name}.{parent}"))


hosts = st.one_of(
    names,
    names.map(lambda name: f"{name}.local"),
    ipv4_addresses.map(str),
    ipv6_addresses.map(lambda address: f"[{address}]"),
)


@given(
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["", "user@", "user:pass@"]),
    hosts,
    st.sampled_from(["", ":8080", ":1"]),
    st.sampled_from(["", "/", "/a/b?c=d#e", "/intranet.local"]),
)
def test_a_url_is_internal_exactly_when_its_host_is(scheme, userinfo, host, port, rest):
    url = f"{scheme}://{userinfo}{host}{port}{rest}"
    assert is_internal_url(url) == is_internal_host(host)


@given(st.one_of(st.text(max_size=80), st.from_regex(r"[0-9.x]{1,6000}", fullmatch=True)))
def test_never_raises_on_any_text(text):
    for check in (is_internal_host, is_internal_url):
        assert check(text) in (True, False)
    for observable_type in ("ip", "ipv6", "domain", "url", "md5", "user_agent", "email", "hostname"):
        assert is_internal(Observable(observable_type, text, text)) in (True, False)


# --- parsing a request: left out, and counted ----------------------------------------

ALL_TYPES = ("ip", "ipv6", "domain", "url", "md5", "sha1", "sha256", "user_agent")


def test_parse_observables_leaves_internal_ones_out_and_says_why():
    body = json.dumps(
        [
            {"type": "ip", "value": "10.0.0.1"},
            {"type": "ip", "value": "192.0.2.1"},
            {"type": "domain", "value": "intranet"},
            {"type": "url", "value": "http://intranet.local/"},
            {"type": "domain", "value": "example.com"},
        ]
    ).encode()
    dropped: list[tuple[int, str]] = []
    kept = parse_observables(body, 100, 1024, ALL_TYPES, dropped)
    assert [item.value for item in kept] == ["192.0.2.1", "example.com"]
    assert dropped == [(0, INTERNAL), (2, INTERNAL), (3, INTERNAL)]

    dropped = []
    every = parse_observables(body, 100, 1024, ALL_TYPES, dropped, lookup_internal=True)
    assert len(every) == 5 and dropped == []


# --- against the real process: nothing internal reaches Threatscore ---------------------

OBSERVE = "/observe/observables"
HEALTH = "/health"
INTERNAL_SENT = [
    {"type": "ip", "value": "10.1.2.3"},
    {"type": "domain", "value": "intranet"},
    {"type": "url", "value": "http://intranet.local/"},
    {"type": "ipv6", "value": "fd00::7"},
]
EXTERNAL_SENT = [
    {"type": "ip", "value": "192.0.2.10"},
    {"type": "ipv6", "value": "2001:db8::10"},
    {"type": "domain", "value": "host.example"},
    {"type": "url", "value": "http://www.example.com/intranet"},
]


def asked_of(threatscore) -> list[str]:
    """The values the simulator was asked about (v3: the body's `data`)."""
    return [seen.body["data"] for seen in threatscore.requests_seen if isinstance(seen.body, dict)]


def values_in(docs: list[dict]) -> set[str]:
    return {doc["observable"]["value"] for doc in docs if "observable" in doc}


def test_internal_observables_never_reach_threatscore(threatscore, launch_relay, http):
    threatscore.answer("192.0.2.10", answers.V3_FOUND)
    threatscore.answer("10.1.2.3", answers.V3_FOUND)  # what Threatscore would say, were it asked
    relay = launch_relay(THREATSCORE_API="v3")
    body = INTERNAL_SENT + EXTERNAL_SENT

    observed = http.post(relay.url + OBSERVE, json=body, timeout=30).json()
    observed_again = http.post(relay.url + OBSERVE, json=body, timeout=30).json()
    referred = http.post(relay.url + REFER, json=body, timeout=30).json()
    health = http.post(relay.url + HEALTH, timeout=30).json()

    # Threatscore heard of the documentation-range values and the health probe's own, only.
    assert sorted(asked_of(threatscore)) == sorted(
        ["192.0.2.10", "2001:db8::10", "host.example", "http://www.example.com/intranet", "127.0.0.100"]
    )
    assert health == {"data": {"status": "ok"}}  # HEALTH_OBSERVABLE (127.0.0.100) is exempt
    # No data, no error and no refer link for the internal ones.
    check_answer(observed)
    assert "errors" not in observed and observed == observed_again
    internal_values = {item["value"] for item in INTERNAL_SENT}
    for kind in observed["data"].values():
        assert not values_in(kind["docs"]) & internal_values
    assert values_in(observed["data"]["verdicts"]["docs"]) == {"192.0.2.10"}
    assert [link["url"].rsplit("=", 1)[1] for link in referred["data"]] == [
        "192.0.2.10",
        "2001%3Adb8%3A%3A10",
        "host.example",
        "http%3A%2F%2Fwww.example.com%2Fintranet",
    ]
    # Each request's log line counts them.
    lines = [record for record in relay.log_records() if record.get("logger") == "relay.request"]
    counted = [(line["path"], line.get("dropped"), line["observables"]) for line in lines]
    assert counted == [
        (OBSERVE, {INTERNAL: 4}, 4),
        (OBSERVE, {INTERNAL: 4}, 4),
        (REFER, {INTERNAL: 4}, 4),
        (HEALTH, None, 0),
    ]
    assert "4 dropped: internal" in lines[0]["message"]


def test_relay_lookup_internal_sends_them_anyway(threatscore, launch_relay, http):
    threatscore.answer("10.1.2.3", answers.V3_FOUND)
    relay = launch_relay(THREATSCORE_API="v3", RELAY_LOOKUP_INTERNAL="true")

    observed = http.post(relay.url + OBSERVE, json=INTERNAL_SENT, timeout=30).json()
    referred = http.post(relay.url + REFER, json=INTERNAL_SENT, timeout=30).json()

    assert sorted(asked_of(threatscore)) == sorted(
        ["10.1.2.3", "intranet", "http://intranet.local/", "fd00::7"]
    )
    check_answer(observed)
    assert values_in(observed["data"]["verdicts"]["docs"]) == {"10.1.2.3"}
    assert len(referred["data"]) == 4
