import re

import pytest

from relay.observables import (
    BACKENDS,
    OBSERVABLE_TYPES,
    TYPES_BY_API,
    XDR_TYPE_NAMES,
    canonical_value,
    recognised_type,
)
from tests.contract import spec
from tests.relay_process import ROOT


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


# --- the registry is the one list of types --------------------------------------------------


def test_each_backend_looks_up_the_types_the_registry_gives_it():
    assert {
        "v3": frozenset({"ip", "ipv6", "domain", "url", "md5", "sha1", "sha256", "user_agent"}),
        "score": frozenset({"ip", "ipv6", "domain"}),
    } == TYPES_BY_API
    assert set(TYPES_BY_API) == set(BACKENDS)
    for observable_type in OBSERVABLE_TYPES:
        assert observable_type.backends <= set(BACKENDS), observable_type.name
        assert observable_type.name in XDR_TYPE_NAMES, observable_type.name  # XDR's own name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.7", "ip"),
        ("2001:db8::1", "ipv6"),
        ("fe80::1%eth0", "ipv6"),
        ("example.com", "domain"),
        ("http://phish.example/login", "url"),
        ("HTTPS://x.example", "url"),
        ("http://exa mple.com/", "url"),  # a URL's form, not a valid URL: said so, not guessed as another
        ("44d88612fea8a8f36de82e1278abb02f", "md5"),
        ("a" * 40, "sha1"),
        ("A" * 64, "sha256"),
        ("sqlmap/1.7", None),  # a user agent must be said
        ("localhost", None),
        ("1.2.3", None),
        ("10.0.0.0/8", None),
    ],
)
def test_a_bare_value_is_recognised_by_its_form(text, expected):
    assert recognised_type(text) == expected


def test_no_value_has_the_form_of_two_types():
    samples = [
        "198.51.100.7",
        "2001:db8::bad",
        "::ffff:192.0.2.1",
        "example.com",
        "bücher.example",
        "http://phish.example/login",
        "44d88612fea8a8f36de82e1278abb02f",
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "ab" * 32,
        "1234567890abcdef1234567890abcdef",  # hex only: a hash, never a domain or an address
    ]
    for text in samples:
        matching = [t.name for t in OBSERVABLE_TYPES if t.recognises is not None and t.recognises(text)]
        assert len(matching) == 1, (text, matching)


def test_what_a_type_recognises_it_also_accepts_when_valid():
    # Recognising is looser than checking (a URL with a space is still a URL, invalid), never stricter.
    for text, observable_type in [
        ("198.51.100.7", "ip"),
        ("2001:DB8::1", "ipv6"),
        ("Example.COM", "domain"),
        ("http://x.example/a", "url"),
        ("A" * 32, "md5"),
    ]:
        assert recognised_type(text) == observable_type
        assert canonical_value(observable_type, text) is not None


def test_the_openapi_description_lists_the_registrys_types():
    names = [observable_type.name for observable_type in OBSERVABLE_TYPES]
    schemas = spec()["components"]["schemas"]
    request_enum = schemas["Observables"]["items"]["properties"]["type"]["anyOf"][0]["enum"]
    assert request_enum[: len(names)] == names
    assert {name.lower() for name in request_enum} == set(names)  # the rest: other spellings of them
    assert schemas["Observable"]["properties"]["type"]["enum"] == names
    assert schemas["ReferEntry"]["properties"]["id"]["pattern"] == (
        f"^ref-threatscore-search-({'|'.join(names)})-"
    )
    described = spec()["components"]["requestBodies"]["Observables"]["description"]
    by_backend = dict(re.findall(r"^- `(\w+)`: (.+)$", described, re.M))
    assert {api: frozenset(listed.split(", ")) for api, listed in by_backend.items()} == TYPES_BY_API


def docs_type_table() -> dict[str, dict[str, str]]:
    """The docs' table of observable types (README.md or docs/*.md): type -> {column: cell}."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.strip().startswith("| type |") and "`v3`" in cells and "`score`" in cells:
                table = {}
                for row in lines[number + 2 :]:
                    if not row.strip().startswith("|"):
                        break
                    values = [cell.strip() for cell in row.strip().strip("|").split("|")]
                    for name in re.findall(r"`(\w+)`", values[0]):
                        table[name] = dict(zip(cells, values, strict=True))
                return table
    raise AssertionError("no table of observable types (| type | `v3` | `score` | ...) in the docs")


def test_the_docs_type_table_is_the_registry():
    table = docs_type_table()
    assert list(table) == [observable_type.name for observable_type in OBSERVABLE_TYPES]
    for observable_type in OBSERVABLE_TYPES:
        for api in BACKENDS:
            shown = table[observable_type.name][f"`{api}`"]
            assert shown == ("yes" if api in observable_type.backends else "no"), (observable_type.name, api)


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
