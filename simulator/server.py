"""The simulator's HTTP server: a real, threaded werkzeug server on a local port.

Both Threatscore APIs are served (see ../shared reference, sections 1 and 2):

- score: `GET /api/score/{percent-encoded value}`
- v3: `POST /api/v3/observables/search/by-value` with the JSON body `{"data": value}`

and, for local `jwks` mode, XDR's key set at `/.well-known/jwks` (when the
server is given an `XdrKeys`).

Tests script what each value answers (`answer`, or `answer_in_turn` for a
different reply on each call); a script answers on both APIs, its body as
given. They read back what the server really received (`calls_for`,
`total_calls`, `peak_in_flight`, `raw_paths`, `user_agents`,
`requests_seen`). A value without a script answers from the catalogue (or
the `answers` folder) when the catalogue is on, else "no data": the score
API's 404 "Observable not found", v3's `{}`. `inject_faults` makes a share
of all requests fail at random (load tests, `--fault-rate`).
"""

from __future__ import annotations

import inspect
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

from werkzeug import Request, Response
from werkzeug.serving import WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from simulator.xdr import XdrKeys

SCORE_API = "score"
V3_API = "v3"
SCORE_PREFIX = "/api/score/"
V3_PATH = "/api/v3/observables/search/by-value"
JWKS_PATH = "/.well-known/jwks"

NOT_FOUND_BODY = {"error": {"type": "Client Error", "code": "404", "message": "Observable not found"}}
NO_DATA_V3_BODY: dict = {}  # no `threatscore` key: not in Threatscore's database
NO_SUCH_PATH_BODY = {"error": {"type": "Client Error", "code": "404", "message": "Not Found"}}
BAD_REQUEST_BODY = {"error": {"type": "Client Error", "code": "400", "message": "Bad Request"}}


@dataclass
class Scripted:
    """One reply: a status, a body (JSON-encoded unless bytes/str) and how it is delivered."""

    status: int = 200
    body: object = None
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
        raise ConnectionResetError("the simulator drops the connection mid-body")

    def _trickle(self, payload: bytes):
        for index in range(len(payload)):
            time.sleep(self.trickle_every)
            yield payload[index : index + 1]


def fault_label(scripted: Scripted) -> str:
    """A short name for a scripted fault, for reports: `reset`, `HTTP 503`, `delay 2s`..."""
    if scripted.label:
        return scripted.label
    if scripted.fault:
        return scripted.fault
    if scripted.delay:
        return f"delay {scripted.delay:g}s"
    return f"HTTP {scripted.status}"


# What `--fault-rate` injects when nothing else is said.
DEFAULT_FAULTS = (
    Scripted(status=503, body="", label="503"),
    Scripted(
        status=500,
        body={"error": {"type": "Server Error", "code": "500", "message": "Internal Error"}},
        label="500 JSON",
    ),
    Scripted(
        status=502,
        body="<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>",
        content_type="text/html",
        label="502 HTML",
    ),
    Scripted(status=429, body="", headers={"Retry-After": "1"}, label="429"),
    Scripted(body={"threatscore": {"value": 0.5}}, fault="reset", label="reset mid-body"),
)


class SeenRequest(NamedTuple):
    """One request as the server received it."""

    method: str
    path: str  # raw, as sent (percent-encoding kept)
    body: Any  # the parsed JSON body, or None (no body, or not JSON)
    headers: dict[str, str]


# A catalogue answers a value for one API: a reply, or None (not in it).
Catalogue = Callable[[str, str], "Scripted | None"]


class ThreatscoreSimulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        ssl_context=None,
        catalogue: bool | Catalogue = False,
        xdr_keys: XdrKeys | None = None,
        log_requests: bool = False,
    ):
        self.host = host
        self.port = port
        self.latency = latency
        self.ssl_context = ssl_context
        self.xdr_keys = xdr_keys
        self.log_requests = log_requests
        if catalogue is True:
            from simulator.catalogue import catalogue_answer

            catalogue = catalogue_answer
        self._catalogue: Catalogue | None = catalogue or None
        self._server = None
        self._thread: threading.Thread | None = None
        self._scripts: dict[str, Scripted] = {}
        self._fallback: Callable[[str, str], Scripted | None] | None = None
        self._fault_rate = 0.0
        self._faults: Sequence[Scripted] = ()
        self._random = random.Random(0)  # noqa: S311 - reproducible faults, nothing secret
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()  # by the injected fault's label
        self._in_turn: dict[str, list[Scripted]] = {}
        self._in_flight = 0
        self._peak_in_flight = 0
        self.raw_paths: list[str] = []
        self.user_agents: list[str] = []
        self.requests_seen: list[SeenRequest] = []

    # --- lifecycle ---
    def start(self) -> ThreatscoreSimulator:
        self._server = make_server(
            self.host,
            self.port,
            self._wsgi,
            threaded=True,
            ssl_context=self.ssl_context,
            request_handler=WSGIRequestHandler if self.log_requests else _UnloggedRequestHandler,
        )
        self.port = self._server.port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="threatscore-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None

    def is_running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> ThreatscoreSimulator:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def host_port(self) -> str:
        """`host:port`, as a token's `jwks_host` names this server."""
        return f"{self.host}:{self.port}"

    # --- scripting ---
    def answer(self, value: str, body: object = None, status: int = 200, **options) -> None:
        """What both APIs answer for `value` from now on."""
        with self._lock:
            self._in_turn.pop(value, None)
            self._scripts[value] = Scripted(status=status, body=body, **options)

    def answer_in_turn(self, value: str, *replies: Scripted) -> None:
        """Call n for `value` gets `replies[n-1]`; the last reply repeats. E.g. 503, 503, then 200."""
        with self._lock:
            self._scripts.pop(value, None)
            self._in_turn[value] = list(replies)

    def fallback(self, scripted_for: Callable[..., Scripted | None] | None) -> None:
        """What values without a script answer from now on (None: the catalogue, or "no data").

        `scripted_for(value)`, or `scripted_for(value, api)` with api `"score"` or `"v3"`.
        """
        if scripted_for is not None and len(inspect.signature(scripted_for).parameters) < 2:
            one_argument = scripted_for

            def scripted_for(value: str, _api: str) -> Scripted | None:
                return one_argument(value)

        with self._lock:
            self._fallback = scripted_for

    def inject_faults(self, rate: float, faults: Sequence[Scripted] = DEFAULT_FAULTS, seed: int = 0) -> None:
        """From now on, a `rate` share of all requests answers one of `faults`, chosen at random."""
        with self._lock:
            self._fault_rate = rate
            self._faults = tuple(faults)
            self._random = random.Random(seed)  # noqa: S311 - reproducible faults, nothing secret

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
        """Lookups of `value` on either API."""
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

    # --- serving ---
    def _wsgi(self, environ, start_response):
        request = Request(environ)
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            response = self._handle(request)
        finally:
            with self._lock:
                self._in_flight -= 1
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        raw_path = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
        body = _json_body(request)
        with self._lock:
            self.raw_paths.append(raw_path)
            self.user_agents.append(request.headers.get("User-Agent", ""))
            self.requests_seen.append(SeenRequest(request.method, raw_path, body, dict(request.headers)))
        if request.method == "GET" and raw_path.startswith(SCORE_PREFIX):
            return self._look_up(unquote(raw_path[len(SCORE_PREFIX) :]), SCORE_API)
        path = raw_path.split("?", 1)[0]
        if request.method == "POST" and path == V3_PATH:
            if not isinstance(body, dict) or not isinstance(body.get("data"), str) or not body["data"]:
                return _json_response(BAD_REQUEST_BODY, 400)
            return self._look_up(body["data"], V3_API)
        if request.method == "GET" and path == JWKS_PATH and self.xdr_keys is not None:
            return _json_response(self.xdr_keys.jwks())
        return _json_response(NO_SUCH_PATH_BODY, 404)

    def _look_up(self, value: str, api: str) -> Response:
        with self._lock:
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
                scripted = self._fallback(value, api)
            catalogue = self._catalogue
        if scripted is None and catalogue is not None:
            scripted = catalogue(value, api)
        if self.latency:
            time.sleep(self.latency)
        if scripted is None:
            if api == V3_API:
                return _json_response(NO_DATA_V3_BODY)
            return _json_response(NOT_FOUND_BODY, 404)
        return scripted.response()


class _UnloggedRequestHandler(WSGIRequestHandler):
    """No access-log line per request (tests and benchmarks make thousands)."""

    def log_request(self, *args, **kwargs) -> None:
        pass


def _json_body(request: Request) -> Any:
    if request.method != "POST":
        return None
    try:
        return json.loads(request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError):
        return None


def _json_response(body: Mapping | list, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
