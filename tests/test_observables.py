import pytest

from relay.observables import canonical_value


@pytest.mark.parametrize(
    ("observable_type", "value", "canonical"),
    [
        ("ip", "1.1.1.1", "1.1.1.1"),
        ("ip", " 8.8.4.4 ", "8.8.4.4"),
        ("ip", "01.1.1.1", None),  # leading zeros are ambiguous (octal)
        ("ip", "256.1.1.1", None),
        ("ip", "2001:db8::1", None),  # an IPv6 address is not an ip
        ("ip", "1.1.1.1/../../x?y#z", None),
        ("ip", "1.1.1.1\x00", None),
        ("ipv6", "2001:db8::1", "2001:db8::1"),
        ("ipv6", "2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("ipv6", "2001:DB8::1", "2001:db8::1"),
        ("ipv6", "fe80::1%eth0", "fe80::1"),
        ("ipv6", "::ffff:192.0.2.1", "192.0.2.1"),
        ("ipv6", "1.1.1.1", None),
        ("ipv6", "2001:db8::1::2", None),
        ("domain", "example.com", "example.com"),
        ("domain", "Example.COM.", "example.com"),
        ("domain", "bücher.example", "xn--bcher-kva.example"),
        ("domain", "xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("domain", "BÜCHER.example", "xn--bcher-kva.example"),
        ("domain", "exa mple.com", None),
        ("domain", "example.com/path", None),
        ("domain", "-bad.example", None),
        ("domain", "under_score.example", None),
        ("domain", "a..b", None),
        ("domain", ".", None),
        ("domain", "1.2.3.4", None),
        ("domain", "evil\u202e.example", None),  # right-to-left override
        ("domain", "\u200fexample.com", None),  # right-to-left mark
        ("domain", "example\x07.com", None),
        ("domain", "a" * 64 + ".example", None),
        ("domain", ("a" * 60 + ".") * 5 + "example", None),
        ("url", "https://example.com", None),
    ],
)
def test_canonical_value(observable_type, value, canonical):
    assert canonical_value(observable_type, value) == canonical
