"""Tests for relay.auth and relay.token (`python -m relay token`): XDR's RS256 tokens checked against real
key servers on 127.0.0.1, shared-secret tokens, and the token minting CLI."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from werkzeug import Request, Response

from relay.auth import Caller, JwksAuthenticator, build_authenticator
from relay.cli import main as cli_main
from relay.config import ConfigError, Settings
from relay.errors import AuthorizationError
from tests.conftest import (
    ACCESS_KEY,
    JWKS_PATH,
    OTHER_ACCESS_KEY,
    FakeClock,
    KeyServer,
    free_port,
    hs256_token,
    start_key_server,
    token_segment,
    unsigned_token,
)

ROOT = Path(__file__).resolve().parent.parent
AUDIENCE = "https://relay.example/relay"
REQUEST_URL = "https://relay.example/relay/observe/observables"
SECRET = "correct-horse-battery-staple-0123456789"
OTHER_SECRET = "another-secret-that-is-long-enough-0123"
TEST_ACCESS_KEYS = (("soc", ACCESS_KEY), ("mssp-client-2", OTHER_ACCESS_KEY))


# --- settings and tokens --------------------------------------------------


def jwks_settings(key_server: KeyServer, **changes: Any) -> Settings:
    settings = Settings(
        relay_auth="jwks",
        access_keys=TEST_ACCESS_KEYS,
        jwks_hosts=(key_server.host,),
        jwks_url_template="http://{host}" + JWKS_PATH,
        jwks_timeout=2.0,
        audience=(AUDIENCE,),
    )
    return replace(settings, **changes)


def secret_settings(**changes: Any) -> Settings:
    return replace(Settings(relay_auth="secret", secret=SECRET), **changes)


def xdr_claims(jwks_host: str, **changes: Any) -> dict[str, Any]:
    """The payload of an XDR configuration token; a change to None drops the claim."""
    now = int(time.time())
    claims = {
        "aud": AUDIENCE,
        "jwks_host": jwks_host,
        "iat": now,
        "exp": now + 600,
        "ACCESS_KEY": ACCESS_KEY,
        **changes,
    }
    return {name: value for name, value in claims.items() if value is not None}


def refusal(authenticator, authorization: str | None, request_url: str = REQUEST_URL) -> str:
    """The reason an authorization is refused."""
    with pytest.raises(AuthorizationError) as caught:
        authenticator.authenticate(authorization, request_url)
    assert caught.value.message == f"Authorization failed: {caught.value.reason}"
    return caught.value.reason


# --- jwks mode: the happy paths --------------------------------------------


def test_valid_xdr_token_passes(key_server, keys):
    key_server.publish(keys["a"], keys["b"])
    authenticator = build_authenticator(jwks_settings(key_server))
    claims = xdr_claims(key_server.host, CTR_ENTITIES_LIMIT=50)

    caller = authenticator.authenticate(f"Bearer {keys['a'].sign(claims)}", REQUEST_URL)

    assert caller == Caller(entities_limit=50, claims=claims, tenant="soc")
    assert key_server.fetches() == 1


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_bearer_scheme_is_case_insensitive(key_server, keys, scheme):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    token = keys["a"].sign(xdr_claims(key_server.host))

    assert authenticator.authenticate(f"{scheme} {token}", REQUEST_URL).claims["jwks_host"] == key_server.host


def test_keys_are_cached_between_calls(key_server, keys):
    key_server.publish(keys["a"], keys["b"])
    authenticator = build_authenticator(jwks_settings(key_server))

    for key in (keys["a"], keys["b"], keys["a"]):
        authenticator.authenticate(f"Bearer {key.sign(xdr_claims(key_server.host))}", REQUEST_URL)

    assert key_server.fetches() == 1


def test_key_set_is_fetched_again_after_its_ttl(key_server, keys):
    key_server.publish(keys["a"])
    clock = FakeClock()
    authenticator = JwksAuthenticator(jwks_settings(key_server, jwks_cache_ttl=600), clock=clock)
    authorization = f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}"

    authenticator.authenticate(authorization, REQUEST_URL)
    clock.advance(599)
    authenticator.authenticate(authorization, REQUEST_URL)
    assert key_server.fetches() == 1

    clock.advance(2)
    authenticator.authenticate(authorization, REQUEST_URL)
    assert key_server.fetches() == 2


def test_rotated_key_passes_after_exactly_one_refetch(key_server, keys):
    key_server.publish(keys["a"])
    clock = FakeClock()
    authenticator = JwksAuthenticator(jwks_settings(key_server, jwks_refetch_interval=30), clock=clock)
    authenticator.authenticate(f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}", REQUEST_URL)

    key_server.reset()
    key_server.publish(keys["b"])  # XDR rotated its key
    clock.advance(31)
    new_token = f"Bearer {keys['b'].sign(xdr_claims(key_server.host))}"
    authenticator.authenticate(new_token, REQUEST_URL)
    authenticator.authenticate(new_token, REQUEST_URL)

    assert key_server.fetches() == 1


def test_unknown_kid_within_refetch_interval_does_not_refetch(key_server, keys):
    key_server.publish(keys["a"])
    clock = FakeClock()
    authenticator = JwksAuthenticator(jwks_settings(key_server, jwks_refetch_interval=30), clock=clock)
    authenticator.authenticate(f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}", REQUEST_URL)
    key_server.reset()
    key_server.publish(keys["b"])

    clock.advance(10)
    new_token = f"Bearer {keys['b'].sign(xdr_claims(key_server.host))}"
    assert refusal(authenticator, new_token) == "unknown key id"
    assert key_server.fetches() == 0

    clock.advance(21)
    authenticator.authenticate(new_token, REQUEST_URL)
    assert key_server.fetches() == 1


def test_flood_of_unknown_kids_is_not_a_flood_of_fetches(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))

    for _ in range(50):
        token = keys["attacker"].sign(xdr_claims(key_server.host), kid=uuid.uuid4().hex)
        assert refusal(authenticator, f"Bearer {token}") == "unknown key id"

    assert key_server.fetches() <= 2


def test_concurrent_calls_with_a_cold_cache_fetch_once(key_server, keys):
    def slow_key_set(request: Request) -> Response:
        time.sleep(0.3)  # long enough for every thread to queue behind the fetch
        return Response(json.dumps({"keys": [keys["a"].jwk()]}), content_type="application/json")

    key_server.server.expect_request(JWKS_PATH).respond_with_handler(slow_key_set)
    authenticator = build_authenticator(jwks_settings(key_server))
    authorization = f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}"
    start = threading.Barrier(20)
    outcomes: list[object] = []

    def call() -> None:
        start.wait()
        try:
            outcomes.append(authenticator.authenticate(authorization, REQUEST_URL))
        except Exception as error:  # collected, asserted below
            outcomes.append(error)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(outcomes) == 20
    assert all(isinstance(outcome, Caller) for outcome in outcomes), outcomes
    assert key_server.fetches() == 1


def test_concurrent_calls_share_one_failed_fetch(key_server, keys):
    def slow_failure(request: Request) -> Response:
        time.sleep(0.3)
        return Response("unavailable", status=503)

    key_server.server.expect_request(JWKS_PATH).respond_with_handler(slow_failure)
    authenticator = build_authenticator(jwks_settings(key_server))
    authorization = f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}"
    start = threading.Barrier(10)
    reasons: list[str] = []

    def call() -> None:
        start.wait()
        try:
            authenticator.authenticate(authorization, REQUEST_URL)
        except AuthorizationError as error:
            reasons.append(error.reason)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert reasons == ["key server answered HTTP 503"] * 10
    assert key_server.fetches() == 1


def test_key_hosts_compare_case_insensitively_and_keep_their_own_keys(key_server, keys):
    # One server plays two key hosts: the host is part of the path.
    template = f"http://{key_server.host}/{{host}}/jwks"
    key_server.publish(keys["a"], path="/visibility.amp.cisco.com/jwks")
    key_server.publish(keys["b"], path="/visibility.eu.amp.cisco.com/jwks")
    settings = jwks_settings(
        key_server,
        jwks_hosts=("Visibility.AMP.cisco.com", "visibility.eu.amp.cisco.com"),
        jwks_url_template=template,
    )
    authenticator = build_authenticator(settings)

    us_token = keys["a"].sign(xdr_claims("VISIBILITY.amp.Cisco.com"))
    assert authenticator.authenticate(f"Bearer {us_token}", REQUEST_URL).claims["jwks_host"]
    assert key_server.fetches("/visibility.amp.cisco.com/jwks") == 1

    # A key published by one host does not verify tokens naming another.
    eu_token_signed_with_us_key = keys["a"].sign(xdr_claims("visibility.eu.amp.cisco.com"))
    assert refusal(authenticator, f"Bearer {eu_token_signed_with_us_key}") == "unknown key id"


# --- jwks mode: refusals ----------------------------------------------------


def test_key_host_outside_the_allow_list_is_never_contacted(key_server, other_key_server, keys):
    key_server.publish(keys["a"])
    other_key_server.publish(keys["attacker"])
    authenticator = build_authenticator(jwks_settings(key_server))
    # A perfectly valid token, but signed by a key the attacker's own server publishes.
    token = keys["attacker"].sign(xdr_claims(other_key_server.host))

    reason = refusal(authenticator, f"Bearer {token}")

    assert reason.startswith("key host not allowed")
    assert other_key_server.server.log == []
    assert key_server.fetches() == 0


@pytest.mark.parametrize("jwks_host", [None, "", 42])
def test_missing_jwks_host_claim_is_refused(key_server, keys, jwks_host):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    claims = xdr_claims(key_server.host)
    claims.pop("jwks_host")
    if jwks_host is not None:
        claims["jwks_host"] = jwks_host

    assert refusal(authenticator, f"Bearer {keys['a'].sign(claims)}") == "jwks_host claim missing"
    assert key_server.fetches() == 0


def test_expired_token_is_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server, jwt_leeway=60))
    now = int(time.time())

    late = keys["a"].sign(xdr_claims(key_server.host, iat=now - 600, exp=now - 120))
    assert refusal(authenticator, f"Bearer {late}") == "token expired"

    within_leeway = keys["a"].sign(xdr_claims(key_server.host, iat=now - 600, exp=now - 30))
    assert authenticator.authenticate(f"Bearer {within_leeway}", REQUEST_URL)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_from_the_future_is_refused(key_server, keys, claim):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server, jwt_leeway=60))
    now = int(time.time())

    early = keys["a"].sign(xdr_claims(key_server.host, **{claim: now + 600}))
    assert refusal(authenticator, f"Bearer {early}") == "token not yet valid"

    within_leeway = keys["a"].sign(xdr_claims(key_server.host, **{claim: now + 30}))
    assert authenticator.authenticate(f"Bearer {within_leeway}", REQUEST_URL)


def test_wrong_audience_is_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))

    other_module = keys["a"].sign(xdr_claims(key_server.host, aud="https://other.example/relay"))
    assert refusal(authenticator, f"Bearer {other_module}") == "wrong audience"

    no_audience = keys["a"].sign(xdr_claims(key_server.host, aud=None))
    assert refusal(authenticator, f"Bearer {no_audience}") == "wrong audience (token has no aud)"


def test_configured_audience_is_used_whatever_url_the_request_arrived_at(key_server, keys):
    # Behind Google's front end the request URL is not the registered one.
    key_server.publish(keys["a"])
    settings = jwks_settings(key_server, audience=("https://europe-west1-acme.cloudfunctions.net/relay/",))
    authenticator = build_authenticator(settings)
    claims = xdr_claims(
        key_server.host, aud=["https://xdr.example", "https://europe-west1-acme.cloudfunctions.net/relay"]
    )

    caller = authenticator.authenticate(
        f"Bearer {keys['a'].sign(claims)}", "http://europe-west1-acme.cloudfunctions.net/health"
    )

    assert caller.claims["aud"][1].endswith("/relay")


def test_without_configured_audience_the_request_url_is_expected(key_server, keys, caplog):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server, audience=()))
    caplog.set_level(logging.WARNING, logger="relay.auth")

    def authorization(aud: str) -> str:
        return f"Bearer {keys['a'].sign(xdr_claims(key_server.host, aud=aud))}"

    accepted = [  # (token aud, request URL): trailing slashes do not matter, endpoints lie below
        ("https://relay.example/relay/", "https://relay.example/relay"),
        ("https://relay.example/relay", "https://relay.example/relay/"),
        ("https://relay.example/relay", "https://relay.example/relay/health"),
        ("https://relay.example", "https://relay.example/observe/observables"),
    ]
    refused = [
        ("https://relay.example/relay", "https://relay.example/relay2/health"),
        ("https://relay.example/relay", "http://relay.example/relay"),
        ("https://other.example", "https://relay.example/health"),
    ]
    for aud, request_url in accepted:
        assert authenticator.authenticate(authorization(aud), request_url).claims["aud"] == aud
    for aud, request_url in refused:
        assert refusal(authenticator, authorization(aud), request_url) == "wrong audience"

    warnings = [record for record in caplog.records if "RELAY_AUDIENCE" in record.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


def test_alg_none_is_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    token = unsigned_token(xdr_claims(key_server.host), kid=keys["a"].kid)

    assert refusal(authenticator, f"Bearer {token}") == "token algorithm not allowed (expected RS256)"
    assert key_server.fetches() == 0  # refused before any key is looked up


def test_hs256_signed_with_the_public_key_is_refused(key_server, keys):
    # The classic algorithm confusion: the public key, which anyone can fetch, used as an HMAC secret.
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    token = hs256_token(xdr_claims(key_server.host), keys["a"].public_pem(), kid=keys["a"].kid)

    assert refusal(authenticator, f"Bearer {token}") == "token algorithm not allowed (expected RS256)"
    assert key_server.fetches() == 0  # refused before any key is looked up


def test_other_rsa_algorithms_are_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    token = jwt.encode(
        xdr_claims(key_server.host), keys["a"].private_key, algorithm="RS512", headers={"kid": keys["a"].kid}
    )

    assert refusal(authenticator, f"Bearer {token}") == "token algorithm not allowed (expected RS256)"
    assert key_server.fetches() == 0  # refused before any key is looked up


def test_token_without_kid_is_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    token = keys["a"].sign(xdr_claims(key_server.host), kid=None)

    assert refusal(authenticator, f"Bearer {token}") == "token has no kid"
    assert key_server.fetches() == 0  # refused before any key is looked up


def test_token_signed_by_another_key_is_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    forged = keys["attacker"].sign(xdr_claims(key_server.host), kid=keys["a"].kid)

    assert refusal(authenticator, f"Bearer {forged}") == "bad signature"


def test_tampered_claims_are_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    header, _, signature = keys["a"].sign(xdr_claims(key_server.host, CTR_ENTITIES_LIMIT=10)).split(".")
    tampered = f"{header}.{token_segment(xdr_claims(key_server.host, CTR_ENTITIES_LIMIT=100000))}.{signature}"

    assert refusal(authenticator, f"Bearer {tampered}") == "bad signature"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        ("   ", "missing Authorization header"),
        ("Basic dXNlcjpwYXNzd29yZA==", "wrong scheme (expected Bearer)"),
        ("Token abc.def.ghi", "wrong scheme (expected Bearer)"),
        ("Bearer", "malformed token"),
        ("Bearer a b", "malformed token"),
        ("Bearer not-a-jwt", "malformed token"),
        ("Bearer abc.def.ghi", "malformed token"),
        ("Bearer ....", "malformed token"),
        (f"Bearer {token_segment({'alg': 'RS256', 'kid': 'x'})}.bm90IGpzb24.c2ln", "malformed token"),
        (f"Bearer {base64.urlsafe_b64encode(b'[1, 2]').decode().rstrip('=')}.e30.c2ln", "malformed token"),
        (f"Bearer {token_segment({'alg': 'RS256', 'kid': 7})}.e30.c2ln", "malformed token"),
    ],
)
def test_unusable_authorization_headers_are_refused(key_server, authorization, reason):
    authenticator = build_authenticator(jwks_settings(key_server))

    assert refusal(authenticator, authorization) == reason
    assert key_server.fetches() == 0


# --- jwks mode: key server trouble ----------------------------------------


def test_key_server_down_is_reported(keys):
    port = free_port()  # nothing listens there any more
    settings = Settings(
        access_keys=TEST_ACCESS_KEYS,
        jwks_hosts=(f"127.0.0.1:{port}",),
        jwks_url_template="http://{host}" + JWKS_PATH,
        jwks_timeout=2.0,
        audience=(AUDIENCE,),
    )
    authenticator = build_authenticator(settings)
    token = keys["a"].sign(xdr_claims(f"127.0.0.1:{port}"))

    assert refusal(authenticator, f"Bearer {token}") == "key server unreachable (connection refused)"


@pytest.mark.parametrize(
    "body",
    [
        "<html>maintenance</html>",
        "{}",
        '{"keys": []}',
        '{"keys": "none"}',
        '[{"kty": "RSA"}]',
        '{"keys": [{"kty": "RSA", "kid": "x"}]}',
        '{"keys": [{"kty": "oct", "kid": "x", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}',
    ],
)
def test_key_server_answering_garbage_is_reported(key_server, keys, body):
    key_server.answer(body)
    authenticator = build_authenticator(jwks_settings(key_server))
    token = keys["a"].sign(xdr_claims(key_server.host))

    assert refusal(authenticator, f"Bearer {token}") == "key server answered an invalid key set"


def test_keys_published_for_another_algorithm_are_not_used(key_server, keys):
    key_server.server.expect_request(JWKS_PATH).respond_with_json(
        {"keys": [{**keys["a"].jwk(), "alg": "RS512"}]}
    )
    authenticator = build_authenticator(jwks_settings(key_server))
    token = keys["a"].sign(xdr_claims(key_server.host))

    assert refusal(authenticator, f"Bearer {token}") == "key server answered an invalid key set"


def test_key_server_error_status_is_reported_and_recovered_from(key_server, keys):
    key_server.answer('{"error": "down"}', status=503)
    clock = FakeClock()
    authenticator = JwksAuthenticator(jwks_settings(key_server, jwks_refetch_interval=30), clock=clock)
    authorization = f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}"

    assert refusal(authenticator, authorization) == "key server answered HTTP 503"
    key_server.reset()
    key_server.publish(keys["a"])
    # Within the refetch interval the failed server is not asked again, by any token.
    for kid in ("kid-a", "made-up-1", "made-up-2"):
        token = keys["a"].sign(xdr_claims(key_server.host), kid=kid)
        assert refusal(authenticator, f"Bearer {token}") == "key server answered HTTP 503"
    assert key_server.fetches() == 0

    clock.advance(30)
    assert authenticator.authenticate(authorization, REQUEST_URL)
    assert key_server.fetches() == 1


def test_a_failing_key_server_is_not_flooded_and_expired_keys_keep_serving(key_server, keys):
    key_server.publish(keys["a"])
    clock = FakeClock()
    settings = jwks_settings(key_server, jwks_cache_ttl=60, jwks_refetch_interval=30)
    authenticator = JwksAuthenticator(settings, clock=clock)
    authorization = f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}"
    assert authenticator.authenticate(authorization, REQUEST_URL)

    key_server.reset()
    key_server.answer("<html>down</html>", status=500)
    clock.advance(61)  # the key set expired, and its server now fails
    for index in range(20):  # the real token and a flood of made-up kids
        assert authenticator.authenticate(authorization, REQUEST_URL)
        token = keys["a"].sign(xdr_claims(key_server.host), kid=f"bogus-{index}")
        assert refusal(authenticator, f"Bearer {token}") == "unknown key id"
    assert key_server.fetches() == 1  # one refresh attempt within the interval

    clock.advance(30)
    authenticator.authenticate(authorization, REQUEST_URL)
    assert key_server.fetches() == 2


def test_slow_key_server_times_out(keys):
    def stalled(request: Request) -> Response:
        time.sleep(2)
        return Response(json.dumps({"keys": [keys["a"].jwk()]}), content_type="application/json")

    # A server of its own: the stalled answer must not land in another test's log.
    server = start_key_server()
    try:
        server.expect_request(JWKS_PATH).respond_with_handler(stalled)
        host = f"127.0.0.1:{server.port}"
        settings = Settings(
            access_keys=TEST_ACCESS_KEYS,
            jwks_hosts=(host,),
            jwks_url_template="http://{host}" + JWKS_PATH,
            jwks_timeout=0.3,
            audience=(AUDIENCE,),
        )
        authenticator = build_authenticator(settings)
        started = time.monotonic()

        reason = refusal(authenticator, f"Bearer {keys['a'].sign(xdr_claims(host))}")

        assert reason.startswith("key server unreachable")
        assert time.monotonic() - started < 1.5
    finally:
        server.stop()


def test_a_broken_session_still_answers_authorization_error(key_server, keys, caplog):
    class BrokenSession(requests.Session):
        def get_adapter(self, *args: Any, **kwargs: Any):  # type: ignore[override]
            raise RuntimeError("boom with details")

    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server), session=BrokenSession())

    reason = refusal(authenticator, f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}")

    assert reason == "internal error while checking the token"
    assert "RuntimeError" in caplog.text
    assert "boom with details" not in caplog.text


# --- the entities limit -------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (25, 25),
        ("40", 40),
        (" 40 ", 40),
        (1000, 1000),
        (1001, 1000),  # capped, as Cisco's relays do
        (10**12, 1000),
        ("999999999", 1000),
        (0, None),
        (-5, None),
        ("0", None),
        ("-3", None),
        ("abc", None),
        ("1e3", None),
        ("9" * 5000, None),
        (2.5, None),
        (True, None),
        ([10], None),
        (None, None),  # absent
    ],
)
def test_entities_limit_claim(key_server, keys, limit, expected):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    token = keys["a"].sign(xdr_claims(key_server.host, CTR_ENTITIES_LIMIT=limit))

    assert authenticator.authenticate(f"Bearer {token}", REQUEST_URL).entities_limit == expected


# --- secret mode -------------------------------------------------------------


def test_secret_token_passes():
    authenticator = build_authenticator(secret_settings())
    now = int(time.time())
    token = jwt.encode({"iat": now, "exp": now + 60, "CTR_ENTITIES_LIMIT": 20}, SECRET, algorithm="HS256")

    caller = authenticator.authenticate(f"Bearer {token}", REQUEST_URL)

    assert caller.entities_limit == 20


def test_a_token_without_exp_is_refused_in_both_modes(key_server, keys):
    """Without `exp` a token, once leaked, would be good forever."""
    key_server.publish(keys["a"])
    now = int(time.time())
    jwks = build_authenticator(jwks_settings(key_server))
    secret = build_authenticator(secret_settings())
    forever = [
        (jwks, keys["a"].sign(xdr_claims(key_server.host, exp=None))),
        (secret, jwt.encode({"iat": now}, SECRET, algorithm="HS256")),
        (secret, jwt.encode({"iat": now, "exp": None}, SECRET, algorithm="HS256")),
    ]
    for authenticator, token in forever:
        assert refusal(authenticator, f"Bearer {token}").startswith("token has no exp")
    assert jwks.authenticate(f"Bearer {keys['a'].sign(xdr_claims(key_server.host))}", REQUEST_URL)


def test_secret_token_signed_with_another_secret_is_refused():
    authenticator = build_authenticator(secret_settings())
    token = jwt.encode({"iat": int(time.time())}, OTHER_SECRET, algorithm="HS256")

    assert refusal(authenticator, f"Bearer {token}") == "bad signature"


def test_secret_mode_refuses_other_algorithms(keys):
    authenticator = build_authenticator(secret_settings())
    rs256 = keys["a"].sign({"iat": int(time.time())})
    hs512 = jwt.encode({"iat": int(time.time())}, SECRET * 2, algorithm="HS512")

    assert refusal(authenticator, f"Bearer {rs256}") == "token algorithm not allowed (expected HS256)"
    assert refusal(authenticator, f"Bearer {hs512}") == "token algorithm not allowed (expected HS256)"
    assert refusal(authenticator, f"Bearer {unsigned_token({}, kid='x')}") == (
        "token algorithm not allowed (expected HS256)"
    )


@pytest.mark.parametrize("authorization", ["Bearer garbage", "Bearer a.b.c", "Basic abc", None])
def test_secret_mode_refuses_unusable_headers(authorization):
    authenticator = build_authenticator(secret_settings())

    assert refusal(authenticator, authorization)


def test_secret_mode_checks_expiry():
    authenticator = build_authenticator(secret_settings(jwt_leeway=0))
    token = jwt.encode({"exp": int(time.time()) - 5}, SECRET, algorithm="HS256")

    assert refusal(authenticator, f"Bearer {token}") == "token expired"


def test_secret_mode_checks_audience_only_when_configured():
    exp = int(time.time()) + 60
    token_for_a = jwt.encode({"aud": "https://a.example/relay", "exp": exp}, SECRET, algorithm="HS256")
    token_without_aud = jwt.encode({"iat": int(time.time()), "exp": exp}, SECRET, algorithm="HS256")

    unchecked = build_authenticator(secret_settings())
    assert unchecked.authenticate(f"Bearer {token_for_a}", REQUEST_URL)
    assert unchecked.authenticate(f"Bearer {token_without_aud}", REQUEST_URL)

    checked = build_authenticator(secret_settings(audience=("https://a.example/relay/",)))
    assert checked.authenticate(f"Bearer {token_for_a}", REQUEST_URL)
    assert refusal(checked, f"Bearer {token_without_aud}") == "wrong audience (token has no aud)"
    token_for_b = jwt.encode({"aud": "https://b.example/relay", "exp": exp}, SECRET, algorithm="HS256")
    assert refusal(checked, f"Bearer {token_for_b}") == "wrong audience"


@pytest.mark.parametrize("secret", [None, "", "too-short"])
def test_secret_mode_needs_a_long_secret(secret):
    with pytest.raises(ConfigError):
        build_authenticator(secret_settings(secret=secret))


# --- none mode and mode selection ----------------------------------------------


def test_none_mode_accepts_anything_and_warns(caplog):
    caplog.set_level(logging.WARNING, logger="relay.auth")

    authenticator = build_authenticator(Settings(relay_auth="none"))

    assert authenticator.authenticate(None, REQUEST_URL) == Caller(entities_limit=None, claims={})
    assert authenticator.authenticate("Basic whatever", REQUEST_URL) == Caller(entities_limit=None, claims={})
    assert any("not authenticated" in record.getMessage() for record in caplog.records)


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError):
        build_authenticator(Settings(relay_auth="ldap"))


# --- nothing secret in messages or logs ------------------------------------------


def test_failures_never_reveal_the_token_or_the_secret(key_server, other_key_server, keys, caplog):
    caplog.set_level(logging.DEBUG)
    key_server.publish(keys["a"])
    jwks = build_authenticator(jwks_settings(key_server))
    secret = build_authenticator(secret_settings())
    now = int(time.time())
    host = key_server.host
    failing = [
        (jwks, keys["a"].sign(xdr_claims(host, exp=now - 3600))),
        (jwks, keys["a"].sign(xdr_claims(host, aud="https://other.example"))),
        (jwks, keys["attacker"].sign(xdr_claims(host), kid=keys["a"].kid)),
        (jwks, keys["attacker"].sign(xdr_claims(host), kid="made-up")),
        (jwks, keys["attacker"].sign(xdr_claims(other_key_server.host))),
        (jwks, unsigned_token(xdr_claims(host), kid=keys["a"].kid)),
        (jwks, hs256_token(xdr_claims(host), keys["a"].public_pem(), kid=keys["a"].kid)),
        (secret, jwt.encode({"iat": now}, OTHER_SECRET, algorithm="HS256")),
        (secret, jwt.encode({"exp": now - 3600}, SECRET, algorithm="HS256")),
        (secret, SECRET),  # the secret pasted in place of a token
    ]

    messages = []
    for authenticator, token in failing:
        with pytest.raises(AuthorizationError) as caught:
            authenticator.authenticate(f"Bearer {token}", REQUEST_URL)
        messages.append(caught.value.message)

    assert caplog.records, "failures should be logged"
    for _, token in failing:
        signature = token.rsplit(".", 1)[-1]
        for text in [caplog.text, *messages]:
            assert token not in text
            assert not signature or signature not in text
    for text in [caplog.text, *messages]:
        assert SECRET not in text
        assert OTHER_SECRET not in text
        assert keys["a"].jwk()["n"] not in text


# --- python -m relay token --------------------------------------------------------


def token_main(argv: list[str]) -> int:
    return cli_main(["token", *argv])


@pytest.fixture
def token_env() -> None:
    """An environment with nothing but what each test sets (conftest clears the shell's settings)."""


def test_token_cli_mints_a_token_the_relay_accepts(token_env, monkeypatch, capsys):
    monkeypatch.setenv("RELAY_SECRET", SECRET)

    exit_code = token_main(["--aud", "https://a.example/relay/", "--limit", "7", "--days", "2"])

    out, err = capsys.readouterr()
    assert exit_code == 0
    assert SECRET not in out + err
    token = out.strip()
    relay = build_authenticator(secret_settings(audience=("https://a.example/relay",)))
    caller = relay.authenticate(f"Bearer {token}", REQUEST_URL)
    assert caller.entities_limit == 7
    assert caller.claims["exp"] - caller.claims["iat"] == 2 * 24 * 3600


def test_token_cli_defaults_to_the_configured_audience(token_env, monkeypatch, capsys):
    monkeypatch.setenv("RELAY_SECRET", SECRET)
    monkeypatch.setenv("RELAY_AUDIENCE", "https://a.example/relay/,https://b.example/relay")

    assert token_main([]) == 0

    token = capsys.readouterr().out.strip()
    caller = build_authenticator(secret_settings(audience=("https://a.example/relay",))).authenticate(
        f"Bearer {token}", REQUEST_URL
    )
    assert caller.claims["aud"] == "https://a.example/relay"
    assert caller.entities_limit is None


@pytest.mark.parametrize("secret", [None, "too-short"])
def test_token_cli_refuses_a_missing_or_short_secret(token_env, monkeypatch, capsys, secret):
    if secret is not None:
        monkeypatch.setenv("RELAY_SECRET", secret)

    assert token_main([]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert "RELAY_SECRET" in err
    assert secret is None or secret not in err


@pytest.mark.parametrize("argv", [["--days", "0"], ["--limit", "-1"], ["--aud", "relay.example"]])
def test_token_cli_refuses_bad_arguments(token_env, monkeypatch, argv):
    monkeypatch.setenv("RELAY_SECRET", SECRET)

    with pytest.raises(SystemExit) as exited:
        token_main(argv)
    assert exited.value.code == 2


def test_token_cli_runs_as_a_module(token_env):
    env = {**os.environ, "RELAY_SECRET": SECRET}

    result = subprocess.run(
        [sys.executable, "-m", "relay", "token", "--limit", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    caller = build_authenticator(secret_settings()).authenticate(
        f"Bearer {result.stdout.strip()}", REQUEST_URL
    )
    assert caller.entities_limit == 3


# --- access keys: only the organisations the operator let in ------------------------------------


def test_jwks_mode_without_access_keys_is_a_configuration_error(key_server):
    with pytest.raises(ConfigError, match="RELAY_AUTH=jwks needs RELAY_ACCESS_KEYS"):
        build_authenticator(jwks_settings(key_server, access_keys=()))


def test_each_access_key_names_its_tenant_and_the_rest_are_refused(key_server, keys):
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))

    def tenant(**claims) -> str:
        token = keys["a"].sign(xdr_claims(key_server.host, **claims))
        return authenticator.authenticate(f"Bearer {token}", REQUEST_URL).tenant

    assert tenant() == "soc"
    assert tenant(ACCESS_KEY=OTHER_ACCESS_KEY) == "mssp-client-2"
    for missing in (None, ""):
        token = keys["a"].sign(xdr_claims(key_server.host, ACCESS_KEY=missing))
        assert refusal(authenticator, f"Bearer {token}").startswith("access key missing")
    for wrong in (ACCESS_KEY[:-1], ACCESS_KEY + "x", ACCESS_KEY.upper(), 42, [ACCESS_KEY], {"k": 1}):
        token = keys["a"].sign(xdr_claims(key_server.host, ACCESS_KEY=wrong))
        reason = refusal(authenticator, f"Bearer {token}")
        assert reason.startswith("wrong access key")
        assert ACCESS_KEY not in reason and "soc" not in reason


def test_the_access_key_of_a_forged_token_is_never_looked_at(key_server, keys):
    # The signature comes first: a token of nobody's cannot probe the keys.
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server))
    forged = keys["attacker"].sign(xdr_claims(key_server.host), kid=keys["a"].kid)
    assert refusal(authenticator, f"Bearer {forged}") == "bad signature"


def test_any_organisation_is_one_tenant_with_a_loud_warning(key_server, keys, caplog):
    caplog.set_level(logging.WARNING, logger="relay.auth")
    key_server.publish(keys["a"])
    authenticator = build_authenticator(jwks_settings(key_server, access_keys=(), any_organisation=True))
    token = keys["a"].sign(xdr_claims(key_server.host, ACCESS_KEY=None))
    assert authenticator.authenticate(f"Bearer {token}", REQUEST_URL).tenant == "any-organisation"
    assert "RELAY_ANY_ORGANISATION=true: ANY XDR organisation" in caplog.text


def test_secret_and_none_modes_are_one_tenant():
    token = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert (
        build_authenticator(secret_settings()).authenticate(f"Bearer {token}", REQUEST_URL).tenant
        == "default"
    )
    assert (
        build_authenticator(Settings(relay_auth="none")).authenticate(None, REQUEST_URL).tenant == "default"
    )
