"""Tests for relay.redis_trust: what the relay keeps in Redis proves itself (namespaced keys,
entries sealed with a keyed MAC), and for its settings."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import replace

import pytest

from relay.config import ConfigError, Settings
from relay.redis_link import build_redis_link
from relay.redis_trust import (
    FORMAT,
    MISS_LOG_INTERVAL,
    PUBLIC_SIGNING_KEY,
    RedisTrust,
    _OncePerInterval,
    namespace_for,
    signing_key_for,
)
from tests.conftest import ACCESS_KEY, FakeClock

SIGNING_KEY = b"a-deployments-redis-signing-key-0123456789"
KEY = "threatscore-relay:v3:0123456789abcdef:answer:tenant=soc/ip:198.51.100.7"
NOW = 1_800_000_000.0


def trust(key: bytes = SIGNING_KEY, now: float = NOW) -> RedisTrust:
    return RedisTrust(key, "threatscore-relay:v3:0123456789abcdef:", clock=lambda: now)


def sealed_by_hand(payload: bytes, key: str = KEY, signing_key: bytes = SIGNING_KEY) -> bytes:
    mac = hmac.new(signing_key, key.encode() + b"\n" + payload, hashlib.sha256).hexdigest()
    return mac.encode() + b"." + payload


def test_a_sealed_entry_round_trips_with_its_time():
    sealed = trust().seal(KEY, {"scores": []}, 3600, at=NOW - 10)
    unsealed = trust().unseal(KEY, sealed)
    assert unsealed is not None and unsealed.data == {"scores": []} and unsealed.at == NOW - 10
    assert trust().unseal(KEY, trust().seal(KEY, None, 60)).data is None  # "no data" is data too


def test_an_entry_sealed_for_one_key_does_not_verify_under_another():
    sealed = trust().seal(KEY.replace("198.51.100.7", "198.51.100.8"), {"clean": True}, 3600)
    assert trust().unseal(KEY, sealed) is None


def test_an_entry_sealed_with_another_signing_key_does_not_verify():
    sealed = trust(b"another-deployments-key-0123456789abcdef").seal(KEY, {}, 3600)
    assert trust().unseal(KEY, sealed) is None


def test_a_changed_byte_does_not_verify():
    sealed = bytearray(trust().seal(KEY, {"level": "malicious"}, 3600))
    sealed[sealed.index(b"malicious")] = ord("M")
    assert trust().unseal(KEY, bytes(sealed)) is None


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":3,"at":NaN,"ttl":3600,"data":{}}',
        b'{"v":3,"at":1800000000,"ttl":1e999,"data":{}}',  # an infinite life
        b'{"v":3,"at":-1e999,"ttl":3600,"data":{}}',
        b'{"v":3,"at":"now","ttl":3600,"data":{}}',
        b'{"v":3,"at":true,"ttl":3600,"data":{}}',
        b'{"v":3,"at":1800000000,"ttl":0,"data":{}}',
        b'{"v":3,"at":1800000000,"ttl":-5,"data":{}}',
        b'{"v":2,"at":1800000000,"ttl":3600,"data":{}}',  # another format version
        b'{"v":3,"at":1800000000,"ttl":3600,"data":{},"extra":1}',
        b'{"v":3,"at":1800000000,"ttl":3600}',
        b"[1, 2]",
        b"not json",
        b"[" * 100_000,
        b'{"v":3,"at":1796544000,"ttl":3600,"data":{}}',  # 40 days back, still in Redis
        b'{"v":3,"at":1800090000,"ttl":3600,"data":{}}',  # a day in the future
    ],
)
def test_an_entry_that_verifies_but_is_not_sane_is_a_miss(payload: bytes):
    assert trust().unseal(KEY, sealed_by_hand(payload)) is None


@pytest.mark.parametrize("raw", [b"", b"{}", b"x" * 64 + b".{}", b"\xff" * 200, "text"])
def test_what_is_not_sealed_is_a_miss(raw):
    assert trust().unseal(KEY, raw) is None


def test_an_entry_lives_exactly_its_own_ttl():
    sealed = trust().seal(KEY, {}, 60, at=NOW)
    assert trust(now=NOW + 59.9).unseal(KEY, sealed) is not None
    assert trust(now=NOW + 60).unseal(KEY, sealed) is None


def test_what_cannot_be_encoded_is_not_sealed(caplog):
    assert trust().seal(KEY, {"when": object()}, 60) is None
    assert trust().unseal(KEY, trust().seal(KEY, {"text": "\ud800"}, 60)).data == {"text": "\ud800"}


def test_misses_are_logged_once_per_reason_per_minute(caplog):
    caplog.set_level(logging.INFO, logger="relay.redis_trust")
    checker = trust()
    for _ in range(50):
        checker.unseal(KEY, b"0" * 64 + b".{}")  # a MAC of nobody's
        checker.unseal(KEY, b"not sealed")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert any("MAC does not verify" in message for message in messages)
    assert all("198.51.100.7" not in message for message in messages)  # never the observable
    assert [r.levelname for r in caplog.records if "MAC" in r.getMessage()] == ["WARNING"]


def test_once_per_interval_is_per_reason_and_comes_back():
    clock = FakeClock()
    once = _OncePerInterval(MISS_LOG_INTERVAL, clock)
    assert once.due("a") and once.due("b")
    assert not once.due("a")
    clock.advance(MISS_LOG_INTERVAL - 1)
    assert not once.due("a")
    clock.advance(1)
    assert once.due("a")


# --- the signing key and the namespace ----------------------------------------------------------


def test_the_signing_key_is_redis_signing_key_else_derived_from_the_relays_secrets():
    own = Settings(redis_signing_key="s" * 32)
    assert signing_key_for(own) == (b"s" * 32, False)
    from_secret = signing_key_for(Settings(relay_auth="secret", secret="x" * 32))
    from_keys = signing_key_for(Settings(access_keys=(("soc", ACCESS_KEY),)))
    nothing = signing_key_for(Settings(relay_auth="none"))
    assert not from_secret[1] and not from_keys[1]
    assert from_secret[0] != from_keys[0]
    assert b"x" * 32 not in from_secret[0] and ACCESS_KEY.encode() not in from_keys[0]
    assert nothing == (PUBLIC_SIGNING_KEY, True)


def test_redis_signing_key_must_be_long_and_is_never_repeated():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_SIGNING_KEY": "short-one"})
    assert "REDIS_SIGNING_KEY" in str(caught.value) and "short-one" not in str(caught.value)
    assert "short-one" not in repr(Settings(redis_signing_key="short-one" * 4))


def test_the_namespace_names_the_answer_source_and_never_the_api_key():
    base = Settings()
    namespaces = {
        namespace_for(base),
        namespace_for(replace(base, threatscore_api_url="https://staging.example")),
        namespace_for(Settings(threatscore_api="score")),
        namespace_for(replace(base, threatscore_api_key="licensed-key-one")),
        namespace_for(replace(base, threatscore_api_key="licensed-key-two")),
    }
    assert len(namespaces) == 5
    assert all(ns.startswith(f"threatscore-relay:v{FORMAT}:") for ns in namespaces)
    assert not any("licensed-key" in ns for ns in namespaces)
    assert namespace_for(base) == namespace_for(Settings())  # stable: instances agree


def test_a_redis_link_without_any_secret_warns_loudly(caplog):
    caplog.set_level(logging.WARNING, logger="relay.redis_link")
    link = build_redis_link(Settings(relay_auth="none", redis_url="redis://127.0.0.1:1/0"))
    assert link is not None and link.trust.publicly_known_key
    assert "signed with a key anyone could know" in caplog.text
    caplog.clear()
    build_redis_link(
        Settings(relay_auth="none", redis_url="redis://127.0.0.1:1/0", redis_signing_key="k" * 32)
    )
    assert caplog.text == ""


def test_the_link_seals_and_names_for_every_redis_user():
    link = build_redis_link(
        Settings(relay_auth="none", redis_url="redis://127.0.0.1:1/0", redis_signing_key="k" * 32)
    )
    name = link.namespaced("circuit-breaker")
    assert name.startswith(link.trust.namespace)
    sealed = link.seal(name, {"open_until": 1.5}, 30)
    assert json.loads(sealed.partition(b".")[2])["data"] == {"open_until": 1.5}
    assert link.unseal(name, sealed).data == {"open_until": 1.5}
    assert link.unseal(link.namespaced("other"), sealed) is None
