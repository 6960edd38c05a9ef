"""Misbehaving HTTP servers of the tests' own, on 127.0.0.1, written at the socket level.

An HTTP library server cannot trickle a status line, send one enormous chunk
slowly, or redirect with a gzip bomb for a body; these can. Each connection
runs `answer(connection, request_head)` in its own thread after the request's
head has been read; the helpers below write what misbehaves.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Callable
from functools import cache

Answer = Callable[[socket.socket, bytes], None]


class HostileServer:
    def __init__(self, answer: Answer | None = None):
        self._answer = answer or (lambda connection, request_head: None)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.requests: list[bytes] = []  # the request heads received, in order
        self.answered: list[bytes] = []  # the request heads whose answer ended (or whose client left)
        self.connected = threading.Semaphore(0)  # released once per connection
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []

    def __enter__(self) -> HostileServer:
        thread = threading.Thread(target=self._accept_forever, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *_exc) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def answer_with(self, answer: Answer) -> HostileServer:
        """For answers that need the server itself (its `send`, `trickle`)."""
        self._answer = answer
        return self

    def _accept_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    data = connection.recv(65536)
                    if not data:
                        return
                    head += data
            except OSError:
                return
            with self._lock:
                self.requests.append(head)
            self.connected.release()
            with contextlib.suppress(OSError):
                self._answer(connection, head)
            with self._lock:
                self.answered.append(head)

    def send(self, connection: socket.socket, data: bytes) -> None:
        connection.sendall(data)
        with self._lock:
            self.bytes_sent += len(data)

    def trickle(self, connection: socket.socket, data: bytes, every: float) -> None:
        """`data` one byte at a time, a byte every `every` seconds (each read well within a timeout)."""
        for index in range(len(data)):
            if self._stopping.wait(every):
                return
            self.send(connection, data[index : index + 1])

    def trickle_forever(self, connection: socket.socket, byte: bytes, every: float) -> None:
        while not self._stopping.wait(every):
            self.send(connection, byte)


def head(status: str, headers: dict[str, str]) -> bytes:
    # Connection: close, as each connection serves one answer (a client must not reuse it).
    headers = {**headers, "Connection": "close"}
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@cache
def gzip_bomb(decoded_mib: int = 1024) -> bytes:
    """`decoded_mib` MiB of zeros once decoded, about a thousandth of that on the wire.

    Made of identical gzip members (a gzip stream may hold several, and
    decoders read them all), so that making one costs milliseconds.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    member = compressor.compress(b"\0" * (16 << 20)) + compressor.flush()
    return member * (decoded_mib // 16)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Polls `condition` (for what a process does out of the test's reach, e.g. its log lines)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()
