"""Tenants and trust, tried as an attacker would: the relay as a real functions-framework process,
with its own key server, Threatscore simulator and redis-server on 127.0.0.1.

- only the organisations the operator let in (an access key in every token);
- tenants kept apart (what one looks up never shows in another's answers or timings);
- Redis holds nothing it can't prove (forged, dated back, `"at": NaN`, another deployment's).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time

import pytest
import requests

from tests import answers
from tests.conftest import (
    ACCESS_KEY,
    ACCESS_KEYS,
    JWKS_PATH,
    MAIN,
    OTHER_ACCESS_KEY,
    ROOT,
    VENV_BIN,
    RedisServer,
    RelayRedis,
)
from tests.relay_process import RelayProcess
from tests.test_instances import all_at_once

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

AUDIENCE = "https://europe-west1-project.cloudfunctions.net/relay"
DELIBERATE = "/deliberate/observables"
MALICIOUS_IP = "198.51.100.7"
CLEAN_IP = "198.51.100.8"
SIGNING_KEY = "a-deployments-redis-signing-key-0123456789"
DAY = 24 * 3600


def ip(value: str) -> dict:
    return {"type": "ip", "value": value}


def verdicts(body: dict) -> dict[str, str]:
    docs = body.get("data", {}).get("verdicts", {}).get("docs", [])
    return {doc["observable"]["value"]: doc["disposition_name"] for doc in docs}


def post(relay: RelayProcess, observables: list[dict], token: str | None = None, path: str = DELIBERATE):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = requests.post(relay.url + path, json=observables, headers=headers, timeout=60)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def request_lines(relay: RelayProcess) -> list[dict]:
    """The relay's one-line-per-request log records, in order."""
    return [record for record in relay.log_records() if "upstream_calls" in record]


@pytest.fixture
def answers_known(threatscore):
    threatscore.answer(MALICIOUS_IP, answers.with_scores(0.9, 0.95, aggregate=0.95))
    threatscore.answer(CLEAN_IP, answers.with_scores(0.0, 0.01, aggregate=0.01))
    return threatscore


# --- only the organisations the operator let in ------------------------------------------------


@pytest.fixture
def jwks_env(key_server, keys) -> dict[str, str]:
    key_server.publish(keys["a"])
    return {
        "RELAY_AUTH": "jwks",
        "RELAY_JWKS_HOSTS": key_server.host,
        "RELAY_JWKS_URL_TEMPLATE": "http://{host}" + JWKS_PATH,
        "RELAY_AUDIENCE": AUDIENCE,
        "RELAY_ACCESS_KEYS": ACCESS_KEYS,
    }


def xdr_token(key_server, keys, **claims) -> str:
    """A token as XDR signs it for a module; ACCESS_KEY is the module's custom_ACCESS_KEY."""
    now = int(time.time())
    payload = {"aud": AUDIENCE, "jwks_host": key_server.host, "iat": now, "exp": now + 600, **claims}
    return keys["a"].sign({name: value for name, value in payload.items() if value is not None})


def test_a_token_from_an_organisation_without_the_access_key_is_refused(
    answers_known, launch_relay, jwks_env, key_server, keys
):
    relay = launch_relay(**jwks_env)
    # Signed by XDR, for this relay's URL: what any organisation gets by naming the URL in a module.
    foreign = xdr_token(key_server, keys)
    wrong = xdr_token(key_server, keys, ACCESS_KEY="a-guess-of-the-operators-key-0123456789")
    not_text = xdr_token(key_server, keys, ACCESS_KEY=["x"])

    refusals = [post(relay, [ip(MALICIOUS_IP)], token) for token in (foreign, wrong, not_text)]

    messages = [body["errors"][0]["message"] for body in refusals]
    assert [body["errors"][0]["code"] for body in refusals] == ["authorization error"] * 3
    assert "access key missing" in messages[0]
    assert "wrong access key" in messages[1] and "wrong access key" in messages[2]
    for message in messages:  # never which keys exist
        assert ACCESS_KEY not in message and OTHER_ACCESS_KEY not in message
        assert "soc" not in message and "mssp" not in message
    assert answers_known.calls_for(MALICIOUS_IP) == 0  # nothing of the licence was spent

    # The operator's own organisations, each its tenant (the second by its own key).
    assert verdicts(post(relay, [ip(MALICIOUS_IP)], xdr_token(key_server, keys, ACCESS_KEY=ACCESS_KEY))) == {
        MALICIOUS_IP: "Malicious"
    }
    other = xdr_token(key_server, keys, ACCESS_KEY=OTHER_ACCESS_KEY)
    assert verdicts(post(relay, [ip(CLEAN_IP)], other)) == {CLEAN_IP: "Clean"}
    lines = request_lines(relay)
    assert [line.get("tenant") for line in lines] == [None, None, None, "soc", "mssp-client-2"]
    log_text = relay.stdout_path.read_text() + relay.stderr_text()
    assert ACCESS_KEY not in log_text and OTHER_ACCESS_KEY not in log_text


def start_up_failure(env: dict[str, str]) -> str:
    """The relay's stderr when it refuses to start with `env`."""
    result = subprocess.run(
        [str(VENV_BIN / "functions-framework"), "--target=relay", f"--source={MAIN}", "--port=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    return result.stderr


def test_jwks_mode_without_access_keys_does_not_start(relay_env, jwks_env):
    without_keys = {name: value for name, value in jwks_env.items() if name != "RELAY_ACCESS_KEYS"}
    stderr = start_up_failure({**relay_env, **without_keys})
    assert "ConfigError: RELAY_AUTH=jwks needs RELAY_ACCESS_KEYS" in stderr
    assert "RELAY_ANY_ORGANISATION=true" in stderr

    both = start_up_failure({**relay_env, **jwks_env, "RELAY_ANY_ORGANISATION": "true"})
    assert "ConfigError: RELAY_ACCESS_KEYS and RELAY_ANY_ORGANISATION=true contradict each other" in both
    assert ACCESS_KEY not in both

    short = start_up_failure({**relay_env, **jwks_env, "RELAY_ACCESS_KEYS": "soc=short-key"})
    assert "RELAY_ACCESS_KEYS: the key of tenant soc (entry 1) is shorter than 32 characters" in short
    assert "short-key" not in short


def test_any_organisation_is_let_in_only_when_the_operator_says_so_loudly(
    answers_known, launch_relay, jwks_env, key_server, keys
):
    env = {name: value for name, value in jwks_env.items() if name != "RELAY_ACCESS_KEYS"}
    relay = launch_relay(**env, RELAY_ANY_ORGANISATION="true")

    body = post(relay, [ip(MALICIOUS_IP)], xdr_token(key_server, keys))

    assert verdicts(body) == {MALICIOUS_IP: "Malicious"}
    warnings = [r["message"] for r in relay.log_records() if r.get("severity") == "WARNING"]
    assert any("RELAY_ANY_ORGANISATION=true: ANY XDR organisation" in message for message in warnings)
    assert request_lines(relay)[-1]["tenant"] == "any-organisation"


# --- tenants kept apart -------------------------------------------------------------------------


@pytest.mark.parametrize("with_redis", [False, True], ids=["memory", "redis"])
def test_a_tenant_cannot_tell_whether_another_looked_something_up(
    answers_known, launch_relay, jwks_env, key_server, keys, start_redis, with_redis
):
    redis_env = {"REDIS_URL": start_redis().url} if with_redis else {}
    relay = launch_relay(**jwks_env, **redis_env)
    tenant_a = xdr_token(key_server, keys, ACCESS_KEY=ACCESS_KEY)
    tenant_b = xdr_token(key_server, keys, ACCESS_KEY=OTHER_ACCESS_KEY)

    first = post(relay, [ip(MALICIOUS_IP)], tenant_a, path="/observe/observables")
    time.sleep(1.1)  # so that a shared answer would show A's fetch instant, a second earlier
    second = post(relay, [ip(MALICIOUS_IP)], tenant_b, path="/observe/observables")
    again = post(relay, [ip(MALICIOUS_IP)], tenant_b, path="/observe/observables")

    # B's lookup went to Threatscore: no hit, no shared flight, no fetch instant of A's.
    assert answers_known.calls_for(MALICIOUS_IP) == 2
    a_line, b_line, b_again = request_lines(relay)
    assert (a_line["upstream_calls"], a_line["cache_hits"]) == (1, 0)
    assert (b_line["upstream_calls"], b_line["cache_hits"]) == (1, 0)
    assert (b_again["upstream_calls"], b_again["cache_hits"]) == (0, 1)  # B's own cache still works
    # The entities are dated from the fetch (valid until CTIM_VALID_DAYS after it): B's from its own.
    ends = [body["data"]["verdicts"]["docs"][0]["valid_time"]["end_time"] for body in (first, second)]
    assert ends[0] < ends[1]
    assert again["data"] == second["data"]


def test_a_tenant_never_joins_another_tenants_flight(
    threatscore, launch_relay, jwks_env, key_server, keys, redis_server: RedisServer
):
    threatscore.answer(MALICIOUS_IP, answers.with_scores(0.9, 0.95, aggregate=0.95), delay=1.0)
    env = {**jwks_env, "REDIS_URL": redis_server.url, "REDIS_SIGNING_KEY": SIGNING_KEY}
    first, second = launch_relay(**env), launch_relay(**env)
    tenant_a = xdr_token(key_server, keys, ACCESS_KEY=ACCESS_KEY)
    tenant_b = xdr_token(key_server, keys, ACCESS_KEY=OTHER_ACCESS_KEY)

    bodies = all_at_once(
        [
            lambda: post(first, [ip(MALICIOUS_IP)], tenant_a),
            lambda: post(first, [ip(MALICIOUS_IP)], tenant_b),
            lambda: post(second, [ip(MALICIOUS_IP)], tenant_b),
        ]
    )

    assert all(verdicts(body) == {MALICIOUS_IP: "Malicious"} for body in bodies)
    # One call per tenant: B's two requests shared one flight across the instances, A had its own.
    assert threatscore.calls_for(MALICIOUS_IP) == 2


def test_sharing_the_cache_between_tenants_is_the_operators_choice(
    answers_known, launch_relay, jwks_env, key_server, keys
):
    relay = launch_relay(**jwks_env, CACHE_SHARED_BETWEEN_TENANTS="true")
    post(relay, [ip(MALICIOUS_IP)], xdr_token(key_server, keys, ACCESS_KEY=ACCESS_KEY))
    post(relay, [ip(MALICIOUS_IP)], xdr_token(key_server, keys, ACCESS_KEY=OTHER_ACCESS_KEY))
    assert answers_known.calls_for(MALICIOUS_IP) == 1
    assert [line["cache_hits"] for line in request_lines(relay)] == [0, 1]


# --- Redis holds nothing it can't prove -----------------------------------------------------------


@pytest.fixture
def redis_env(relay_env, redis_server: RedisServer) -> dict[str, str]:
    return {**relay_env, "REDIS_URL": redis_server.url, "REDIS_SIGNING_KEY": SIGNING_KEY}


def sealed_with(key: bytes, payload: bytes, signing_key: str = SIGNING_KEY) -> bytes:
    """An entry as the relay seals it: HMAC-SHA256 over the Redis key and the JSON, then the JSON."""
    mac = hmac.new(signing_key.encode(), key + b"\n" + payload, hashlib.sha256).hexdigest()
    return mac.encode() + b"." + payload


CLEAN_ANSWER = answers.with_scores(0.0, 0.01, aggregate=0.01)


@pytest.fixture
def redis_only(redis_env) -> dict[str, str]:
    """A relay that reads every answer from Redis (no memory tier in front of it)."""
    return {**redis_env, "CACHE_MEMORY_TTL": "0"}


def test_a_forged_redis_entry_does_not_turn_a_malicious_ip_clean(
    answers_known, launch_relay, redis_only, redis_server: RedisServer
):
    relay = launch_relay(**redis_only)
    names = RelayRedis(redis_only)
    target = names.answer_key(f"ip:{MALICIOUS_IP}")
    assert verdicts(post(relay, [ip(CLEAN_IP)])) == {CLEAN_IP: "Clean"}  # a genuine Clean entry
    now = time.time()
    with redis_server.client() as direct:
        genuine_clean = direct.get(names.answer_key(f"ip:{CLEAN_IP}"))
        forgeries = [
            # What the relay stored before entries were sealed.
            json.dumps({"v": 2, "at": now, "answer": CLEAN_ANSWER}).encode(),
            # Sealed with a key the attacker guessed.
            sealed_with(
                target,
                json.dumps({"v": 3, "at": now, "ttl": 3600, "data": CLEAN_ANSWER}).encode(),
                signing_key="a-guess-at-the-signing-key-0123456789",
            ),
            # The relay's own seal, copied from the Clean IP's entry to the malicious one's.
            genuine_clean,
        ]
    for forged in forgeries:
        with redis_server.client() as direct:
            direct.set(target, forged, ex=3600)
        assert verdicts(post(relay, [ip(MALICIOUS_IP)])) == {MALICIOUS_IP: "Malicious"}
    assert answers_known.calls_for(MALICIOUS_IP) == len(forgeries)
    warnings = [r["message"] for r in relay.log_records() if r.get("severity") == "WARNING"]
    # Logged, once per reason per minute, never naming the observable.
    assert sum("MAC does not verify" in message for message in warnings) == 1
    assert not any(MALICIOUS_IP in message for message in warnings)


def test_an_entry_without_expiry_dated_40_days_back_is_not_served(
    answers_known, launch_relay, redis_only, redis_server: RedisServer
):
    relay = launch_relay(**redis_only)
    names = RelayRedis(redis_only)
    target = names.answer_key(f"ip:{MALICIOUS_IP}")
    long_ago = time.time() - 40 * DAY
    entries = [
        json.dumps({"v": 2, "at": long_ago, "answer": CLEAN_ANSWER}).encode(),
        # Even one sealed with the deployment's own key (written by the relay, its expiry
        # then removed): older than its own time to live.
        sealed_with(target, json.dumps({"v": 3, "at": long_ago, "ttl": 3600, "data": CLEAN_ANSWER}).encode()),
    ]
    for entry in entries:
        with redis_server.client() as direct:
            direct.set(target, entry)  # no expiry
        assert verdicts(post(relay, [ip(MALICIOUS_IP)])) == {MALICIOUS_IP: "Malicious"}
        with redis_server.client() as direct:
            direct.delete(target)
    assert answers_known.calls_for(MALICIOUS_IP) == 2
    messages = [r["message"] for r in relay.log_records()]
    assert any("older than its own time to live" in message for message in messages)


def test_at_nan_costs_nothing(answers_known, launch_relay, redis_only, redis_server: RedisServer):
    relay = launch_relay(**redis_only)
    names = RelayRedis(redis_only)
    target = names.answer_key(f"ip:{MALICIOUS_IP}")
    entries = [
        b'{"v": 2, "at": NaN, "answer": {"scores": []}}',
        sealed_with(target, b'{"v":3,"at":NaN,"ttl":3600,"data":{"scores":[]}}'),
        sealed_with(target, b'{"v":3,"at":1e999,"ttl":3600,"data":{"scores":[]}}'),
        sealed_with(target, b'{"v":3,"at":1700000000,"ttl":Infinity,"data":{"scores":[]}}'),
    ]
    for entry in entries:
        with redis_server.client() as direct:
            direct.set(target, entry)
        body = post(relay, [ip(MALICIOUS_IP), ip(CLEAN_IP)], path="/observe/observables")
        assert "errors" not in body
        assert verdicts(body) == {MALICIOUS_IP: "Malicious", CLEAN_IP: "Clean"}
    assert all(line["status"] == 200 and "errors" not in line for line in request_lines(relay))


def test_a_planted_lock_without_expiry_does_not_hold_lookups(
    answers_known, launch_relay, redis_only, redis_server: RedisServer
):
    relay = launch_relay(**redis_only, RELAY_DEADLINE="5")
    names = RelayRedis(redis_only)
    with redis_server.client() as direct:
        direct.set(names.lock_key(f"ip:{MALICIOUS_IP}"), b"forever")
    started = time.monotonic()
    assert verdicts(post(relay, [ip(MALICIOUS_IP)])) == {MALICIOUS_IP: "Malicious"}
    assert time.monotonic() - started < 4  # not held until the deadline


def test_two_deployments_sharing_one_redis_never_serve_each_others_answers(
    answers_known, launch_relay, relay_env, redis_server: RedisServer
):
    # Production and staging: the same simulator under two URLs stands for two Threatscores.
    port = answers_known.url.rsplit(":", 1)[1]
    production_env = {**relay_env, "REDIS_URL": redis_server.url, "REDIS_SIGNING_KEY": SIGNING_KEY}
    staging_env = {**production_env, "THREATSCORE_API_URL": f"http://localhost:{port}"}
    production, staging = launch_relay(**production_env), launch_relay(**staging_env)

    assert verdicts(post(staging, [ip(MALICIOUS_IP)])) == {MALICIOUS_IP: "Malicious"}
    assert verdicts(post(production, [ip(MALICIOUS_IP)])) == {MALICIOUS_IP: "Malicious"}

    assert answers_known.calls_for(MALICIOUS_IP) == 2  # production asked its own Threatscore
    production_names, staging_names = RelayRedis(production_env), RelayRedis(staging_env)
    assert production_names.namespaced("") != staging_names.namespaced("")
    with redis_server.client() as direct:
        keys = set(direct.keys("*"))
    assert production_names.answer_key(f"ip:{MALICIOUS_IP}") in keys
    assert staging_names.answer_key(f"ip:{MALICIOUS_IP}") in keys


def test_a_429_held_back_in_one_deployment_does_not_hold_another(
    answers_known, launch_relay, relay_env, redis_server: RedisServer
):
    port = answers_known.url.rsplit(":", 1)[1]
    production_env = {**relay_env, "REDIS_URL": redis_server.url, "RELAY_DEADLINE": "2"}
    staging_env = {**production_env, "THREATSCORE_API_URL": f"http://localhost:{port}"}
    answers_known.answer("198.51.100.50", {"error": "slow down"}, status=429, headers={"Retry-After": "30"})
    production, staging = launch_relay(**production_env), launch_relay(**staging_env)

    held = post(staging, [ip("198.51.100.50")])
    assert held["errors"][0]["code"] == "too many requests"
    assert verdicts(post(production, [ip(MALICIOUS_IP)])) == {MALICIOUS_IP: "Malicious"}
