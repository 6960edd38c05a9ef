"""The relay as a real `functions-framework --target=relay` process, called over HTTP."""

import subprocess

from tests import answers
from tests.conftest import MAIN, ROOT, VENV_BIN
from tests.ctim import check_answer


def test_real_process_serves_observe_over_http(threatscore, start_relay_process, http):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES)
    base_url = start_relay_process()
    response = http.post(
        f"{base_url}/observe/observables", json=[{"type": "ip", "value": "198.51.100.7"}], timeout=10
    )
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    body = response.json()
    check_answer(body)
    assert body["data"]["verdicts"]["docs"][0]["disposition_name"] == "Suspicious"
    assert body["data"]["judgements"]["count"] == 5
    # Google's path form, and the framework's own routes, answer JSON too.
    assert http.post(f"{base_url}/relay/version", timeout=10).json()["version"]
    favicon = http.get(f"{base_url}/favicon.ico", timeout=10)
    assert favicon.status_code == 404 and favicon.json()["errors"][0]["code"] == "not found"


def test_a_bad_setting_stops_start_up_with_a_clear_error(relay_env):
    result = subprocess.run(
        [str(VENV_BIN / "functions-framework"), "--target=relay", f"--source={MAIN}", "--port=1"],
        cwd=ROOT,
        env={**relay_env, "CTR_ENTITIES_LIMIT": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ConfigError: CTR_ENTITIES_LIMIT: invalid value" in result.stderr
