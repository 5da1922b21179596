"""An HTTP/1.1 keep-alive request handler for werkzeug's threaded server.

werkzeug's development handler closes the connection after every response, because Python's
``http.server`` cannot tell where an unread request body ends. Each replica request then pays a
TCP handshake and a fresh handler thread (and that thread's allocator arena, which is where a
multi-megabyte frame's pages get faulted in again). This handler counts the body bytes the app
consumed: when the whole body was read (or a small rest can be drained) the connection stays
open for the replica's next request; otherwise it answers and closes, as werkzeug does.
"""

from __future__ import annotations

import logging
import selectors
import socket
import sys
import threading
from typing import Any

from werkzeug.serving import WSGIRequestHandler

logger = logging.getLogger(__name__)

_DRAIN_LIMIT = 1 << 20       # an unread body rest up to this is read and dropped to keep alive
_INLINE_BODY = 64 * 1024     # bodies up to this go out in the same send as the headers
_ERROR_BODY = b'{"error": "internal server error"}'


class _CountingInput:
    """``wsgi.input`` limited to the request's Content-Length, remembering what is left."""

    def __init__(self, rfile, length: int) -> None:
        self._rfile, self.remaining = rfile, length

    def _limit(self, size: int | None) -> int:
        return self.remaining if size is None or size < 0 else min(size, self.remaining)

    def read(self, size: int | None = -1) -> bytes:
        size = self._limit(size)
        data = self._rfile.read(size) if size else b""
        self.remaining -= len(data)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")[: self.remaining]
        got = self._rfile.readinto(view) if len(view) else 0
        self.remaining -= got
        return got

    def readline(self, size: int | None = -1) -> bytes:
        size = self._limit(size)
        line = self._rfile.readline(size) if size else b""
        self.remaining -= len(line)
        return line

    def __iter__(self):
        return iter(self.readline, b"")


class KeepAliveHandler(WSGIRequestHandler):
    """Quiet, Nagle-free, keep-alive WSGI handler (see the module docstring)."""

    protocol_version = "HTTP/1.1"
    # Per-recv timeout: a replica that stalls mid-request (or idles on an open connection)
    # must not hold a thread forever.
    timeout = 300

    def setup(self) -> None:
        super().setup()  # sets the socket timeout, which also bounds a TLS handshake
        self._handshake_failed = False
        do_handshake = getattr(self.connection, "do_handshake", None)
        if do_handshake is not None:  # TLS, wrapped with do_handshake_on_connect=False
            try:
                do_handshake()
            except OSError as e:  # plain HTTP, an untrusted client, a timeout: drop it quietly
                logger.debug("TLS handshake with %s failed: %r", self.client_address, e)
                self._handshake_failed = True
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (e.g. a unix socket): nothing to tune
            pass
        track_connection(self.server, self.connection, add=True)

    def handle(self) -> None:
        if not self._handshake_failed:
            super().handle()

    def finish(self) -> None:
        track_connection(self.server, self.connection, add=False)
        super().finish()

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        # One line per push would flood the driver log; errors still go through log_error.
        pass

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.environ = self.make_environ()
        body_in = None
        if not environ.get("wsgi.input_terminated"):  # chunked bodies: close afterwards
            body_in = _CountingInput(self.rfile, int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = body_in
        status, headers, chunks = self._call_app(environ)
        keep_alive = not self.close_connection and body_in is not None
        if keep_alive and body_in.remaining:
            keep_alive = body_in.remaining <= _DRAIN_LIMIT and self._drain(body_in)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if environ["REQUEST_METHOD"] == "HEAD":
            body = b""
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for key, value in headers:
            if key.lower() not in ("content-length", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if not keep_alive:
            self.send_header("Connection", "close")  # also sets self.close_connection
        if len(body) <= _INLINE_BODY:  # one send for small answers: blank line, then body
            self._headers_buffer.extend((b"\r\n", body))
            self.flush_headers()
        else:
            self.end_headers()
            self.wfile.write(body)
        if not keep_alive:
            self._discard_unread()

    def _call_app(self, environ) -> tuple[str, list, list[bytes]]:
        response: dict[str, Any] = {}
        written: list[bytes] = []

        def start_response(status, headers, exc_info=None):
            if exc_info is not None and "status" in response:
                raise exc_info[1].with_traceback(exc_info[2])
            response["status"], response["headers"] = status, headers
            return written.append  # WSGI's legacy write(): buffered with the body

        try:
            result = self.server.app(environ, start_response)
            try:
                chunks = written + [chunk for chunk in result if chunk]
            finally:
                if hasattr(result, "close"):
                    result.close()
            return response["status"], response["headers"], chunks
        except Exception:
            if getattr(self.server, "passthrough_errors", False):
                raise
            logger.error("error on request %s %s", environ.get("REQUEST_METHOD"),
                         environ.get("PATH_INFO"), exc_info=sys.exc_info())
            self.close_connection = True
            return ("500 Internal Server Error", [("Content-Type", "application/json")],
                    [_ERROR_BODY])

    @staticmethod
    def _drain(body_in: _CountingInput) -> bool:
        try:
            while body_in.remaining and body_in.read(min(body_in.remaining, 65536)):
                pass
        except OSError:
            return False
        return body_in.remaining == 0

    def _discard_unread(self) -> None:
        """Let a client still sending a refused body see our answer instead of a reset."""
        selector = selectors.DefaultSelector()
        try:
            selector.register(self.connection, selectors.EVENT_READ)
            total = 0
            while total < 64 * _DRAIN_LIMIT and selector.select(timeout=0.01):
                data = self.rfile.read1(_DRAIN_LIMIT) if hasattr(self.rfile, "read1") \
                    else self.rfile.read(_DRAIN_LIMIT)
                if not data:
                    break
                total += len(data)
        except (OSError, ValueError):
            pass
        finally:
            selector.close()


def track_connection(server, connection, *, add: bool) -> None:
    """Keep the server's set of open connections, so ``close_connections`` can end idle ones."""
    lock = getattr(server, "sdp_connections_lock", None)
    if lock is None:
        return
    with lock:
        if add:
            server.sdp_connections.add(connection)
        else:
            server.sdp_connections.discard(connection)


def enable_connection_tracking(server) -> None:
    server.sdp_connections = set()
    server.sdp_connections_lock = threading.Lock()


def close_connections(server) -> None:
    """End every open keep-alive connection; their handler threads see EOF and exit."""
    lock = getattr(server, "sdp_connections_lock", None)
    if lock is None:
        return
    with lock:
        connections = list(server.sdp_connections)
    for connection in connections:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
