"""The load test's checks, and a short run of it (`make loadtest` runs the long one)."""

from __future__ import annotations

import logging

import pytest

from loadtest.run import LoadConfig, account, run_load

pytestmark = pytest.mark.process

SENT = [{"type": "ip", "value": "198.18.0.1"}, {"type": "ipv6", "value": "2001:DB8::1"}]
VERDICT = {
    "type": "verdict",
    "observable": {"type": "ip", "value": "198.18.0.1"},
    "disposition": 1,
    "disposition_name": "Clean",
    "valid_time": {"start_time": "2021-06-14T08:30:05.120Z", "end_time": "2021-06-21T08:30:05.120Z"},
}


def error(message: str, code: str = "timeout") -> dict:
    return {"type": "fatal", "code": code, "message": message}


def test_every_observable_accounted_for_passes():
    answer = {"data": {"verdicts": {"count": 1, "docs": [VERDICT]}}, "errors": [error("2001:DB8::1: slow")]}
    assert account(SENT, answer) == (1, {"timeout": 1}, [])


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"data": {"verdicts": {"count": 1, "docs": [VERDICT]}}}, "'2001:DB8::1' came back 0 times"),
        (
            {"data": {"verdicts": {"count": 1, "docs": [VERDICT]}}, "errors": [error("2001:DB8::1: ")]},
            "an error without a cause",
        ),
        (
            {
                "data": {"verdicts": {"count": 1, "docs": [VERDICT]}},
                "errors": [error("2001:DB8::1: x", "internal error")],
            },
            "an error without a cause",
        ),
        (
            {"errors": [error("198.18.0.1: x"), error("198.18.0.1: y"), error("2001:DB8::1: z")]},
            "came back 2 times",
        ),
        ({"errors": [error("elsewhere: x")]}, "names no observable sent"),
        ({"data": {"verdicts": {"count": 2, "docs": [VERDICT]}}}, "not valid CTIM"),
    ],
)
def test_a_lost_or_unexplained_observable_is_a_problem(answer, problem):
    _, _, problems = account(SENT, answer)
    assert any(problem in found for found in problems), problems


def test_a_short_load_run_meets_every_check(tmp_path):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake's access log: 1500 lines
    report = run_load(LoadConfig(requests=500, clients=8), log_dir=tmp_path)
    assert report.failures() == [], report.render()
    assert report.observables_sent == 1500 and sum(report.faults_injected.values()) > 0


def test_a_short_run_on_three_instances_with_redis_restarted_midway_meets_every_check(tmp_path):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    report = run_load(LoadConfig(requests=300, clients=8, instances=3, redis=True), log_dir=tmp_path)
    assert report.failures() == [], report.render()
    assert report.notes[0].startswith("Redis killed after") and report.notes[1].startswith("Redis back")
    assert report.observables_sent == 900 and report.request_log_lines == 300
