"""The Threatscore simulator (simulator/): both APIs, its catalogue, scripts, faults, XDR's side."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import requests

from relay.observables import recognised_type
from simulator import NOT_FOUND_BODY, V3_PATH, Scripted, ThreatscoreSimulator, fault_label
from simulator.answers import AnswersError, load_answers
from simulator.catalogue import ENTRIES
from simulator.xdr import XdrKeys
from tests.conftest import ACCESS_KEY, ACCESS_KEYS
from tests.ctim import check_answer
from tests.relay_process import ROOT, stop_process

OBSERVE = "/observe/observables"


@pytest.fixture(scope="module")
def catalogue_server():
    with ThreatscoreSimulator(catalogue=True) as simulator:
        yield simulator


@pytest.fixture
def catalogue(catalogue_server) -> ThreatscoreSimulator:
    catalogue_server.reset()
    return catalogue_server


def score_get(simulator: ThreatscoreSimulator, value: str) -> requests.Response:
    return requests.get(f"{simulator.url}/api/score/{requests.utils.quote(value, safe='')}", timeout=10)


def v3_post(simulator: ThreatscoreSimulator, value: object, **kwargs) -> requests.Response:
    return requests.post(f"{simulator.url}{V3_PATH}", json={"data": value}, timeout=10, **kwargs)


# --- the catalogue: each value in each API's own shape -----------------------------------


def test_the_catalogue_has_the_values_the_issue_asks_for(catalogue):
    score = {value: score_get(catalogue, value) for value in ("198.51.100.7", "203.0.113.5", "example.com")}
    assert score["198.51.100.7"].json()["scores"][0]["level"] == "malicious"
    assert score["203.0.113.5"].json()["scores"][0]["level"] == "suspicious"
    assert len(score["203.0.113.5"].json()["scores"][0]["details"]) >= 3  # several engines
    assert score["example.com"].json()["scores"][0]["level"] == "safe"

    v3 = {
        value: v3_post(catalogue, value).json()
        for value in ("http://phish.example/login", "44d88612fea8a8f36de82e1278abb02f", "sqlmap/1.7")
    }
    assert v3["http://phish.example/login"]["threatscore"]["categories"] == ["phishing"]
    assert v3["44d88612fea8a8f36de82e1278abb02f"]["threatscore"]["level"] == "malicious"
    assert v3["sqlmap/1.7"]["threatscore"]["indicators"]["scan"] is True


def test_unknown_refused_and_unavailable_values(catalogue):
    unknown = score_get(catalogue, "192.0.2.1")
    assert unknown.status_code == 404 and unknown.json() == NOT_FOUND_BODY
    assert v3_post(catalogue, "192.0.2.1").json() == {}
    for response in (score_get(catalogue, "192.0.2.66"), v3_post(catalogue, "192.0.2.66")):
        assert response.status_code == 403
        assert response.json()["error"]["message"] == "Blocked by IP filtering"
    assert score_get(catalogue, "192.0.2.50").status_code == 503
    assert v3_post(catalogue, "192.0.2.50").status_code == 503


def test_each_entry_answers_in_the_asking_apis_shape(catalogue):
    for entry in ENTRIES:
        score, v3 = score_get(catalogue, entry.value), v3_post(catalogue, entry.value)
        assert (score.status_code, v3.status_code) == (entry.score.status, entry.v3.status), entry.value
        if score.status_code == 200 and isinstance(score.json(), dict) and score.json().get("scores"):
            assert "threatscore" not in score.json()
        if v3.status_code == 200 and "threatscore" in v3.json():
            assert "scores" not in v3.json()
        # Every value names its type in the form the command line infers (or says it).
        assert entry.type == recognised_type(entry.value) or entry.type == "user_agent", entry.value


def test_the_v3_forms_the_reference_describes(catalogue):
    found = v3_post(catalogue, "198.51.100.7").json()
    assert set(found) == {"threatscore", "observable", "analysis", "tags"}  # found with every field
    assert set(found["threatscore"]) == {"value", "level", "categories", "indicators"}
    assert set(found["threatscore"]["indicators"]) == {"blocklist", "attack", "scan", "compromission"}
    assert set(found["observable"]) == {"geo", "as", "first_seen", "last_seen"}
    assert all(re.fullmatch(r"[0-9a-f]{32}", row["id"]) for row in found["analysis"])

    not_analysed = v3_post(catalogue, "192.0.2.2").json()
    assert "threatscore" in not_analysed and not {"value", "level"} & set(not_analysed["threatscore"])
    assert v3_post(catalogue, "192.0.2.3").status_code == 404  # "Observable not found"
    assert "threatscore" not in v3_post(catalogue, "192.0.2.4").json()

    epoch = v3_post(catalogue, "2001:db8::bad").json()
    assert isinstance(epoch["observable"]["last_seen"], int) and epoch["observable"]["last_seen"] > 10**12
    assert all(isinstance(row["date"], int) for row in epoch["analysis"])
    informational = v3_post(catalogue, "192.0.2.20").json()["analysis"]
    assert any("score" not in row for row in informational) and any("score" in row for row in informational)
    assert v3_post(catalogue, "192.0.2.21").json()["threatscore"]["level"] == "critical"


def test_the_score_api_quirks(catalogue):
    assert score_get(catalogue, "192.0.2.2").json()["scores"] == [[]]
    assert "scores" not in score_get(catalogue, "192.0.2.3").json()
    assert score_get(catalogue, "192.0.2.4").json() == []
    legacy = score_get(catalogue, "legacy.example").json()["scores"][0]
    assert legacy == {"date": "2018-10-12", "score": "0.99"}  # 2018: no details, no level
    negative = score_get(catalogue, "negative.example").json()["scores"][0]
    assert negative["score"] < 0 and any(engine["score"] is None for engine in negative["details"])


def test_the_relay_maps_the_catalogue_as_the_demo_shows(catalogue, make_client):
    client = make_client(THREATSCORE_API_URL=catalogue.url)
    values = ["198.51.100.7", "203.0.113.5", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
    body = [{"type": "ip", "value": value} for value in values]
    body += [{"type": "domain", "value": "example.com"}, {"type": "domain", "value": "negative.example"}]

    answer = client.post(OBSERVE, json=body).get_json()

    check_answer(answer)
    verdicts = {
        doc["observable"]["value"]: doc["disposition_name"] for doc in answer["data"]["verdicts"]["docs"]
    }
    assert verdicts == {
        "198.51.100.7": "Malicious",
        "203.0.113.5": "Suspicious",
        "example.com": "Clean",
        "negative.example": "Clean",
    }
    assert "errors" not in answer  # the no-data forms are no data


# --- scripted answers, as the tests use it -----------------------------------------------


def test_without_the_catalogue_every_value_is_no_data(threatscore):
    assert score_get(threatscore, "198.51.100.7").json() == NOT_FOUND_BODY
    response = v3_post(threatscore, "198.51.100.7")
    assert response.status_code == 200 and response.json() == {}


def test_a_script_answers_on_both_apis_and_both_count(threatscore):
    threatscore.answer("203.0.113.9", {"anything": True}, status=201)

    assert score_get(threatscore, "203.0.113.9").json() == {"anything": True}
    reply = v3_post(
        threatscore, "203.0.113.9", headers={"User-Agent": "probe/1", "Authorization": "Bearer k"}
    )
    assert (reply.status_code, reply.json()) == (201, {"anything": True})
    assert threatscore.calls_for("203.0.113.9") == 2 and threatscore.total_calls == 2
    get, post = threatscore.requests_seen
    assert (get.method, get.path, get.body) == ("GET", "/api/score/203.0.113.9", None)
    assert (post.method, post.path, post.body) == ("POST", V3_PATH, {"data": "203.0.113.9"})
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["User-Agent"] == "probe/1" and post.headers["Authorization"] == "Bearer k"
    assert threatscore.user_agents[1] == "probe/1"


def test_a_script_takes_precedence_over_the_catalogue(catalogue):
    catalogue.answer("198.51.100.7", {"scores": []})
    assert score_get(catalogue, "198.51.100.7").json() == {"scores": []}
    catalogue.reset()
    assert score_get(catalogue, "198.51.100.7").json()["scores"][0]["level"] == "malicious"


def test_answers_in_turn_across_both_apis(threatscore):
    threatscore.answer_in_turn("192.0.2.7", Scripted(status=503, body=""), Scripted(body={"n": 2}))
    assert score_get(threatscore, "192.0.2.7").status_code == 503
    assert v3_post(threatscore, "192.0.2.7").json() == {"n": 2}
    assert score_get(threatscore, "192.0.2.7").json() == {"n": 2}  # the last reply repeats


def test_a_fallback_may_answer_per_api(threatscore):
    threatscore.fallback(lambda value, api: Scripted(body={"api": api, "value": value}))
    assert score_get(threatscore, "a.example").json() == {"api": "score", "value": "a.example"}
    assert v3_post(threatscore, "a.example").json() == {"api": "v3", "value": "a.example"}
    threatscore.fallback(lambda value: Scripted(body={"one": value}))
    assert v3_post(threatscore, "b.example").json() == {"one": "b.example"}


@pytest.mark.parametrize("body", [{"value": "x"}, {"data": 5}, {"data": ""}, ["x"], "not json"])
def test_a_v3_request_without_a_value_is_a_400(threatscore, body):
    if body == "not json":
        response = requests.post(f"{threatscore.url}{V3_PATH}", data="{", timeout=10)
    else:
        response = requests.post(f"{threatscore.url}{V3_PATH}", json=body, timeout=10)
    assert response.status_code == 400
    assert threatscore.total_calls == 0


def test_other_paths_are_404_not_found(threatscore):
    response = requests.get(f"{threatscore.url}/api/other", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["message"] == "Not Found"
    assert requests.get(f"{threatscore.url}/.well-known/jwks", timeout=10).status_code == 404  # no keys given


def test_injected_faults_are_reproducible_with_a_seed(threatscore):
    faults = [Scripted(status=503, body="", label="503"), Scripted(status=500, body="")]

    def statuses() -> list[int]:
        threatscore.reset()
        threatscore.inject_faults(0.5, faults, seed=7)
        return [score_get(threatscore, f"192.0.2.{n}").status_code for n in range(40)]

    first, second = statuses(), statuses()
    assert first == second
    assert {503, 500, 404} <= set(first)
    assert sum(threatscore.faults_injected.values()) == sum(1 for status in first if status != 404)
    assert fault_label(faults[1]) == "HTTP 500" and fault_label(Scripted(delay=2)) == "delay 2s"


# --- the answers folder ----------------------------------------------------------------


def test_a_folder_of_answers_replaces_the_catalogue(tmp_path):
    (tmp_path / "one.json").write_text(
        json.dumps(
            {"observable": "192.0.2.99", "status": 200, "body": {"threatscore": {"value": 0.1}}, "api": "v3"}
        )
    )
    (tmp_path / "many.json").write_text(
        json.dumps(
            [
                {
                    "observable": "x.example",
                    "request": {"path": "/api/score/x.example"},
                    "body": {"scores": []},
                },
                {
                    "observable": "both.example",
                    "status": 502,
                    "body": "<html>down</html>",
                    "content_type": "text/html",
                },
            ]
        )
    )
    with ThreatscoreSimulator(catalogue=load_answers(tmp_path)) as simulator:
        assert v3_post(simulator, "192.0.2.99").json() == {"threatscore": {"value": 0.1}}
        assert score_get(simulator, "192.0.2.99").status_code == 404  # v3 only
        assert score_get(simulator, "x.example").json() == {"scores": []}
        for response in (score_get(simulator, "both.example"), v3_post(simulator, "both.example")):
            assert response.status_code == 502 and response.text == "<html>down</html>"
        assert score_get(simulator, "198.51.100.7").status_code == 404  # not the catalogue's


@pytest.mark.parametrize(
    "content",
    [
        '{"observable": "x"}',
        "[1]",
        "{not json",
        '{"observable": "x", "body": {}, "status": 99}',
        '{"observable": "x", "body": {}, "api": "v2"}',
    ],
)
def test_a_bad_answers_file_is_refused_with_its_name(tmp_path, content):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(AnswersError, match="bad.json"):
        load_answers(tmp_path)


# --- python -m simulator, and XDR's side ---------------------------------------------


def start_simulator_process(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", "0", "--quiet", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_line = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", first_line)
    if not found:
        stop_process(process)
        pytest.fail(f"no URL printed: {first_line!r} {process.stderr.read()}")
    return process, found.group(0)


def test_python_m_simulator_prints_its_url_serves_the_catalogue_and_stops_on_sigterm(tmp_path):
    process, url = start_simulator_process("--key-file", str(tmp_path / "key.pem"))
    try:
        answer = requests.post(f"{url}{V3_PATH}", json={"data": "198.51.100.7"}, timeout=10).json()
        assert answer["threatscore"]["level"] == "malicious"
        assert requests.get(f"{url}/.well-known/jwks", timeout=10).json()["keys"][0]["alg"] == "RS256"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        stop_process(process)
        process.stdout.close()
        process.stderr.close()


def test_the_key_file_is_made_once_owner_only_and_shared(tmp_path):
    key_file = tmp_path / "sub" / "key.pem"
    first = XdrKeys.load_or_create(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert XdrKeys.load_or_create(key_file).kid == first.kid
    assert list(key_file.parent.iterdir()) == [key_file]  # no partial file left


def test_xdr_token_carries_what_xdr_puts_in_a_module_token(tmp_path):
    key_file = tmp_path / "key.pem"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "xdr-token",
            "--aud",
            "http://127.0.0.1:9/",
            "--limit",
            "3",
            "--access-key",
            ACCESS_KEY,
            "--simulator",
            "127.0.0.1:9999",
            "--key-file",
            str(key_file),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    keys = XdrKeys.load_or_create(key_file)
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT", "kid": keys.kid}
    public = jwt.PyJWK(keys.jwks()["keys"][0]).key
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="http://127.0.0.1:9/")
    assert claims["jwks_host"] == "127.0.0.1:9999" and claims["CTR_ENTITIES_LIMIT"] == 3
    assert claims["ACCESS_KEY"] == ACCESS_KEY  # the module's custom_ACCESS_KEY
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.process
def test_the_relay_in_jwks_mode_accepts_the_simulators_tokens(tmp_path: Path, launch_relay, http):
    keys = XdrKeys.load_or_create(tmp_path / "key.pem")
    with ThreatscoreSimulator(catalogue=True, xdr_keys=keys) as simulator:
        relay = launch_relay(
            THREATSCORE_API_URL=simulator.url,
            RELAY_AUTH="jwks",
            RELAY_JWKS_HOSTS=simulator.host_port,
            RELAY_JWKS_URL_TEMPLATE="http://{host}/.well-known/jwks",
            RELAY_ACCESS_KEYS=ACCESS_KEYS,
        )
        token = keys.token(
            jwks_host=simulator.host_port, audience=relay.url, entities_limit=1, access_key=ACCESS_KEY
        )
        body = [{"type": "ip", "value": "203.0.113.5"}]

        accepted = http.post(f"{relay.url}{OBSERVE}", json=body, headers={"Authorization": f"Bearer {token}"})
        refused = http.post(f"{relay.url}{OBSERVE}", json=body)

    answer = accepted.json()
    assert answer["data"]["verdicts"]["docs"][0]["disposition_name"] == "Suspicious"
    assert answer["data"]["judgements"]["count"] == 1  # the token's CTR_ENTITIES_LIMIT
    assert refused.json()["errors"][0]["code"] == "authorization error"
