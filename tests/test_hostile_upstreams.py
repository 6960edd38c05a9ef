"""Upstreams that attack the relay: redirects (with gzip bombs, to other origins, in loops),
answers trickled one byte at a time, servers that do not speak TLS.

Each attack is made by a real misbehaving server of the tests' own on
127.0.0.1 (tests/hostile_servers.py), against the relay as a real process
or in-process, and each test asserts what the fixed relay does: bounded
memory, bounded time, the right words for the right observable.
"""

from __future__ import annotations

import json
import ssl
import threading
import time

import pytest
import requests
import trustme
from pytest_httpserver import HTTPServer

from relay.auth import build_authenticator
from relay.config import Settings
from tests import answers
from tests.conftest import ACCESS_KEY, JWKS_PATH
from tests.hostile_servers import HostileServer, gzip_bomb, head, wait_until
from tests.test_auth import REQUEST_URL, jwks_settings, refusal, xdr_claims
from tests.test_upstream_faults import GOOD, check_error_entry, check_good_entities_intact, observe

ATTACKED = "198.51.100.66"
TIMEOUT = 0.5  # THREATSCORE_TIMEOUT: an attempt ends within connect + read = 1 s
DEADLINE = 5.0  # RELAY_DEADLINE: far longer, so that an answer by ~1 s is the attempt's bound at work
SLACK = 1.5  # a busy 2-core machine


def relaying_good_to(threatscore, attack):
    """An answer function: GOOD's lookups are passed to the fake Threatscore, others attacked."""

    def answer(connection, request_head: bytes) -> None:
        path = request_head.split(b" ", 2)[1].decode()
        if GOOD in path:
            reply = requests.get(threatscore.url + path, timeout=5)
            connection.sendall(
                head(
                    "200 OK", {"Content-Type": "application/json", "Content-Length": str(len(reply.content))}
                )
                + reply.content
            )
            return
        attack(connection, request_head)

    return answer


# --- redirects ------------------------------------------------------------------


def test_a_redirect_carrying_a_gzip_bomb_is_not_read(threatscore, launch_relay, http):
    bomb = gzip_bomb(1024)  # 1 GiB decoded
    elsewhere = HostileServer(
        lambda connection, _: connection.sendall(head("200 OK", {"Content-Length": "2"}) + b"{}")
    )

    def redirect_with_a_bomb(connection, _head):
        redirect = head(
            "302 Found",
            {
                "Location": elsewhere.url + "/api/score/" + ATTACKED,
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
                "Content-Length": str(len(bomb)),
            },
        )
        server.send(connection, redirect + bomb)

    server = HostileServer(relaying_good_to(threatscore, redirect_with_a_bomb))
    threatscore.answer(GOOD, answers.FOUR_ENGINES)
    with server, elsewhere:
        relay = launch_relay(
            THREATSCORE_API_URL=server.url, THREATSCORE_TIMEOUT="2", RELAY_DEADLINE=str(DEADLINE)
        )
        warm_up = http.post(
            relay.url + "/observe/observables", json=[{"type": "ip", "value": GOOD}], timeout=30
        )
        assert warm_up.status_code == 200
        before = relay.rss_bytes()

        response = http.post(
            relay.url + "/observe/observables",
            json=[{"type": "ip", "value": ATTACKED}, {"type": "ip", "value": GOOD}],
            timeout=30,
        )

        grown = relay.rss_bytes() - before
        answer = response.json()
        [error] = answer["errors"]
        check_error_entry(error, ATTACKED, "unknown", r"redirect \(HTTP 302\).*does not follow")
        check_good_entities_intact(answer)
        assert grown < 64 * 1024 * 1024, f"the relay grew by {grown / 2**20:.0f} MiB"
        assert elsewhere.requests == []  # not followed
        records = relay.log_records()
    assert all(len(str(record)) < 300_000 for record in records)


def test_redirect_hops_do_not_escape_the_deadline(threatscore, make_client):
    def redirect_to_itself_slowly(connection, request_head):
        time.sleep(0.3)
        path = request_head.split(b" ", 2)[1].decode()
        connection.sendall(
            head("307 Temporary Redirect", {"Location": server.url + path, "Content-Length": "0"})
        )

    server = HostileServer(relaying_good_to(threatscore, redirect_to_itself_slowly))
    threatscore.answer(GOOD, answers.FOUR_ENGINES)
    with server:
        client = make_client(
            THREATSCORE_API_URL=server.url, RELAY_DEADLINE="2", THREATSCORE_TIMEOUT=str(TIMEOUT)
        )
        answer, elapsed = observe(client, [ATTACKED, GOOD])
        attacked_requests = [request for request in server.requests if ATTACKED.encode() in request]
    [error] = answer["errors"]
    check_error_entry(error, ATTACKED, "unknown", r"redirect \(HTTP 307\)")
    check_good_entities_intact(answer)
    assert len(attacked_requests) == 1  # one answer, no hop
    assert elapsed < 2 + SLACK


def serving_keys_then(first_keys: list, then):
    """A key server's answer: the real key set on the first fetch, then `then`."""
    fetches = []

    def answer(connection, request_head):
        fetches.append(request_head)
        if len(fetches) == 1:
            body = json.dumps({"keys": [key.jwk() for key in first_keys]}).encode()
            connection.sendall(
                head("200 OK", {"Content-Type": "application/json", "Content-Length": str(len(body))}) + body
            )
            return
        then(connection, request_head)

    return answer


def test_a_key_server_redirecting_to_another_origin_is_not_trusted(keys, other_key_server):
    other_key_server.publish(keys["attacker"])  # the attacker's key set, at another origin

    def redirect_elsewhere(connection, _head):
        location = f"http://{other_key_server.host}{JWKS_PATH}"
        connection.sendall(head("302 Found", {"Location": location, "Content-Length": "0"}))

    server = HostileServer(serving_keys_then([keys["a"]], redirect_elsewhere))
    with server:
        authenticator = build_authenticator(jwks_settings(server, jwks_refetch_interval=0.0))
        real = f"Bearer {keys['a'].sign(xdr_claims(server.host))}"
        forged = f"Bearer {keys['attacker'].sign(xdr_claims(server.host))}"
        authenticator.authenticate(real, REQUEST_URL)

        # The attacker's kid is unknown: a refetch, answered by a redirect to the attacker's keys.
        reason = refusal(authenticator, forged)

        assert reason == "key server answered HTTP 302 (a redirect: the relay does not follow them)"
        assert other_key_server.fetches() == 0
        assert authenticator.authenticate(real, REQUEST_URL).claims["jwks_host"] == server.host  # keys kept
        assert refusal(authenticator, forged).startswith("key server answered HTTP 302")


def test_a_cold_cache_redirected_to_another_origin_trusts_nothing(keys, other_key_server):
    other_key_server.publish(keys["attacker"])

    def redirect_elsewhere(connection, _head):
        location = f"http://{other_key_server.host}{JWKS_PATH}"
        connection.sendall(head("301 Moved Permanently", {"Location": location, "Content-Length": "0"}))

    with HostileServer(redirect_elsewhere) as server:
        authenticator = build_authenticator(jwks_settings(server))
        reason = refusal(authenticator, f"Bearer {keys['attacker'].sign(xdr_claims(server.host))}")
    assert reason.startswith("key server answered HTTP 301")
    assert other_key_server.fetches() == 0


# --- answers trickled one byte at a time -------------------------------------------


def trickled_status_line(server):
    return lambda connection, _: server.trickle_forever(connection, b"H", 0.1)


def trickled_headers(server):
    def answer(connection, _):
        server.send(connection, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        server.trickle_forever(connection, b"X", 0.1)

    return answer


def trickled_big_chunk(server):
    def answer(connection, _):
        server.send(
            connection, head("200 OK", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        )
        server.send(connection, b"4000\r\n")  # one chunk of 16 kB (under the size cap), sent a byte at a time
        server.trickle_forever(connection, b" ", 0.1)

    return answer


@pytest.mark.parametrize("attack", [trickled_status_line, trickled_headers, trickled_big_chunk])
def test_a_trickling_threatscore_is_cut_off_at_the_attempts_end(threatscore, make_client, attack):
    server = HostileServer()
    server.answer_with(relaying_good_to(threatscore, attack(server)))
    threatscore.answer(GOOD, answers.FOUR_ENGINES)
    with server:
        client = make_client(
            THREATSCORE_API_URL=server.url, RELAY_DEADLINE=str(DEADLINE), THREATSCORE_TIMEOUT=str(TIMEOUT)
        )
        answer, elapsed = observe(client, [ATTACKED, GOOD])
        [error] = answer["errors"]
        check_error_entry(error, ATTACKED, "timeout", r"did not arrive whole within 1 s")
        check_good_entities_intact(answer)
        assert elapsed < 2 * TIMEOUT + SLACK  # the attempt's bound, well before the deadline
        # The relay closed the connection: the trickle ends (its writes fail).
        assert wait_until(lambda: any(ATTACKED.encode() in answered for answered in server.answered), 5)


def test_a_trickling_key_download_is_bounded_in_wall_clock_time(keys):
    server = HostileServer(lambda connection, _: server.trickle_forever(connection, b"H", 0.1))
    with server:
        authenticator = build_authenticator(jwks_settings(server, jwks_timeout=0.5))
        started = time.monotonic()
        reason = refusal(authenticator, f"Bearer {keys['a'].sign(xdr_claims(server.host))}")
        elapsed = time.monotonic() - started
    assert reason == "key server unreachable (timed out)"
    assert elapsed < 2 * 0.5 + SLACK


def test_a_trickling_key_server_does_not_hold_up_tokens_with_known_keys(keys):
    server = HostileServer()
    server.answer_with(
        serving_keys_then([keys["a"]], lambda connection, _: server.trickle_forever(connection, b"H", 0.1))
    )
    with server:
        authenticator = build_authenticator(
            jwks_settings(server, jwks_timeout=2.0, jwks_refetch_interval=0.0)
        )
        real = f"Bearer {keys['a'].sign(xdr_claims(server.host))}"
        authenticator.authenticate(real, REQUEST_URL)
        assert server.connected.acquire(timeout=5)

        # Anyone's token with a made-up kid starts a download, which the key server trickles.
        unknown_kid = keys["attacker"].sign(xdr_claims(server.host), kid="kid-nobody-knows")
        outcome: list[str] = []
        attacker = threading.Thread(
            target=lambda: outcome.append(refusal(authenticator, f"Bearer {unknown_kid}"))
        )
        attacker.start()
        assert server.connected.acquire(timeout=5)  # the download is under way

        started = time.monotonic()
        for _ in range(20):
            assert authenticator.authenticate(real, REQUEST_URL).claims["jwks_host"] == server.host
        assert time.monotonic() - started < 1.0  # none of them waited for the download
        assert attacker.is_alive()  # still trickling
        attacker.join(timeout=2 * 2.0 + SLACK)
        assert outcome == ["key server unreachable (timed out)"]


# --- TLS: a certificate that does not verify is not a server without TLS ----------


@pytest.fixture(scope="module")
def untrusted_https_key_server():
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    yield server
    server.stop()


def test_a_key_server_whose_certificate_does_not_verify(keys, untrusted_https_key_server):
    untrusted_https_key_server.expect_request(JWKS_PATH).respond_with_json({"keys": [keys["a"].jwk()]})
    host = f"127.0.0.1:{untrusted_https_key_server.port}"
    settings = Settings(
        jwks_hosts=(host,),
        jwks_url_template="https://{host}" + JWKS_PATH,
        jwks_timeout=2.0,
        audience=("x",),
        access_keys=(("soc", ACCESS_KEY),),
    )
    reason = refusal(build_authenticator(settings), f"Bearer {keys['a'].sign(xdr_claims(host))}")
    assert reason == "key server unreachable (its TLS certificate could not be verified)"
    assert untrusted_https_key_server.log == []


def test_a_key_server_that_does_not_speak_tls(keys, key_server):
    key_server.publish(keys["a"])  # plain http, asked for https
    settings = Settings(
        jwks_hosts=(key_server.host,),
        jwks_url_template="https://{host}" + JWKS_PATH,
        jwks_timeout=2.0,
        audience=("x",),
        access_keys=(("soc", ACCESS_KEY),),
    )
    reason = refusal(build_authenticator(settings), f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}")
    assert reason == "key server unreachable (no TLS handshake: does it speak https?)"


def test_a_threatscore_that_does_not_speak_tls(threatscore, make_client):
    threatscore.answer(GOOD, answers.FOUR_ENGINES)
    client = make_client(
        THREATSCORE_API_URL=threatscore.url.replace("http://", "https://"),
        RELAY_DEADLINE="2",
        THREATSCORE_TIMEOUT=str(TIMEOUT),
    )
    answer, elapsed = observe(client, [ATTACKED, GOOD])
    for error, value in zip(answer["errors"], [ATTACKED, GOOD], strict=True):
        check_error_entry(error, value, "tls error", r"did not complete a TLS handshake")
    assert elapsed < 2 + SLACK
