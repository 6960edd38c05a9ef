"""Both backends end to end: the relay as a real functions-framework process, the fake
Threatscore on 127.0.0.1 answering whichever API is asked."""

from __future__ import annotations

import pytest

from tests import answers
from tests.contract import check_conforms
from tests.ctim import check_answer

pytestmark = pytest.mark.process

OBSERVE = "/observe/observables"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def posted(http, relay, path, payload=None) -> dict:
    response = http.post(relay.url + path, json=payload, timeout=30)
    assert response.status_code == 200
    body = response.json()
    check_answer(body)
    check_conforms(path, "POST", 200, body, response.headers)  # what openapi.yaml promises
    return body


def test_v3_end_to_end(threatscore, launch_relay, http):
    relay = launch_relay(THREATSCORE_API="v3")
    threatscore.answer("https://phish.example/Login", answers.V3_FOUND)
    threatscore.answer(SHA256, answers.V3_EPOCH_AND_ODD_LEVEL)
    threatscore.answer("Mozilla/5.0 EvilBot", answers.V3_NOT_ANALYSED_YET)
    payload = [
        {"type": "URL", "value": "HTTPS://PHISH.example/Login"},
        {"type": "sha256", "value": SHA256.upper()},
        {"type": "user_agent", "value": "Mozilla/5.0 EvilBot"},
        {"type": "email", "value": "someone@example.com"},  # not a Threatscore type: dropped
    ]
    body = posted(http, relay, OBSERVE, payload)
    data = body["data"]
    assert [v["observable"]["value"] for v in data["verdicts"]["docs"]] == [
        "HTTPS://PHISH.example/Login",
        SHA256.upper(),
    ]
    assert [v["disposition_name"] for v in data["verdicts"]["docs"]] == ["Malicious", "Suspicious"]
    assert data["indicators"]["count"] == 5 and data["sightings"]["count"] == 2
    assert sorted(sent["data"] for _, _, sent, _ in threatscore.requests_seen) == sorted(
        ["https://phish.example/Login", SHA256, "Mozilla/5.0 EvilBot"]
    )
    assert {(method, path) for method, path, _, _ in threatscore.requests_seen} == {
        ("POST", "/api/v3/observables/search/by-value")
    }

    refer = posted(http, relay, "/refer/observables", payload[:3])
    assert [entry["url"] for entry in refer["data"]][
        1
    ] == f"https://ui.threatscore.test/search?query={SHA256}"
    assert posted(http, relay, "/health") == {"data": {"status": "ok"}}


def test_v3_refusal_end_to_end(threatscore, launch_relay, http):
    relay = launch_relay(THREATSCORE_API="v3", THREATSCORE_API_KEY="k3y-never-shown")
    threatscore.fallback(lambda _value: answers_refusal())
    body = posted(http, relay, "/health")
    assert body["errors"][0]["code"] == "health check failed"
    assert 'HTTP 403: "Blocked by IP filtering"' in body["errors"][0]["message"]
    body = posted(http, relay, OBSERVE, [{"type": "md5", "value": "d41d8cd98f00b204e9800998ecf8427e"}])
    assert body["errors"][0]["code"] == "authorization error"
    assert all(
        headers["Authorization"] == "Bearer k3y-never-shown" for *_, headers in threatscore.requests_seen
    )
    relay.stop()
    assert "k3y-never-shown" not in relay.stderr_text() + "\n".join(relay.stdout_lines())


def answers_refusal():
    from simulator import Scripted

    return Scripted(status=403, body=answers.REFUSED_403_TEXT, content_type="text/plain")


def test_score_end_to_end(threatscore, launch_relay, http):
    relay = launch_relay(THREATSCORE_API="score")
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    threatscore.answer("old.example", {"scores": [{"date": "2018-10-12", "score": "0.99"}]})
    payload = [
        {"type": "ip", "value": "198.51.100.7"},
        {"type": "domain", "value": "old.example"},
        {"type": "url", "value": "https://phish.example/"},  # not a type of the score API: dropped
    ]
    body = posted(http, relay, OBSERVE, payload)
    assert "errors" not in body
    assert list(body["data"]) == ["verdicts", "judgements"]
    assert body["data"]["judgements"]["count"] == 5 + 1
    assert sorted(threatscore.raw_paths) == ["/api/score/198.51.100.7", "/api/score/old.example"]
    assert posted(http, relay, "/health") == {"data": {"status": "ok"}}


def test_an_api_key_over_plain_http_stops_the_start_up(threatscore, launch_relay):
    with pytest.raises(RuntimeError, match="exited"):
        launch_relay(THREATSCORE_API_URL="http://203.0.113.80", THREATSCORE_API_KEY="k3y-never-shown")
