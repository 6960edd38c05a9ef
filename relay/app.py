"""Routing: one Flask request in, one JSON response out, whatever happens.

`RelayApp` is built once per process (settings, the shared HTTP session, the
Threatscore client, the answer cache, the authenticator) and is the only thing
`main.py` calls.
"""

from __future__ import annotations

import json
import logging

import flask
import orjson
import requests
from werkzeug.exceptions import HTTPException

from relay.auth import Authenticator, build_authenticator
from relay.cache import AnswerCache, NoCache, build_cache
from relay.config import Settings
from relay.errors import (
    InternalError,
    InvalidArgumentError,
    MethodNotAllowedError,
    NotFoundError,
    RelayError,
    envelope,
)
from relay.handlers import Handlers, RequestContext
from relay.lookup import Lookup
from relay.schemas import parse_observables
from relay.threatscore import ScoreSource, ThreatscoreClient

logger = logging.getLogger(__name__)

OBSERVABLE_ENDPOINTS = ("observe/observables", "deliberate/observables", "refer/observables")
ENDPOINTS = (*OBSERVABLE_ENDPOINTS, "health", "version")
PUBLIC_ENDPOINTS = ("version",)  # everything else needs a valid token


def route_for(path: str) -> str | None:
    """The endpoint a path names, with or without the function's name in front.

    Google Cloud can hand the function `/relay/observe/observables`; locally
    it is `/observe/observables`.
    """
    segments = [segment for segment in path.split("/") if segment]
    for candidate in (segments, segments[1:]):
        route = "/".join(candidate)
        if route in ENDPOINTS:
            return route
    return None


# Connections kept open to Threatscore: enough for this many requests fanning out at once
# (beyond it, urllib3 opens extra connections, closes them after use and logs a warning).
REQUESTS_FANNING_OUT_AT_ONCE = 4


def make_session(settings: Settings) -> requests.Session:
    """The one HTTP session of the process: its connection pool is reused across invocations.

    No `Retry` on the adapter: the Threatscore client retries within each
    request's deadline (see `ThreatscoreClient`), and the authenticator's
    key fetches are not retried.
    """
    session = requests.Session()
    pool_size = max(10, settings.threatscore_max_concurrency * REQUESTS_FANNING_OUT_AT_ONCE)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class RelayApp:
    def __init__(
        self,
        settings: Settings,
        source: ScoreSource,
        authenticator: Authenticator,
        cache: AnswerCache | None = None,
    ):
        self.settings = settings
        lookup = Lookup(source, NoCache() if cache is None else cache, settings.threatscore_max_concurrency)
        self.handlers = Handlers(settings, lookup)
        self.authenticator = authenticator

    @classmethod
    def from_env(cls) -> RelayApp:
        """Reads the environment once; a bad setting stops the start-up with a clear error."""
        settings = Settings.from_env()
        session = make_session(settings)
        return cls(
            settings,
            ThreatscoreClient(settings, session),
            build_authenticator(settings, session),
            build_cache(settings),
        )

    def handle(self, request: flask.Request) -> flask.Response:
        route = route_for(request.path)
        if route is None:
            return _json_response(envelope([NotFoundError(f"No such endpoint: {request.path[:200]}")]), 404)
        if request.method != "POST":
            error = MethodNotAllowedError(f"Method {request.method} is not allowed: use POST")
            return _json_response(envelope([error]), 405, {"Allow": "POST"})
        try:
            return _json_response(self._dispatch(route, request))
        except RelayError as error:
            return _json_response(envelope([error]))
        except Exception:  # never a traceback or an HTML page to the caller
            logger.exception("unexpected failure while serving %s", route)
            return _json_response(envelope([InternalError("The relay failed unexpectedly")]))

    def _dispatch(self, route: str, request: flask.Request) -> dict:
        if route == "version":
            return self.handlers.version()
        caller = self.authenticator.authenticate(request.headers.get("Authorization"), _request_url(request))
        context = RequestContext.start(self.settings, caller.entities_limit)
        if route == "health":
            return self.handlers.health(context)
        observables = parse_observables(
            self._read_body(request), self.settings.max_observables, self.settings.max_value_length
        )
        if route == "observe/observables":
            return self.handlers.observe(observables, context)
        if route == "deliberate/observables":
            return self.handlers.deliberate(observables, context)
        return self.handlers.refer(observables, context)

    def _read_body(self, request: flask.Request) -> bytes:
        """The body, refused beyond the limit without reading it whole."""
        limit = self.settings.max_body_bytes
        too_large = InvalidArgumentError(f"Request body is larger than {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise too_large
        return body


def http_error_response(error: HTTPException) -> flask.Response:
    """Errors Flask raises before the function runs (e.g. /favicon.ico), as JSON envelopes."""
    status = error.code or 500
    if status == 404:
        relay_error: RelayError = NotFoundError("No such endpoint")
    elif status == 405:
        relay_error = MethodNotAllowedError("Method not allowed: use POST")
    elif status == 413:
        relay_error = InvalidArgumentError("Request body is too large")
    elif status < 500:
        relay_error = InvalidArgumentError(f"Bad request ({error.name})")
    else:
        relay_error = InternalError("The relay failed unexpectedly")
    return _json_response(envelope([relay_error]), status)


def _request_url(request: flask.Request) -> str:
    return request.base_url


def _json_response(body: dict, status: int = 200, headers: dict | None = None) -> flask.Response:
    return flask.Response(
        _to_json(body),
        status=status,
        headers=headers,
        mimetype="application/json",
    )


def _to_json(body: dict) -> bytes | str:
    """Compact UTF-8 JSON. orjson because serialising CTIM documents is most of the work
    of an answer that comes from the cache (several times the json module's speed)."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError: e.g. a lone surrogate, which json escapes
        return json.dumps(body, separators=(",", ":"))
