"""One HTTP exchange with an upstream, bounded in size and in wall-clock time.

Both upstreams of the relay (Threatscore, and the key servers whose keys
verify XDR's tokens) are fetched through `fetch`, so that both get the same
guarantees:

- No redirect is ever followed. requests would follow them (to any host and
  scheme), and even with `allow_redirects=False` its `Session.send` reads and
  decodes a 3xx's whole body to build `Response.next`. `fetch` sends through
  the session's adapter instead, which reads nothing: the status and headers
  are checked before any body is read, and a 3xx's body is not read at all.
- The body is read through a cap (decoded bytes, so a gzip bomb is cut off at
  the cap) and never held beyond it.
- The whole attempt (connection, status line, headers, body) ends by
  `give_up_at`. requests' timeouts apply per read, so an upstream trickling
  one byte at a time would otherwise hold the thread for as long as it likes:
  a watchdog shuts the attempt's socket at `give_up_at`, which ends whatever
  read is waiting.

Failures are `FetchError`s with a `kind` the caller turns into its own words.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import NamedTuple

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

# Bytes asked of the socket at a time (decoded bytes returned at most).
READ_CHUNK_BYTES = 64 * 1024

# FetchError kinds
CONNECT_TIMEOUT = "connect timeout"  # no connection within the connect timeout
READ_TIMEOUT = "read timeout"  # one read waited longer than the read timeout
OUT_OF_TIME = "out of time"  # the attempt was still going at give_up_at
REFUSED = "refused"
UNRESOLVED = "unresolved"
RESET = "reset"  # the connection was reset or closed before a whole answer
BROKEN = "broken"  # the answer broke off mid-body (or its encoding was broken)
TLS_CERTIFICATE = "tls certificate"  # the server's certificate does not verify
TLS_HANDSHAKE = "tls handshake"  # no TLS handshake: the server does not speak TLS (or not well)
TOO_LARGE = "too large"
UNREACHABLE = "unreachable"  # anything else on the way


class FetchError(Exception):
    """What went wrong with one attempt, as a `kind` (one of the constants above)."""

    def __init__(self, kind: str, cause: BaseException | None = None):
        super().__init__(kind)
        self.kind = kind
        self.cause = cause  # for a retry policy; never for words (its text quotes the URL)


class Fetched(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes  # empty for a redirect: never read
    raw: urllib3.BaseHTTPResponse  # status and headers, e.g. for urllib3's retry policy

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status < 400


def fetch(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    connect_timeout: float,
    read_timeout: float,
    give_up_at: float,
    max_body_bytes: int,
    json_body: object = None,
) -> Fetched:
    """One attempt: the status, headers and (capped) body, or `FetchError`.

    `give_up_at` is a `time.monotonic()` instant by which the attempt has
    ended, whatever the upstream does. A 3xx comes back with an empty body
    (its body is not read, and the connection is closed, not reused).
    """
    guard = _AttemptGuard(give_up_at)
    _watchdog.watch(guard)
    _current.guard = guard
    try:
        try:
            response = _send(session, method, url, headers, json_body, (connect_timeout, read_timeout))
        finally:
            _current.guard = None
        try:
            if guard.expired:  # the watchdog ended the headers: what arrived is not an answer
                raise FetchError(OUT_OF_TIME)
            if 300 <= response.status_code < 400:
                _discard(response)
                return Fetched(response.status_code, response.headers, b"", response.raw)
            body = _read_capped(response, max_body_bytes, give_up_at)
            if guard.expired:  # the watchdog cut the body short, at a place that looked like an end
                raise FetchError(OUT_OF_TIME)
            return Fetched(response.status_code, response.headers, body, response.raw)
        except BaseException:
            _discard(response)
            raise
        finally:
            response.close()
    except FetchError:
        raise
    except (
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
    ) as exc:
        if guard.expired or time.monotonic() >= give_up_at:
            raise FetchError(OUT_OF_TIME, exc) from None
        raise FetchError(_kind_of(exc), exc) from None
    finally:
        guard.finish()


def _send(session, method, url, headers, json_body, timeout) -> requests.Response:
    """The request sent through the session's adapter: status and headers only, no redirect."""
    request = requests.Request(method, url, headers=dict(headers), json=json_body)
    prepared = session.prepare_request(request)
    settings = session.merge_environment_settings(prepared.url, {}, True, None, None)
    adapter = session.get_adapter(prepared.url)
    return adapter.send(
        prepared,
        stream=True,
        timeout=timeout,
        verify=settings["verify"],
        cert=settings["cert"],
        proxies=settings["proxies"],
    )


def _read_capped(response: requests.Response, cap: int, give_up_at: float) -> bytes:
    """The decoded body, refusing more than `cap` bytes without holding more than that."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise FetchError(TOO_LARGE)
    chunks, size = [], 0
    for chunk in _arriving_chunks(response.raw):
        size += len(chunk)
        if size > cap:
            raise FetchError(TOO_LARGE)
        # Without a watchdog (a session of another adapter), a drip is still cut off here.
        if time.monotonic() > give_up_at:
            raise FetchError(OUT_OF_TIME)
        chunks.append(chunk)
    return b"".join(chunks)


def _arriving_chunks(raw: urllib3.BaseHTTPResponse):
    """The body's bytes as they arrive (not waiting to fill a buffer), decoded."""
    if raw.chunked:
        yield from raw.stream(READ_CHUNK_BYTES, decode_content=True)
        return
    while chunk := raw.read1(READ_CHUNK_BYTES, decode_content=True):
        yield chunk


def _discard(response: requests.Response) -> None:
    """Closes the connection unread: it must not go back to the pool with a body in it."""
    connection = getattr(response.raw, "connection", None)
    if connection is not None:
        connection.close()


def _kind_of(exc: BaseException) -> str:
    """The failure's kind, from the exceptions' types (never their texts)."""
    causes = exception_chain(exc)
    if any(isinstance(cause, ssl.SSLCertVerificationError) for cause in causes):
        return TLS_CERTIFICATE
    if any(isinstance(cause, ssl.SSLError | requests.exceptions.SSLError) for cause in causes):
        return TLS_HANDSHAKE
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return CONNECT_TIMEOUT
    if isinstance(exc, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError | TimeoutError):
        return READ_TIMEOUT
    if any(isinstance(cause, urllib3.exceptions.NameResolutionError) for cause in causes):
        return UNRESOLVED
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return REFUSED
    if isinstance(
        exc,
        requests.exceptions.ChunkedEncodingError
        | urllib3.exceptions.ProtocolError
        | urllib3.exceptions.DecodeError
        | http.client.IncompleteRead,
    ) and not isinstance(exc, requests.exceptions.ConnectionError):
        return BROKEN
    broken = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.RemoteDisconnected)
    if any(isinstance(cause, broken) for cause in causes):
        return RESET
    if any(isinstance(cause, TimeoutError | urllib3.exceptions.TimeoutError) for cause in causes):
        return READ_TIMEOUT
    if isinstance(exc, urllib3.exceptions.ProtocolError | requests.exceptions.ChunkedEncodingError):
        return BROKEN
    return UNREACHABLE


def exception_chain(exc: BaseException, limit: int = 20) -> list[BaseException]:
    """`exc` and what it wraps: its cause, context, urllib3's `reason` and exceptions in its args."""
    found: list[BaseException] = []
    pending: list[object] = [exc]
    while pending and len(found) < limit:
        item = pending.pop()
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        pending.extend((item.__cause__, item.__context__, getattr(item, "reason", None), *item.args))
    return found


# --- Wall-clock bound: a watchdog that shuts an attempt's socket at its end --------


class _AttemptGuard:
    """The connections one attempt uses; shut when the attempt outlives `give_up_at`."""

    def __init__(self, give_up_at: float):
        self.give_up_at = give_up_at
        self.expired = False
        self._finished = False
        self._connections: list[HTTPConnection] = []
        # The sockets seen: an answer with `Connection: close` takes the socket from its
        # connection (whose `sock` is then None) and reads it on its own.
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def attach(self, connection: HTTPConnection) -> None:
        with self._lock:
            if not self._finished:
                self._connections.append(connection)
                if connection.sock is not None:
                    self._sockets.append(connection.sock)
            if self.expired:
                _shut(connection.sock)

    def expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            for sock in [*self._sockets, *(connection.sock for connection in self._connections)]:
                _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
            self._connections.clear()
            self._sockets.clear()


def _shut(sock: socket.socket | None) -> None:
    """Ends any read waiting on the socket (the reading thread then closes it)."""
    if sock is None:
        return
    # The plain socket's shutdown, also under TLS: it only touches the descriptor.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread per process that expires guards when their time comes."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, _AttemptGuard]] = []
        self._order = itertools.count()
        self._pid: int | None = None

    def watch(self, guard: _AttemptGuard) -> None:
        with self._condition:
            if self._pid != os.getpid():  # a thread does not survive a fork: start one here
                self._heap = []
                threading.Thread(target=self._run, name="fetch-watchdog", daemon=True).start()
                self._pid = os.getpid()
            heapq.heappush(self._heap, (guard.give_up_at, next(self._order), guard))
            if self._heap[0][2] is guard:
                self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].expire()
                self._condition.wait(self._heap[0][0] - now if self._heap else None)


_watchdog = _Watchdog()
_current = threading.local()  # the guard of the attempt this thread is making


class _GuardedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _attach_to_current_attempt(self)
        super().connect()

    def request(self, *args, **kwargs) -> None:
        _attach_to_current_attempt(self)  # a pooled connection, connected before
        super().request(*args, **kwargs)

    def getresponse(self, *args, **kwargs):
        _attach_to_current_attempt(self)  # now connected: its socket is known
        return super().getresponse(*args, **kwargs)


class _GuardedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _attach_to_current_attempt(self)
        super().connect()

    def request(self, *args, **kwargs) -> None:
        _attach_to_current_attempt(self)
        super().request(*args, **kwargs)

    def getresponse(self, *args, **kwargs):
        _attach_to_current_attempt(self)
        return super().getresponse(*args, **kwargs)


def _attach_to_current_attempt(connection: HTTPConnection) -> None:
    guard = getattr(_current, "guard", None)
    if guard is not None:
        guard.attach(connection)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class BoundedAdapter(HTTPAdapter):
    """requests' adapter whose connections the watchdog can shut (see `fetch`).

    Mount it on every session given to `fetch`; with another adapter, `fetch`
    still bounds the body's arrival, but not a trickling status line.
    """

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


def bounded_session(pool_maxsize: int = 10) -> requests.Session:
    """A session whose every connection `fetch` can bound in wall-clock time."""
    session = requests.Session()
    adapter = BoundedAdapter(pool_connections=4, pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
