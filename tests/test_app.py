"""The relay end to end in-process: functions_framework.create_app over main.py."""

from datetime import UTC

import pytest

from tests import answers
from tests.ctim import check_answer

OBSERVE = "/observe/observables"


def post(client, path, payload=None, **kwargs):
    response = (
        client.post(path, json=payload, **kwargs) if payload is not None else client.post(path, **kwargs)
    )
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/json"
    body = response.get_json()
    if not path.endswith("/version"):
        check_answer(body)
    return body


def test_observe_four_engines(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    body = post(client, OBSERVE, [{"type": "IP", "value": "198.51.100.7"}])
    assert set(body) == {"data"}
    assert body["data"]["verdicts"]["count"] == 1
    assert body["data"]["verdicts"]["docs"][0]["disposition_name"] == "Suspicious"
    assert [j["disposition_name"] for j in body["data"]["judgements"]["docs"]] == [
        "Suspicious",
        "Clean",
        "Malicious",
        "Suspicious",
        "Clean",
    ]


def test_deliberate_gives_verdicts_only(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    body = post(client, "/deliberate/observables", [{"type": "ip", "value": "198.51.100.7"}])
    assert set(body["data"]) == {"verdicts"}
    assert body["data"]["verdicts"]["docs"][0]["disposition"] == 3


def test_the_function_name_in_front_of_the_path_is_accepted(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    body = post(client, "/relay/deliberate/observables", [{"type": "ip", "value": "198.51.100.7"}])
    assert body["data"]["verdicts"]["count"] == 1
    assert post(client, "/relay/version")["version"]


@pytest.mark.parametrize(("status", "body"), answers.NO_DATA_FORMS)
def test_no_data_is_an_empty_answer(threatscore, client, status, body):
    threatscore.answer("203.0.113.9", body, status=status)
    assert post(client, OBSERVE, [{"type": "ip", "value": "203.0.113.9"}]) == {"data": {}}


def test_unsupported_and_invalid_observables_are_dropped_silently(threatscore, client):
    body = post(
        client, OBSERVE, [{"type": "sha256", "value": "ab" * 32}, {"type": "ip", "value": "999.1.1.1"}]
    )
    assert body == {"data": {}}
    assert threatscore.total_calls == 0
    assert post(client, "/refer/observables", [{"type": "url", "value": "https://x.example"}]) == {"data": []}


def test_one_failing_observable_keeps_the_others(threatscore, client):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer("198.51.100.8", answers.ERROR_500, status=500)
    threatscore.answer("bad.example", answers.RESULTS_UNDER_OTHER_KEY)
    body = post(
        client,
        OBSERVE,
        [
            {"type": "ip", "value": "198.51.100.7"},
            {"type": "ip", "value": "198.51.100.8"},
            {"type": "domain", "value": "bad.example"},
        ],
    )
    assert body["data"]["verdicts"]["count"] == 1
    assert body["data"]["judgements"]["count"] == 5
    assert body["errors"] == [
        {
            "type": "fatal",
            "code": "service unavailable",
            "message": "198.51.100.8: Threatscore is unavailable (HTTP 500)",
        },
        {
            "type": "fatal",
            "code": "key error",
            "message": "bad.example: Threatscore answered in an unexpected format (no 'scores', unknown keys: results)",
        },
    ]


def test_errors_alone_leave_data_out(threatscore, client):
    threatscore.answer("198.51.100.8", answers.ERROR_404_GENERIC, status=404)
    body = post(client, OBSERVE, [{"type": "ip", "value": "198.51.100.8"}])
    assert set(body) == {"errors"} and body["errors"][0]["code"] == "not found"


def test_output_follows_input_order_and_echoes_the_callers_values(threatscore, client):
    for index in range(5):
        threatscore.answer(f"198.51.100.{index}", answers.with_scores(0.9, aggregate=0.1 * index))
    threatscore.answer("xn--bcher-kva.example", answers.FOUR_ENGINES)
    threatscore.answer("2001:db8::1", answers.FOUR_ENGINES)
    sent = [{"type": "ip", "value": f"198.51.100.{index}"} for index in (3, 0, 4, 1, 2)]
    sent += [{"type": "domain", "value": "Bücher.Example."}, {"type": "IPv6", "value": "2001:DB8:0::1"}]
    body = post(client, "/deliberate/observables", sent)
    assert [v["observable"] for v in body["data"]["verdicts"]["docs"]] == [
        {"type": item["type"].lower(), "value": item["value"]} for item in sent
    ]


def test_equivalent_spellings_are_one_lookup_each_echoed(threatscore, client):
    threatscore.answer("2001:db8::1", answers.FOUR_ENGINES)
    body = post(
        client,
        OBSERVE,
        [
            {"type": "ipv6", "value": "2001:DB8::1"},
            {"type": "ipv6", "value": "2001:0db8:0000:0000:0000:0000:0000:0001"},
        ],
    )
    # One lookup; each spelling sent gets its own entities, with its own judgement ids.
    assert threatscore.raw_paths == ["/api/score/2001%3Adb8%3A%3A1"]
    assert [v["observable"]["value"] for v in body["data"]["verdicts"]["docs"]] == [
        "2001:DB8::1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",
    ]
    assert body["data"]["judgements"]["count"] == 10


def test_entities_limit_setting(threatscore, make_client):
    client = make_client(CTR_ENTITIES_LIMIT="2")
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    body = post(client, OBSERVE, [{"type": "ip", "value": "198.51.100.7"}])
    assert body["data"]["judgements"]["count"] == 2


def test_valid_days_setting(threatscore, make_client):
    client = make_client(CTIM_VALID_DAYS="1")
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    verdict = post(client, "/deliberate/observables", [{"type": "ip", "value": "198.51.100.7"}])["data"][
        "verdicts"
    ]["docs"][0]
    from datetime import datetime, timedelta

    end = datetime.fromisoformat(verdict["valid_time"]["end_time"])
    assert abs(end - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=1)


def test_refer(client):
    body = post(
        client,
        "/refer/observables",
        [
            {"type": "ip", "value": "198.51.100.7"},
            {"type": "domain", "value": "Bücher.example"},
            {"type": "ipv6", "value": "2001:db8::1"},
        ],
    )
    assert body["data"] == [
        {
            "id": "ref-threatscore-search-ip-198.51.100.7",
            "title": "Search for this IP",
            "description": "Look up this IP on Threatscore",
            "url": "https://ui.threatscore.test/search?query=198.51.100.7",
            "categories": ["Threatscore", "Search"],
        },
        {
            "id": "ref-threatscore-search-domain-B%C3%BCcher.example",
            "title": "Search for this domain",
            "description": "Look up this domain on Threatscore",
            "url": "https://ui.threatscore.test/search?query=xn--bcher-kva.example",
            "categories": ["Threatscore", "Search"],
        },
        {
            "id": "ref-threatscore-search-ipv6-2001%3Adb8%3A%3A1",
            "title": "Search for this IPv6",
            "description": "Look up this IPv6 on Threatscore",
            "url": "https://ui.threatscore.test/search?query=2001%3Adb8%3A%3A1",
            "categories": ["Threatscore", "Search"],
        },
    ]


def test_health_probes_threatscore_and_no_data_is_healthy(threatscore, client):
    threatscore.answer("127.0.0.100", answers.NO_DATA_NESTED_EMPTY)
    assert post(client, "/health") == {"data": {"status": "ok"}}
    assert threatscore.raw_paths == ["/api/score/127.0.0.100"]


def test_health_observable_is_configurable(threatscore, make_client):
    client = make_client(HEALTH_OBSERVABLE="192.0.2.55")
    assert post(client, "/health") == {"data": {"status": "ok"}}
    assert threatscore.raw_paths == ["/api/score/192.0.2.55"]


@pytest.mark.parametrize(
    ("status", "body", "cause"),
    [
        (500, answers.ERROR_500, "unavailable (HTTP 500)"),
        (404, answers.ERROR_404_GENERIC, "404"),
        (200, "garbage", "not JSON"),
    ],
)
def test_health_failure_says_what_failed(threatscore, client, status, body, cause):
    threatscore.answer("127.0.0.100", body, status=status)
    body = post(client, "/health")
    assert body["errors"][0]["code"] == "health check failed"
    assert body["errors"][0]["message"].startswith("Threatscore health check failed: ")
    assert cause in body["errors"][0]["message"]


def test_health_with_threatscore_down(make_client):
    from tests.conftest import free_port

    client = make_client(THREATSCORE_API_URL=f"http://127.0.0.1:{free_port()}")
    body = post(client, "/health")
    assert "refused the connection" in body["errors"][0]["message"]


def test_version(client):
    from relay.version import VERSION

    assert post(client, "/version") == {"version": VERSION}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", [OBSERVE, "/health", "/version", "/refer/observables"])
def test_other_methods_get_405_as_json(client, method, path):
    response = client.open(path, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json()["errors"][0]["message"] == f"Method {method} is not allowed: use POST"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/observe",
        "/observe/observables/extra",
        "/a/b/health",
        "/robots.txt",
        "/favicon.ico",
        "/respond/observables",
        "/%2e%2e/etc/passwd",
    ],
)
def test_unknown_paths_get_404_as_json(client, path):
    response = client.post(path, json=[])
    assert response.status_code == 404
    body = response.get_json()
    assert body["errors"][0]["code"] == "not found"


def test_invalid_body_is_a_clear_invalid_argument(threatscore, client):
    body = post(client, OBSERVE, data=b"{oops", content_type="application/json")
    assert body == {
        "errors": [
            {
                "type": "fatal",
                "code": "invalid argument",
                "message": 'Invalid JSON payload: expected a list of {"type": ..., "value": ...} objects',
            }
        ]
    }
    assert threatscore.total_calls == 0


def test_empty_list(client):
    assert post(client, OBSERVE, []) == {"data": {}}
    assert post(client, "/refer/observables", []) == {"data": []}


def test_an_answer_orjson_refuses_is_still_json():
    from relay.app import _json_response

    response = _json_response({"errors": [{"message": "lone surrogate \ud800 in a value"}]})
    assert response.get_json() == {"errors": [{"message": "lone surrogate \ud800 in a value"}]}


@pytest.mark.parametrize(
    ("setting", "looked_up"),
    [("Example.COM.", "/api/score/example.com"), ("2001:DB8::1", "/api/score/2001%3Adb8%3A%3A1")],
)
def test_a_domain_or_ipv6_health_observable_is_looked_up_in_its_canonical_form(
    threatscore, make_client, setting, looked_up
):
    client = make_client(HEALTH_OBSERVABLE=setting)
    assert post(client, "/health") == {"data": {"status": "ok"}}
    assert threatscore.raw_paths == [looked_up]
