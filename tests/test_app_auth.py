"""Authentication end to end through functions-framework: no request without a valid token
reaches Threatscore, and each request gets its own entities limit."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from werkzeug import Response

from tests import answers
from tests.conftest import ACCESS_KEY, ACCESS_KEYS, JWKS_PATH, hs256_token, unsigned_token
from tests.ctim import check_answer

AUDIENCE = "https://europe-west1-project.cloudfunctions.net/relay"
SECRET = "an-operator-secret-of-at-least-32-characters"
OBSERVABLES = [{"type": "ip", "value": "198.51.100.7"}]


def claims(key_server, **changes):
    now = int(time.time())
    payload = {
        "aud": AUDIENCE,
        "jwks_host": key_server.host,
        "iat": now,
        "exp": now + 600,
        "ACCESS_KEY": ACCESS_KEY,
        **changes,
    }
    return {name: value for name, value in payload.items() if value is not None}


@pytest.fixture
def jwks_env(key_server, keys):
    key_server.publish(keys["a"])
    return {
        "RELAY_AUTH": "jwks",
        "RELAY_JWKS_HOSTS": key_server.host,
        "RELAY_JWKS_URL_TEMPLATE": "http://{host}" + JWKS_PATH,
        "RELAY_AUDIENCE": AUDIENCE + "/",
        "RELAY_ACCESS_KEYS": ACCESS_KEYS,
    }


@pytest.fixture
def jwks_client(make_client, jwks_env, threatscore):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    return make_client(**jwks_env)


def observe(client, authorization=None, payload=OBSERVABLES, path="/observe/observables"):
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.post(path, json=payload, headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    check_answer(body)
    return body


def test_a_valid_xdr_token_gets_the_answer(jwks_client, key_server, keys, threatscore):
    body = observe(jwks_client, f"Bearer {keys['a'].sign(claims(key_server))}")
    assert body["data"]["verdicts"]["count"] == 1
    assert threatscore.calls_for("198.51.100.7") == 1
    assert key_server.fetches() == 1


def test_scheme_is_case_insensitive(jwks_client, key_server, keys):
    assert "data" in observe(jwks_client, f"bearer {keys['a'].sign(claims(key_server))}")


@pytest.mark.parametrize(
    ("make_authorization", "reason"),
    [
        (lambda ks, k: None, "missing Authorization header"),
        (lambda ks, k: "Basic dXNlcjpwYXNz", "wrong scheme"),
        (lambda ks, k: "Bearer not.a.token", "malformed token"),
        (lambda ks, k: "Bearer " + k["a"].sign(claims(ks, exp=int(time.time()) - 3600)), "token expired"),
        (lambda ks, k: "Bearer " + k["a"].sign(claims(ks, nbf=int(time.time()) + 3600)), "not yet valid"),
        (
            lambda ks, k: "Bearer " + k["a"].sign(claims(ks, aud="https://elsewhere.example")),
            "wrong audience",
        ),
        (lambda ks, k: "Bearer " + k["a"].sign(claims(ks, jwks_host="evil.example")), "key host not allowed"),
        (lambda ks, k: "Bearer " + k["attacker"].sign(claims(ks), kid="kid-a"), "bad signature"),
        (lambda ks, k: "Bearer " + unsigned_token(claims(ks), kid="kid-a"), "algorithm"),
        (lambda ks, k: "Bearer " + k["a"].sign(claims(ks), kid=None), "token has no kid"),
        (lambda ks, k: "Bearer " + hs256_token(claims(ks), k["a"].public_pem(), kid="kid-a"), "algorithm"),
        (
            lambda ks, k: (
                "Bearer " + jwt.encode(claims(ks), "x" * 32, algorithm="HS256", headers={"kid": "kid-a"})
            ),
            "algorithm",
        ),
    ],
)
def test_no_request_without_a_valid_token_reaches_threatscore(
    jwks_client, key_server, keys, threatscore, make_authorization, reason
):
    for path in ("/observe/observables", "/deliberate/observables", "/refer/observables", "/health"):
        body = observe(jwks_client, make_authorization(key_server, keys), path=path)
        assert set(body) == {"errors"}
        (error,) = body["errors"]
        assert error["code"] == "authorization error"
        assert error["message"].startswith("Authorization failed: ")
        assert reason in error["message"]
    assert threatscore.total_calls == 0


def test_authentication_comes_before_the_body_is_read(jwks_client, threatscore):
    response = jwks_client.post("/observe/observables", data=b"{not json")
    assert response.get_json()["errors"][0]["code"] == "authorization error"


def test_version_needs_no_token(jwks_client):
    response = jwks_client.post("/version")
    assert response.status_code == 200 and "version" in response.get_json()


def test_the_token_limit_claim_sets_the_requests_entities_limit(jwks_client, key_server, keys):
    limited = observe(jwks_client, f"Bearer {keys['a'].sign(claims(key_server, CTR_ENTITIES_LIMIT=2))}")
    assert limited["data"]["judgements"]["count"] == 2
    invalid = observe(jwks_client, f"Bearer {keys['a'].sign(claims(key_server, CTR_ENTITIES_LIMIT=-3))}")
    assert invalid["data"]["judgements"]["count"] == 5  # the configured default (100) applies


def test_limits_are_isolated_between_concurrent_requests(
    jwks_env, key_server, keys, threatscore, start_relay_process, http
):
    """Two callers with different limits, interleaved on a real multi-threaded server."""
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    base_url = start_relay_process(**jwks_env)
    tokens = {limit: keys["a"].sign(claims(key_server, CTR_ENTITIES_LIMIT=limit)) for limit in (1, 3)}

    def judgements_with(limit):
        response = http.post(
            f"{base_url}/observe/observables",
            json=OBSERVABLES,
            timeout=20,
            headers={"Authorization": f"Bearer {tokens[limit]}"},
        )
        return limit, response.json()["data"]["judgements"]["count"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(judgements_with, [1, 3] * 40))
    assert all(count == limit for limit, count in results), results


def test_without_relay_audience_the_request_url_is_the_audience(
    jwks_env, key_server, keys, threatscore, start_relay_process, http
):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    base_url = start_relay_process(**{**jwks_env, "RELAY_AUDIENCE": ""})
    good = keys["a"].sign(claims(key_server, aud=base_url))
    other = keys["a"].sign(claims(key_server, aud=AUDIENCE))
    ok = http.post(
        f"{base_url}/observe/observables",
        json=OBSERVABLES,
        timeout=20,
        headers={"Authorization": f"Bearer {good}"},
    ).json()
    assert ok["data"]["verdicts"]["count"] == 1
    refused = http.post(
        f"{base_url}/observe/observables",
        json=OBSERVABLES,
        timeout=20,
        headers={"Authorization": f"Bearer {other}"},
    ).json()
    assert "wrong audience" in refused["errors"][0]["message"]


def test_secret_mode(make_client, threatscore):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    client = make_client(RELAY_AUTH="secret", RELAY_SECRET=SECRET)
    good = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert observe(client, f"Bearer {good}")["data"]["verdicts"]["count"] == 1
    forged = jwt.encode(
        {"exp": int(time.time()) + 60}, "a-different-secret-of-32-characters!", algorithm="HS256"
    )
    body = observe(client, f"Bearer {forged}")
    assert body["errors"][0]["code"] == "authorization error"
    assert threatscore.calls_for("198.51.100.7") == 1


def test_nothing_secret_is_logged(jwks_client, key_server, keys, caplog):
    token = keys["a"].sign(claims(key_server, aud="https://elsewhere.example"))
    with caplog.at_level("DEBUG"):
        observe(jwks_client, f"Bearer {token}")
    assert "wrong audience" in caplog.text
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_a_rotated_key_passes_after_one_refetch_end_to_end(
    make_client, jwks_env, key_server, keys, threatscore
):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    client = make_client(**jwks_env, RELAY_JWKS_REFETCH_INTERVAL="0.2")
    assert "data" in observe(client, f"Bearer {keys['a'].sign(claims(key_server))}")
    key_server.reset()
    key_server.publish(keys["a"], keys["b"])  # XDR rotates in key b, later on
    time.sleep(0.25)
    assert "data" in observe(client, f"Bearer {keys['b'].sign(claims(key_server))}")
    assert key_server.fetches() == 1  # since the reset: exactly one refetch


def test_an_unknown_kid_flood_is_not_a_fetch_flood_end_to_end(jwks_client, key_server, keys, threatscore):
    assert "data" in observe(jwks_client, f"Bearer {keys['a'].sign(claims(key_server))}")
    for index in range(30):
        token = keys["attacker"].sign(claims(key_server), kid=f"made-up-{index}")
        assert "unknown key id" in observe(jwks_client, f"Bearer {token}")["errors"][0]["message"]
    assert key_server.fetches() <= 2  # the first fetch, and at most one refetch per interval
    assert threatscore.calls_for("198.51.100.7") == 1


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (503, "down", "key server answered HTTP 503"),
        (200, "<html>", "key server answered an invalid key set"),
    ],
)
def test_a_failing_key_server_refuses_cleanly_end_to_end(
    make_client, jwks_env, key_server, keys, threatscore, status, body, reason
):
    client = make_client(**jwks_env)
    key_server.reset()
    key_server.answer(body, status=status)
    answer = observe(client, f"Bearer {keys['a'].sign(claims(key_server))}")
    assert answer["errors"][0]["message"] == f"Authorization failed: {reason}"
    assert threatscore.total_calls == 0


def test_a_key_server_that_is_down_refuses_cleanly_end_to_end(make_client, jwks_env, key_server, keys):
    from tests.conftest import free_port

    down = f"127.0.0.1:{free_port()}"
    client = make_client(**{**jwks_env, "RELAY_JWKS_HOSTS": down})
    answer = observe(client, f"Bearer {keys['a'].sign(claims(key_server, jwks_host=down))}")
    assert (
        answer["errors"][0]["message"] == "Authorization failed: key server unreachable (connection refused)"
    )


def test_the_deadline_counts_from_arrival_including_the_key_fetch(
    make_client, jwks_env, key_server, keys, threatscore
):
    """A slow key server eats into the request's deadline; the answer still comes in time."""

    def slow_keys(request):
        time.sleep(1.2)
        return Response(json.dumps({"keys": [keys["a"].jwk()]}), content_type="application/json")

    key_server.reset()
    key_server.server.expect_request(JWKS_PATH).respond_with_handler(slow_keys)
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, delay=1.0)
    client = make_client(**jwks_env, RELAY_DEADLINE="1.5", THREATSCORE_TIMEOUT="3")
    started = time.monotonic()
    answer = observe(client, f"Bearer {keys['a'].sign(claims(key_server))}")
    elapsed = time.monotonic() - started
    assert answer["errors"][0]["code"] == "timeout" and "deadline" in answer["errors"][0]["message"]
    assert elapsed < 2.0  # 1.2 s of keys + 1.0 s of Threatscore would be 2.2 s


# --- RELAY_AUDIENCE unset: only the function's own name may lead the path --------


@pytest.fixture
def audience_from_request_env(jwks_env):
    return {name: value for name, value in jwks_env.items() if name != "RELAY_AUDIENCE"}


def test_a_token_for_another_module_is_refused_even_with_a_spoofed_host(
    make_client, audience_from_request_env, key_server, keys, threatscore
):
    """A token for `https://shared.example/other` sent to `/other/observe/observables` with
    `Host: shared.example`: the request URL is then below the token's audience."""
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    client = make_client(**audience_from_request_env)
    headers = {"Host": "shared.example"}
    for module in ("other", "observe-relay"):
        token = keys["a"].sign(claims(key_server, aud=f"http://shared.example/{module}"))
        response = client.post(
            f"/{module}/observe/observables",
            json=OBSERVABLES,
            headers={**headers, "Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 404, module
        assert response.get_json()["errors"][0]["code"] == "not found"
    own = keys["a"].sign(claims(key_server, aud="http://shared.example/relay"))
    response = client.post(
        "/relay/observe/observables", json=OBSERVABLES, headers={**headers, "Authorization": f"Bearer {own}"}
    )
    assert "data" in response.get_json()
    assert threatscore.total_calls == 1


def test_the_platforms_service_name_may_lead_the_path(
    make_client, audience_from_request_env, key_server, keys, threatscore
):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    client = make_client(**audience_from_request_env, K_SERVICE="threatscore-relay")
    for path in ("/threatscore-relay/observe/observables", "/relay/observe/observables"):
        aud = "http://localhost" + path.removesuffix("/observe/observables")
        token = keys["a"].sign(claims(key_server, aud=aud))
        assert "data" in observe(client, f"Bearer {token}", path=path), path
    other = keys["a"].sign(claims(key_server, aud="http://localhost/another"))
    assert (
        client.post(
            "/another/observe/observables", json=OBSERVABLES, headers={"Authorization": f"Bearer {other}"}
        ).status_code
        == 404
    )
