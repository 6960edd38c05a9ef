"""A fake Threatscore: a real HTTP server on 127.0.0.1 (pytest-httpserver, threaded).

It speaks both APIs: `GET /api/score/{value}` and
`POST /api/v3/observables/search/by-value` with `{"data": value}`. Tests
script what each value answers (`answer`, or `answer_in_turn` for a different
reply on each call): a script's body is returned whichever API asks. They
read back what the upstream really received (`calls_for`, `total_calls`,
`peak_in_flight`, `raw_paths`, `requests_seen`). Unknown values get the 404
"Observable not found" that means "no data", or what `fallback` says. `inject_faults` makes a share of all requests fail at random
(load tests).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

SCORE_PREFIX = "/api/score/"
V3_SEARCH_PATH = "/api/v3/observables/search/by-value"
NOT_FOUND_BODY = {"error": {"type": "Client Error", "code": "404", "message": "Observable not found"}}


@dataclass
class Scripted:
    status: int = 200
    body: object = None  # JSON-encoded unless bytes/str
    headers: dict | None = None
    delay: float = 0.0
    content_type: str = "application/json"
    # "reset": close mid-body; "trickle": one byte every `trickle_every` s;
    # "chunked": the whole body at once but without a Content-Length.
    fault: str | None = None
    trickle_every: float = 0.5
    label: str | None = None  # names the fault in reports

    def response(self) -> Response:
        if self.delay:
            time.sleep(self.delay)
        payload = self.body if isinstance(self.body, (bytes, str)) else json.dumps(self.body)
        payload = payload.encode() if isinstance(payload, str) else payload
        if self.fault == "reset":
            return Response(
                self._reset_after(payload[:10]),
                status=self.status,
                headers={"Content-Length": str(len(payload) + 1000)},
                content_type=self.content_type,
            )
        if self.fault == "trickle":
            return Response(self._trickle(payload), status=self.status, content_type=self.content_type)
        if self.fault == "chunked":
            return Response(iter([payload]), status=self.status, content_type=self.content_type)
        return Response(payload, status=self.status, headers=self.headers, content_type=self.content_type)

    @staticmethod
    def _reset_after(first: bytes):
        yield first
        raise ConnectionResetError("the fake drops the connection mid-body")

    def _trickle(self, payload: bytes):
        for index in range(len(payload)):
            time.sleep(self.trickle_every)
            yield payload[index : index + 1]


class FakeThreatscore:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0, ssl_context=None):
        self.server = HTTPServer(host=host, port=port, threaded=True, ssl_context=ssl_context)
        self.latency = latency
        self._scripts: dict[str, Scripted] = {}
        self._fallback: Callable[[str], Scripted] | None = None
        self._fault_rate = 0.0
        self._faults: Sequence[Scripted] = ()
        self._random = random.Random(0)
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()  # by the injected fault's label
        self._in_turn: dict[str, list[Scripted]] = {}
        self._in_flight = 0
        self._peak_in_flight = 0
        self.raw_paths: list[str] = []
        self.user_agents: list[str] = []
        # (method, path, the body parsed as JSON or None, headers): every request received.
        self.requests_seen: list[tuple[str, str, object, dict[str, str]]] = []

    # --- lifecycle ---
    def start(self) -> FakeThreatscore:
        self.server.expect_request(re.compile(r"^/.*")).respond_with_handler(self._handle_in_flight)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server.is_running():
            self.server.stop()

    @property
    def url(self) -> str:
        scheme = "https" if self.server.ssl_context else "http"
        return f"{scheme}://{self.server.host}:{self.server.port}"

    # --- scripting ---
    def answer(self, value: str, body: object = None, status: int = 200, **options) -> None:
        """What `GET /api/score/{value}` and a v3 search for `value` answer from now on."""
        with self._lock:
            self._in_turn.pop(value, None)
            self._scripts[value] = Scripted(status=status, body=body, **options)

    def fallback(self, scripted_for: Callable[[str], Scripted] | None) -> None:
        """What values without a script answer from now on (None: 404 "Observable not found")."""
        with self._lock:
            self._fallback = scripted_for

    def inject_faults(self, rate: float, faults: Sequence[Scripted], seed: int = 0) -> None:
        """From now on, a `rate` share of all requests answers one of `faults`, chosen at random."""
        with self._lock:
            self._fault_rate = rate
            self._faults = tuple(faults)
            self._random = random.Random(seed)

    def answer_in_turn(self, value: str, *replies: Scripted) -> None:
        """Call n for `value` gets `replies[n-1]`; the last reply repeats. E.g. 503, 503, then 200."""
        with self._lock:
            self._scripts.pop(value, None)
            self._in_turn[value] = list(replies)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._fallback = None
            self._fault_rate = 0.0
            self._faults = ()
            self.faults_injected.clear()
            self._in_turn.clear()
            self._calls.clear()
            self._peak_in_flight = 0
            self.raw_paths.clear()
            self.user_agents.clear()
            self.requests_seen.clear()

    # --- observing ---
    def calls_for(self, value: str) -> int:
        with self._lock:
            return self._calls[value]

    @property
    def total_calls(self) -> int:
        with self._lock:
            return sum(self._calls.values())

    @property
    def peak_in_flight(self) -> int:
        """The most calls it was answering at the same time since the last reset."""
        with self._lock:
            return self._peak_in_flight

    def _handle_in_flight(self, request: Request) -> Response:
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            return self._handle(request)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handle(self, request: Request) -> Response:
        raw_path = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
        body = request.get_data()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            self.raw_paths.append(raw_path)
            self.user_agents.append(request.headers.get("User-Agent", ""))
            self.requests_seen.append((request.method, request.path, parsed, dict(request.headers)))
            value = self._value_asked(request.method, raw_path, parsed)
            if value is None:
                return Response(
                    json.dumps({"error": {"type": "Client Error", "code": "404", "message": "Not Found"}}),
                    status=404,
                    content_type="application/json",
                )
            self._calls[value] += 1
            in_turn = self._in_turn.get(value)
            if in_turn:
                scripted = in_turn[min(self._calls[value], len(in_turn)) - 1]
            else:
                scripted = self._scripts.get(value)
            if self._faults and self._random.random() < self._fault_rate:
                scripted = self._random.choice(self._faults)
                self.faults_injected[fault_label(scripted)] += 1
            elif scripted is None and self._fallback is not None:
                scripted = self._fallback(value)
        if self.latency:
            time.sleep(self.latency)
        if scripted is None:
            return Response(json.dumps(NOT_FOUND_BODY), status=404, content_type="application/json")
        return scripted.response()

    @staticmethod
    def _value_asked(method: str, raw_path: str, parsed: object) -> str | None:
        """The value a request asks about, whichever API it speaks; None for a wrong request."""
        if method == "GET" and raw_path.startswith(SCORE_PREFIX):
            return unquote(raw_path[len(SCORE_PREFIX) :])
        if method == "POST" and raw_path == V3_SEARCH_PATH and isinstance(parsed, dict):
            value = parsed.get("data")
            return value if isinstance(value, str) else None
        return None


def fault_label(scripted: Scripted) -> str:
    """A short name for a scripted fault, for reports: `reset`, `HTTP 503`, `delay 2s`..."""
    if scripted.label:
        return scripted.label
    if scripted.fault:
        return scripted.fault
    if scripted.delay:
        return f"delay {scripted.delay:g}s"
    return f"HTTP {scripted.status}"
