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
        ("md5", "D41D8CD98F00B204E9800998ECF8427E", "d41d8cd98f00b204e9800998ecf8427e"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427", None),  # 31 digits
        ("md5", "g41d8cd98f00b204e9800998ecf8427e", None),
        ("sha1", "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ("sha1", "d41d8cd98f00b204e9800998ecf8427e", None),  # an md5 is not a sha1
        ("sha256", " " + "AB" * 32 + " ", "ab" * 32),
        ("sha256", "ab" * 31, None),
        ("sha256", "０" * 64, None),  # fullwidth digits are not hex
        ("url", "https://example.com", "https://example.com"),
        ("url", "HTTPS://Example.COM/Path?Q=A#Frag", "https://example.com/Path?Q=A#Frag"),
        ("url", "http://Bücher.example/ü?x=ÿ", "http://xn--bcher-kva.example/ü?x=ÿ"),
        ("url", "http://user:Pass@Host.example:8080/a", "http://user:Pass@host.example:8080/a"),
        ("url", "http://1.2.3.4/x", "http://1.2.3.4/x"),
        ("url", "http://[2001:DB8::1]:443/", "http://[2001:db8::1]:443/"),
        ("url", "ftp://example.com/", None),
        ("url", "example.com/path", None),  # not absolute
        ("url", "http:///path", None),  # no host
        ("url", "http://exa mple.com/", None),
        ("url", "http://example.com:99999/", None),
        ("url", "http://[nope]/", None),
        ("url", "javascript:alert(1)", None),
        ("user_agent", "Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("user_agent", "curl/8.0\r\nX-Injected: 1", None),
        ("user_agent", "\t", None),
        ("email", "a@example.com", None),  # not a type the relay knows
    ],
)
def test_canonical_value(observable_type, value, canonical):
    assert canonical_value(observable_type, value) == canonical


# --- URLs: normalised from their parsed parts ------------------------------------------------

from hypothesis import given  # noqa: E402 - the property tests' own imports
from hypothesis import strategies as st  # noqa: E402


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("http://t/x", "http://t/x"),  # the host's letters are in the scheme: never found there
        ("https://s/a", "https://s/a"),
        ("HTTP://H/p", "http://h/p"),
        ("http://ttp/x", "http://ttp/x"),
        ("http://user@Ex.com:080/p", "http://user@ex.com:80/p"),  # the port's value, not its spelling
        ("http://t:/x", "http://t/x"),
        ("http://t?x#y", "http://t?x#y"),
        ("http://t/x?", "http://t/x?"),  # an empty query is kept as sent
    ],
)
def test_a_url_is_normalised_from_its_parts(value, canonical):
    assert canonical_value("url", value) == canonical


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyzHTPSX0123456789", min_size=1, max_size=12).filter(
    lambda label: not label.isdigit()
)
_REST_CHARS = "abcXYZhttps:/?#=&%.~-_!$'()*+,;@éü中0189"


@st.composite
def urls(draw) -> tuple[str, str]:
    """(an http(s) URL, what follows its authority: path, query and fragment as written)."""
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "Https", "hTtP"]))
    host = ".".join(draw(st.lists(_LABEL, min_size=1, max_size=3)))
    userinfo = draw(st.sampled_from(["", "user@", "u:p@", "T@"]))
    port = draw(st.one_of(st.just(""), st.integers(0, 65535).map(lambda number: f":{number}")))
    path = draw(st.text(alphabet=_REST_CHARS, max_size=30).map(lambda text: "/" + text))
    rest = path if draw(st.booleans()) else draw(st.sampled_from(["", "?q=1", "#frag", "?", "#", "?a#b"]))
    return f"{scheme}://{userinfo}{host}{port}{rest}", rest


@given(urls())
def test_url_normalisation_keeps_the_rest_as_sent_and_is_idempotent(generated):
    url, rest = generated
    normalised = canonical_value("url", url)
    if normalised is None:  # a host IDNA refuses (xn-- labels...): refused both ways
        return
    assert canonical_value("url", normalised) == normalised  # normalising twice changes nothing
    assert normalised.endswith(rest)  # path, query and fragment kept as sent
    sent_authority = url.partition("://")[2][: len(url.partition("://")[2]) - len(rest)]
    host = sent_authority.rpartition("@")[2].partition(":")[0]
    authority = normalised.partition("://")[2][: len(normalised.partition("://")[2]) - len(rest)]
    assert normalised.partition("://")[0] == url.partition("://")[0].lower()
    assert authority.rpartition("@")[2].partition(":")[0] == host.lower()  # the host, found where it is
