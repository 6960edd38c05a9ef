"""Routing: one Flask request in, one JSON response out, whatever happens.

`RelayApp` is built once per process (settings, the shared HTTP session, the
Threatscore client, the answer cache, the authenticator) and is the only thing
`main.py` calls.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import sys
import uuid
from urllib.parse import urlsplit

import flask
import orjson
import requests
from werkzeug.exceptions import ClientDisconnected, HTTPException

from relay.auth import Authenticator, build_authenticator
from relay.bounded_fetch import bounded_session
from relay.breaker import Breaker, build_breaker
from relay.cache import AnswerCache, NoCache, SharedFlight, build_cache, build_shared_flight
from relay.config import ConfigError, Settings
from relay.errors import (
    InternalError,
    InvalidArgumentError,
    MethodNotAllowedError,
    NotFoundError,
    RelayError,
    envelope,
)
from relay.handlers import Handlers, RequestContext
from relay.logs import JSON_FIELDS, RequestLog, setup_logging, trace_fields
from relay.ratelimit import Pacing, build_pacing
from relay.redis_link import build_redis_link
from relay.schemas import parse_observables
from relay.tenants import TenantLookups
from relay.threatscore import AnswerSource, build_source
from relay.version import VERSION

logger = logging.getLogger(__name__)

OBSERVABLE_ENDPOINTS = ("observe/observables", "deliberate/observables", "refer/observables")
ENDPOINTS = (*OBSERVABLE_ENDPOINTS, "health", "version")

EXECUTION_ID_HEADER = "Function-Execution-Id"
# Google's execution ids are 12 letters and digits; a little leeway for other front ends.
_GOOGLE_EXECUTION_ID = re.compile(r"[A-Za-z0-9]{8,32}")


def route_for(path: str, function_names: tuple[str, ...] = ("relay",)) -> str | None:
    """The endpoint a path names, with or without the function's name in front.

    Google Cloud can hand the function `/relay/observe/observables`; locally
    it is `/observe/observables`. Only the function's own name may come first:
    with any first segment accepted, a token for another module at the same
    origin (`/other/...`, its audience) would pass once the Host is spoofed.
    """
    segments = [segment for segment in path.split("/") if segment]
    candidates = [segments]
    if segments and segments[0] in function_names:
        candidates.append(segments[1:])
    for candidate in candidates:
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
    request's deadline (see `relay.threatscore.transport`), and the authenticator's
    key fetches are not retried. Its adapter lets `relay.bounded_fetch` end any
    exchange in wall-clock time.
    """
    return bounded_session(max(10, settings.threatscore_max_concurrency * REQUESTS_FANNING_OUT_AT_ONCE))


def build_handlers(
    settings: Settings,
    source: AnswerSource,
    cache: AnswerCache | None = None,
    shared_flight: SharedFlight | None = None,
    breaker: Breaker | None = None,
    pacing: Pacing | None = None,
) -> Handlers:
    """The endpoint handlers in front of `source`, through the answer cache (and the single
    flight across instances, with Redis) and the circuit breaker."""
    cache = NoCache() if cache is None else cache
    lookups = TenantLookups.build(
        source,
        cache,
        settings.threatscore_max_concurrency,
        shared_flight,
        shared_between_tenants=settings.cache_shared_between_tenants,
        breaker=breaker,
        pacing=pacing,
    )
    return Handlers(settings, lookups)


def describe_relay(settings: Settings, cache: AnswerCache | None = None) -> str:
    """What this relay is, in one line (logged at start-up): nothing secret in it."""
    backend = settings.threatscore_api
    if settings.relay_auth == "jwks":
        audience = "audience set" if settings.audience else "no audience set: the request URL"
        tenant_names = dict.fromkeys(tenant for tenant, _key in settings.access_keys)
        tenants = f"tenants {', '.join(tenant_names)}" if tenant_names else "ANY organisation"
        auth = f"jwks (key hosts {', '.join(settings.jwks_hosts)}; {audience}; {tenants})"
    elif settings.relay_auth == "secret":
        auth = f"secret ({'audience set' if settings.audience else 'no audience check'})"
    else:
        auth = "none (calls are not authenticated)"
    if isinstance(cache, NoCache) or (settings.cache_ttl <= 0 and settings.cache_negative_ttl <= 0):
        cache_words = "off"
    else:
        where = f"Redis at {cache.server}" if getattr(cache, "server", None) else "in memory"
        cache_words = f"{where}, {settings.cache_ttl:g} s found / {settings.cache_negative_ttl:g} s no data"
        if settings.relay_auth == "jwks" and len({tenant for tenant, _key in settings.access_keys}) > 1:
            sharing = "shared between tenants" if settings.cache_shared_between_tenants else "one per tenant"
            cache_words += f", {sharing}"
    return (
        f"Threatscore relay {VERSION}: backend {backend} at {settings.threatscore_api_url}; "
        f"auth {auth}; cache {cache_words}; deadline {settings.relay_deadline:g} s"
    )


def where_lookups_go(settings: Settings) -> str:
    """Where this relay sends its lookups, in words for whoever starts it by hand (`make run`);
    when that is Threatscore itself, that it answers only allow-listed callers, and what shows
    answers without access."""
    url = settings.threatscore_api_url
    where = f"the relay sends its lookups to {url} (Threatscore's {settings.threatscore_api} API)"
    host = urlsplit(url).hostname or ""
    if host != "cyberprotect.cloud" and not host.endswith(".cyberprotect.cloud"):
        return f"{where}."
    return (
        f"{where}: Threatscore itself, which answers only licensed accounts calling from"
        " allow-listed addresses, so from here a lookup is most likely refused (authorization"
        " error).\nTo see answers without access: make demo (the relay in front of the Threatscore"
        " simulator); or point this relay elsewhere with THREATSCORE_API_URL."
    )


def print_where_lookups_go() -> int:
    """`make run`'s first words (0), or the bad setting that would stop the relay (2)."""
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"make run: {where_lookups_go(settings)}", flush=True)
    return 0


class RelayApp:
    def __init__(
        self,
        settings: Settings,
        source: AnswerSource,
        authenticator: Authenticator,
        cache: AnswerCache | None = None,
        shared_flight: SharedFlight | None = None,
        breaker: Breaker | None = None,
        pacing: Pacing | None = None,
    ):
        self.settings = settings
        self.handlers = build_handlers(settings, source, cache, shared_flight, breaker, pacing)
        self.authenticator = authenticator

    @classmethod
    def from_env(cls) -> RelayApp:
        """Reads the environment once; a bad setting stops the start-up with a clear error."""
        settings = Settings.from_env()
        setup_logging(settings.log_level, settings.service_name, VERSION)
        session = make_session(settings)
        redis_link = build_redis_link(settings)  # what the instances share, if anything
        cache = build_cache(settings, redis_link)
        breaker = build_breaker(settings, redis_link)
        pacing = build_pacing(settings, redis_link, breaker)
        app = cls(
            settings,
            build_source(settings, session, pacing),
            build_authenticator(settings, session),
            cache,
            build_shared_flight(cache),
            breaker,
            pacing,
        )
        logger.info("%s", describe_relay(settings, cache))
        # What start-up made (modules, the app) lives as long as the process: keep it out of the
        # collector's full passes, which would otherwise make some request pay tens of ms (seen
        # on the first cached batch after a cold one, `make bench` case B).
        gc.freeze()
        return app

    def handle(self, request: flask.Request) -> flask.Response:
        request_log = RequestLog(
            request.method,
            request.path,
            _execution_id(request),
            trace=trace_fields(
                request.headers.get("traceparent"),
                request.headers.get("X-Cloud-Trace-Context"),
                self.settings.google_cloud_project,
            ),
        )
        response = self._respond(request, request_log)
        request_log.finish(response.status_code)
        return _leaving_the_body_unread(response)

    def _respond(self, request: flask.Request, request_log: RequestLog) -> flask.Response:
        route = route_for(request.path, self.settings.function_names)
        if route is None:
            error = NotFoundError(f"No such endpoint: {request.path[:200]}")
            return _error_response(error, request_log, 404)
        if request.method != "POST":
            error = MethodNotAllowedError(f"Method {request.method} is not allowed: use POST")
            return _error_response(error, request_log, 405, {"Allow": "POST"})
        try:
            return _json_response(self._dispatch(route, request, request_log))
        except RelayError as error:
            return _error_response(error, request_log)
        except Exception:  # never a traceback or an HTML page to the caller
            logger.exception(
                "unexpected failure while serving %s", route, extra={JSON_FIELDS: request_log.fields()}
            )
            return _error_response(InternalError("The relay failed unexpectedly"), request_log)

    def _dispatch(self, route: str, request: flask.Request, request_log: RequestLog) -> dict:
        if route == "version":  # the one endpoint that needs no token
            return self.handlers.version()
        request_url = _request_url(request) if self.authenticator.needs_request_url else ""
        caller = self.authenticator.authenticate(request.headers.get("Authorization"), request_url)
        request_log.tenant = caller.tenant
        context = RequestContext.start(
            self.settings,
            caller.entities_limit,
            request_log.stats,
            arrived_at=request_log.started,
            tenant=caller.tenant,
        )
        if route == "health":
            return self.handlers.health(context)
        observables = parse_observables(
            self._read_body(request),
            self.settings.max_observables,
            self.settings.max_value_length,
            self.handlers.supported_types,
            request_log.dropped,
            self.settings.lookup_internal,
        )
        request_log.observables = len(observables)
        if route == "observe/observables":
            return self.handlers.observe(observables, context)
        if route == "deliberate/observables":
            return self.handlers.deliberate(observables, context)
        return self.handlers.refer(observables, context)

    def _read_body(self, request: flask.Request) -> bytes:
        """The body, refused beyond the limit without reading it whole.

        Whatever its Content-Type, the body is read as JSON: XDR sends
        application/json, `curl -d` sends a form type, and both mean the same.
        """
        limit = self.settings.max_body_bytes
        too_large = InvalidArgumentError(f"Request body is larger than {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        # A chunked body has no Content-Length: read one byte past the limit, at
        # most. A WSGI stream may return less than asked: read until the end.
        chunks, size = [], 0
        while size <= limit:
            try:
                chunk = request.stream.read(limit + 1 - size)
            except (OSError, ClientDisconnected):
                # The caller reset the connection mid-body (gunicorn raises the socket's
                # error, or NoMoreData, an OSError): its failure, not the relay's.
                raise InvalidArgumentError(
                    "The request body did not arrive whole (the client went away)"
                ) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise too_large
        return b"".join(chunks)


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
    return _leaving_the_body_unread(_json_response(envelope([relay_error]), status))


def _error_response(
    error: RelayError, request_log: RequestLog, status: int = 200, headers: dict | None = None
) -> flask.Response:
    """The envelope of a request-level error, which the request's log line also names."""
    request_log.count_error(error)
    return _json_response(envelope([error]), status, headers)


def _execution_id(request: flask.Request) -> str:
    """Google's id of this execution, or one of our own.

    The header is copied into every line's labels: only Google's form (letters
    and digits, 12 of them from Google's front end and functions-framework) is
    taken; anything a caller made up gets an id of the relay's own.
    """
    given = request.headers.get(EXECUTION_ID_HEADER, "")
    return given if _GOOGLE_EXECUTION_ID.fullmatch(given) else uuid.uuid4().hex[:12]


def _leaving_the_body_unread(response: flask.Response) -> flask.Response:
    """The same answer, marked so that nothing reads the rest of the request body.

    The relay reads at most `max_body_bytes` of a body, and none before the
    caller is authenticated. functions-framework reads every body whole after
    the function returns, unless the response is streamed: an oversized or
    unauthenticated body would then be held in memory after all. A one-item
    iterator is "streamed" to Flask; the server (gunicorn) discards a little
    of what is left, then closes the connection.
    """
    payload = response.get_data()
    response.response = iter([payload])
    response.headers["Content-Length"] = str(len(payload))
    return response


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
