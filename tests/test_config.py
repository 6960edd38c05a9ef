import os
import subprocess
import sys

import pytest

from relay.config import ConfigError, Settings
from tests.relay_process import ROOT, without_relay_settings


def test_defaults():
    settings = Settings.from_env({})
    assert settings.threatscore_api == "v3"
    assert settings.threatscore_api_url == "https://api.threatscore.cyberprotect.cloud"
    assert settings.threatscore_ui_url == "https://console.threatscore.cyberprotect.cloud"
    assert settings.threatscore_api_key is None and settings.threatscore_api_key_header is None
    assert (settings.threatscore_connect_timeout, settings.threatscore_read_timeout) == (3.0, 5.0)
    assert settings.ctr_entities_limit == 100 and settings.ctim_valid_days == 7
    assert settings.relay_auth == "jwks"
    assert settings.health_observable == "127.0.0.100"


def test_values_are_parsed_and_normalised():
    settings = Settings.from_env(
        {
            "THREATSCORE_API_URL": "http://127.0.0.1:9000/",
            "THREATSCORE_TIMEOUT": "1.5,8",
            "CTR_ENTITIES_LIMIT": "20",
            "CTIM_VALID_DAYS": "2",
            "RELAY_AUTH": "NONE",
            "RELAY_AUDIENCE": "https://a.example/relay/, https://b.example",
            "RELAY_JWKS_HOSTS": "Keys.Example:8443,other.example",
        }
    )
    assert settings.threatscore_api_url == "http://127.0.0.1:9000"
    assert (settings.threatscore_connect_timeout, settings.threatscore_read_timeout) == (1.5, 8.0)
    assert settings.ctr_entities_limit == 20 and settings.ctim_valid_days == 2
    assert settings.relay_auth == "none"
    assert settings.audience == ("https://a.example/relay", "https://b.example")
    assert settings.jwks_hosts == ("keys.example:8443", "other.example")


def test_the_score_api_keeps_its_own_defaults():
    settings = Settings.from_env({"THREATSCORE_API": "Score"})
    assert settings.threatscore_api == "score"
    assert settings.threatscore_api_url == "https://threatscore.cyberprotect.cloud"
    assert settings.threatscore_ui_url == "https://threatscore.cyberprotect.cloud"


@pytest.mark.parametrize("api", ["v3", "score"])
def test_urls_given_win_over_the_backends_defaults(api):
    settings = Settings.from_env(
        {
            "THREATSCORE_API": api,
            "THREATSCORE_API_URL": "https://ts.example/",
            "THREATSCORE_UI_URL": "https://ui.example",
        }
    )
    assert (settings.threatscore_api_url, settings.threatscore_ui_url) == (
        "https://ts.example",
        "https://ui.example",
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000", "https://ts.example"]
)
def test_an_api_key_goes_over_https_or_to_a_loopback_address(url):
    settings = Settings.from_env({"THREATSCORE_API_KEY": "k" * 20, "THREATSCORE_API_URL": url})
    assert settings.threatscore_api_key == "k" * 20


@pytest.mark.parametrize("url", ["http://ts.example", "http://10.0.0.1:9000", "http://127.0.0.1.example"])
def test_an_api_key_over_plain_http_is_refused_at_start_up(url):
    with pytest.raises(ConfigError, match="THREATSCORE_API_URL: must be an https:// URL") as raised:
        Settings.from_env({"THREATSCORE_API_KEY": "secret-key-value", "THREATSCORE_API_URL": url})
    assert "secret-key-value" not in str(raised.value)


def test_a_single_timeout_sets_both():
    settings = Settings.from_env({"THREATSCORE_TIMEOUT": "4"})
    assert (settings.threatscore_connect_timeout, settings.threatscore_read_timeout) == (4.0, 4.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CTR_ENTITIES_LIMIT", "0", "CTR_ENTITIES_LIMIT: must be a positive integer"),
        ("CTR_ENTITIES_LIMIT", "ten", "CTR_ENTITIES_LIMIT: invalid value"),
        ("CTIM_VALID_DAYS", "-1", "CTIM_VALID_DAYS: must be a positive integer"),
        ("THREATSCORE_TIMEOUT", "0", "THREATSCORE_TIMEOUT: must be a positive number"),
        ("THREATSCORE_TIMEOUT", "1,2,3", "THREATSCORE_TIMEOUT: must be SECONDS or CONNECT,READ"),
        ("THREATSCORE_TIMEOUT", "nan", "THREATSCORE_TIMEOUT: must be a positive number"),
        ("THREATSCORE_API_URL", "ftp://x", "THREATSCORE_API_URL: must be an http(s) URL"),
        ("THREATSCORE_UI_URL", "not a url", "THREATSCORE_UI_URL: must be an http(s) URL"),
        ("RELAY_AUTH", "maybe", "RELAY_AUTH: must be one of jwks, secret, none"),
        ("RELAY_JWKS_URL_TEMPLATE", "https://x/jwks", "must contain {host}"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL: must be DEBUG"),
        ("THREATSCORE_API", "v2", "THREATSCORE_API: must be one of v3, score"),
        ("THREATSCORE_API_KEY_HEADER", "X Key", "THREATSCORE_API_KEY_HEADER: must be an HTTP header name"),
    ],
)
def test_bad_values_are_clear_errors(name, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({name: value})


def test_secret_mode_needs_a_long_secret():
    with pytest.raises(ConfigError, match="RELAY_AUTH=secret needs RELAY_SECRET"):
        Settings.from_env({"RELAY_AUTH": "secret"})
    with pytest.raises(ConfigError, match="at least 32 characters"):
        Settings.from_env({"RELAY_AUTH": "secret", "RELAY_SECRET": "short"})
    assert Settings.from_env({"RELAY_AUTH": "secret", "RELAY_SECRET": "s" * 32}).secret == "s" * 32


def test_secrets_never_show_in_repr():
    settings = Settings.from_env(
        {
            "RELAY_SECRET": "x" * 40,
            "REDIS_URL": "redis://:hunter2@127.0.0.1:6379/0",
            "THREATSCORE_API_KEY": "ts-key-sesame",
        }
    )
    assert "xxxx" not in repr(settings) and "hunter2" not in repr(settings)
    assert "sesame" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CTIM_VALID_DAYS", "100000000"),  # valid_time's end would overflow every date
        ("CTIM_VALID_DAYS", "3651"),
        ("CTR_ENTITIES_LIMIT", "1001"),
        ("RELAY_DEADLINE", "0.000001"),  # every lookup would time out
        ("RELAY_DEADLINE", "1e9"),
        ("THREATSCORE_TIMEOUT", "0.001"),
        ("THREATSCORE_TIMEOUT", "3,1e6"),
        ("THREATSCORE_RETRIES", "1000000"),
        ("THREATSCORE_MAX_CONCURRENCY", "100000"),
        ("THREATSCORE_MAX_BODY_BYTES", "10"),  # no answer would fit
        ("THREATSCORE_MAX_BODY_BYTES", str(2**40)),
        ("RELAY_MAX_BODY_BYTES", "10"),
        ("RELAY_MAX_BODY_BYTES", str(2**40)),
        ("RELAY_MAX_OBSERVABLES", "100000000"),
        ("RELAY_MAX_VALUE_LENGTH", "3"),
        ("RELAY_MAX_VALUE_LENGTH", "100000000"),
        ("RELAY_JWKS_TIMEOUT", "1e6"),
        ("RELAY_JWKS_CACHE_TTL", "1e300"),
        ("RELAY_JWKS_REFETCH_INTERVAL", "1e9"),
        ("RELAY_JWT_LEEWAY", "1e12"),
        ("CACHE_TTL", "1e300"),
        ("CACHE_NEGATIVE_TTL", "1e300"),
        ("CACHE_MAX_ENTRIES", str(10**12)),
    ],
)
def test_every_number_has_a_sane_range(name, value):
    with pytest.raises(ConfigError, match=rf"^{name}: must be"):
        Settings.from_env({name: value})


def test_the_ranges_hold_their_ends():
    settings = Settings.from_env(
        {"CTIM_VALID_DAYS": "3650", "CTR_ENTITIES_LIMIT": "1000", "RELAY_DEADLINE": "600", "CACHE_TTL": "0"}
    )
    assert (settings.ctim_valid_days, settings.ctr_entities_limit) == (3650, 1000)
    assert (settings.relay_deadline, settings.cache_ttl) == (600.0, 0.0)


@pytest.mark.parametrize(
    "url",
    [
        "http://threatscore.example",
        "http://10.0.0.8:8080",
        "http://[::ffff:1.2.3.4]",
        "http://127.0.0.1.example",
    ],
)
def test_threatscore_must_be_https_except_to_loopback(url):
    with pytest.raises(ConfigError, match=r"THREATSCORE_API_URL: must be an https:// URL"):
        Settings.from_env({"THREATSCORE_API_URL": url})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000", "http://127.8.9.1", "http://[::1]:8080", "http://localhost"]
)
def test_plain_http_to_loopback_is_allowed(url):
    assert Settings.from_env({"THREATSCORE_API_URL": url}).threatscore_api_url == url


def test_key_urls_must_be_https_except_to_loopback():
    with pytest.raises(ConfigError, match=r"RELAY_JWKS_URL_TEMPLATE must be an https:// URL"):
        Settings.from_env({"RELAY_JWKS_URL_TEMPLATE": "http://{host}/.well-known/jwks"})
    with pytest.raises(ConfigError, match=r"not keys\.example"):
        Settings.from_env(
            {
                "RELAY_JWKS_URL_TEMPLATE": "http://{host}/jwks",
                "RELAY_JWKS_HOSTS": "127.0.0.1:9000,keys.example",
            }
        )
    local = Settings.from_env(
        {"RELAY_JWKS_URL_TEMPLATE": "http://{host}/jwks", "RELAY_JWKS_HOSTS": "127.0.0.1:9000"}
    )
    assert local.jwks_hosts == ("127.0.0.1:9000",)


def test_a_relay_with_a_plain_http_upstream_does_not_start(tmp_path):
    """Refused at start-up: the process exits saying why, it does not serve."""
    result = subprocess.run(
        [sys.executable, "-c", "from relay.app import RelayApp; RelayApp.from_env()"],
        cwd=ROOT,
        env={
            **without_relay_settings(os.environ),
            "THREATSCORE_API_URL": "http://threatscore.example",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "THREATSCORE_API_URL: must be an https:// URL" in result.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("", False)],
)
def test_relay_lookup_internal_is_a_yes_or_no(raw, expected):
    assert Settings.from_env({"RELAY_LOOKUP_INTERNAL": raw}).lookup_internal is expected


def test_relay_lookup_internal_refuses_other_words():
    with pytest.raises(ConfigError, match="RELAY_LOOKUP_INTERNAL: must be true or false"):
        Settings.from_env({"RELAY_LOOKUP_INTERNAL": "sometimes"})


# --- access keys and tenants ------------------------------------------------------------------

KEY_A = "k" * 32
KEY_B = "b" * 40


def test_access_keys_name_their_tenants_and_a_tenant_may_have_two_for_rotation():
    settings = Settings.from_env(
        {"RELAY_ACCESS_KEYS": f" soc={KEY_A} , mssp-client-2={KEY_B},soc={'n' * 32}"}
    )
    assert settings.access_keys == (("soc", KEY_A), ("mssp-client-2", KEY_B), ("soc", "n" * 32))
    assert KEY_A not in repr(settings)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (f"soc{KEY_A}", "entry 1 is not TENANT=KEY"),
        (f"soc={KEY_A}=x", "entry 1 is not TENANT=KEY"),
        (f"Soc={KEY_A}", "entry 1: a tenant name is 1 to 63 lower-case letters, digits and hyphens"),
        (f"so c={KEY_A}", "a tenant name is"),
        (f"-soc={KEY_A}", "a tenant name is"),
        (f"={KEY_A}", "a tenant name is"),
        (f"soc={KEY_A},", "entry 2 is not TENANT=KEY"),
        ("soc=short", "the key of tenant soc (entry 1) is shorter than 32 characters"),
        (f"soc={KEY_A},other={KEY_A}", "entry 2 repeats a key already given"),
        (f"soc={KEY_A},soc={KEY_B},soc={'c' * 32}", "tenant soc has more than 2 keys"),
    ],
)
def test_bad_access_keys_stop_the_start_up_without_repeating_a_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"RELAY_ACCESS_KEYS": raw})
    assert str(caught.value).startswith("RELAY_ACCESS_KEYS: ")
    assert message in str(caught.value)
    assert KEY_A not in str(caught.value) and "short" not in str(caught.value).replace("shorter", "")


def test_access_keys_and_any_organisation_together_are_a_configuration_error():
    with pytest.raises(ConfigError, match="contradict each other"):
        Settings.from_env({"RELAY_ACCESS_KEYS": f"soc={KEY_A}", "RELAY_ANY_ORGANISATION": "true"})
    assert Settings.from_env({"RELAY_ANY_ORGANISATION": "yes"}).any_organisation is True
    assert Settings.from_env({"CACHE_SHARED_BETWEEN_TENANTS": "false"}).cache_shared_between_tenants is False
    with pytest.raises(ConfigError, match="RELAY_ANY_ORGANISATION: must be true or false"):
        Settings.from_env({"RELAY_ANY_ORGANISATION": "maybe"})
