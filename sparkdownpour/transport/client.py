"""One HTTP client for every server of the project: keep-alive, timeouts, retries, errors.

``HttpClient`` is the base that the Downpour ``ParameterClient`` and Sandblaster's
``VectorClient`` extend through its public ``request`` / ``error`` / ``read_frame`` methods.
One client per thread (it is not thread-safe). Every failure becomes a
``ParameterServerError`` naming the URL, the route, the HTTP status and the server's own
error text; every request has a socket timeout, so a dead server never hangs a Spark task.

Retries: a request marked idempotent retries connection errors with exponential backoff; any
other is sent at most once (its response may have been lost after the server acted on it); the
only exception is a kept-alive connection found dead *before* anything was sent, which is
reopened once.

TLS: an ``https://`` URL verifies the server against ``ca_data`` (PEM text, which travels to
executors inside the replica's spec) or ``ca_file``, or the system's CAs if neither is given.
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.transport.frames import FRAME_CONTENT_TYPE, Frame, ProtocolError, decode_frame

__all__ = ["HttpClient"]

logger = logging.getLogger(__name__)

_SOCKET_BUFFER = 4 * 1024 * 1024
_JOIN_BELOW = 256 * 1024  # bodies this small are copied into one buffer (see request)
_HINTS = {
    401: "unauthorized: check the run token",
    404: "not found: is this URL a sparkdownpour parameter server?",
    413: "request too large: the update is bigger than the server's max_request_bytes",
}


def _socket_is_dead(sock: socket.socket | None) -> bool:
    """True if a kept-alive socket was closed by the server (EOF or stray bytes waiting)."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        # Readable with no request outstanding means EOF, a reset, or garbage: all unusable.
        return bool(readable)
    except (OSError, ValueError):
        return True


class HttpClient:
    """A kept-alive HTTP client for one of the project's servers (bearer token, optional TLS)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        ca_data: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like http://host:port or https://host:port, "
                             f"got {url!r}")
        if parts.scheme == "http" and (ca_data or ca_file):
            raise ValueError(f"ca_data/ca_file given but the url {url!r} is plain http; "
                             "use the https:// url of a server started with TLS")
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise ValueError("token must be a non-empty single-line string")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not backoff >= 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {backoff!r}")
        self.url = url.rstrip("/")
        self._tls = None
        if parts.scheme == "https":
            # Certificate and hostname are verified: a token sent to an impostor is lost.
            self._tls = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self.timeout, self.retries, self.backoff = float(timeout), retries, float(backoff)
        self._headers = {"Authorization": f"Bearer {token}", "Connection": "keep-alive"}
        self._conn: http.client.HTTPConnection | None = None

    # -- connection handling -------------------------------------------------------------

    def _open(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                               context=self._tls)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        conn.connect()  # sets TCP_NODELAY itself
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                conn.sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
        except OSError:
            pass
        self._conn = conn
        return conn

    def _connection(self) -> http.client.HTTPConnection:
        """The kept-alive connection, reopened when the server closed it in between."""
        conn = self._conn
        # http.client drops conn.sock itself after a "Connection: close" response.
        if conn is None or conn.sock is None or _socket_is_dead(conn.sock):
            self.close()
            conn = self._open()
        return conn

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------

    def error(self, method: str, route: str, what: str) -> ParameterServerError:
        """The error to raise for ``method route``: names the URL, the route and ``what``."""
        return ParameterServerError(f"{method} {self.url}{route} failed: {what}")

    def request(
        self, method: str, route: str, body: list[Any] | None = None, *, idempotent: bool,
        accept: tuple[int, ...] = (200,),
    ) -> tuple[http.client.HTTPResponse, bytes | bytearray]:
        """One request; ``body`` is a list of buffers written to the socket in order.

        Connection errors and timeouts are retried ``retries`` times (idempotent requests
        only) with exponential backoff; any status not in ``accept`` raises."""
        attempts = 1 + self.retries if idempotent else 1
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = FRAME_CONTENT_TYPE
            # An explicit length makes http.client send the parts as they are (no chunking).
            length = sum(len(part) for part in body)
            headers["Content-Length"] = str(length)
            if length <= _JOIN_BELOW:
                # One send for headers and body (http.client joins a bytes body to its
                # headers): sent part by part, a small update cost a system call and a wake-up
                # of the server's reader per part (an MLP's push: 6 sends instead of 1).
                body = b"".join(body)
        attempt = 0
        while True:
            sent = False
            try:
                conn = self._connection()
                conn.request(method, self._prefix + route, body=body, headers=headers)
                sent = True
                resp = conn.getresponse()
                data = self._read_response(resp)
                if resp.will_close:
                    self.close()
                break
            except (OSError, http.client.HTTPException) as e:  # ssl.SSLError is an OSError
                self.close()
                attempt += 1
                logger.debug("%s %s%s attempt %d failed: %r", method, self.url, route, attempt, e)
                if not idempotent and not sent and attempt == 1:
                    # The request never got out whole, so the server cannot have applied
                    # it: one retry on a fresh connection cannot apply it twice.
                    attempts = 2
                if attempt >= attempts:
                    raise self.error(
                        method, route,
                        f"{type(e).__name__}: {e} (after {attempt} attempt(s); "
                        f"is the server running and reachable?)",
                    ) from e
                time.sleep(self.backoff * 2 ** (attempt - 1))
        if resp.status not in accept:
            raise self.error(method, route, self._describe(resp, data))
        return resp, data

    @staticmethod
    def _read_response(resp: http.client.HTTPResponse) -> bytes | bytearray:
        """The whole body; with a Content-Length, read into one bytearray so the arrays
        decoded from it are writable without another copy."""
        if resp.length is None:
            return resp.read()
        buf = bytearray(resp.length)
        view, got = memoryview(buf), 0
        while got < len(buf):
            n = resp.readinto(view[got:])
            if not n:
                raise http.client.IncompleteRead(bytes(view[:got]), len(buf) - got)
            got += n
        return buf

    @staticmethod
    def _describe(resp: http.client.HTTPResponse, data: bytes | bytearray) -> str:
        """``HTTP 401 unauthorized: check the run token (server said: ...)``."""
        text = ""
        if (resp.getheader("Content-Type") or "").startswith("application/json"):
            try:
                text = str(json.loads(data).get("error", ""))
            except (ValueError, AttributeError):
                pass
        if not text:
            text = data[:300].decode("utf-8", "replace").strip()
        hint = _HINTS.get(resp.status, resp.reason or "error")
        return f"HTTP {resp.status} {hint} (server said: {text or 'nothing'})"

    def read_frame(self, method: str, route: str, resp: http.client.HTTPResponse,
                   data: bytes | bytearray, kind: str) -> Frame:
        """The response body as a decoded frame of ``kind``; anything else raises ``error``."""
        ctype = resp.getheader("Content-Type") or ""
        if not ctype.startswith(FRAME_CONTENT_TYPE):
            raise self.error(method, route, f"expected a {FRAME_CONTENT_TYPE} body, got {ctype!r}")
        try:
            frame = decode_frame(data)
        except ProtocolError as e:
            raise self.error(method, route, f"server answered a malformed frame: {e}") from e
        if frame.kind != kind:
            raise self.error(method, route, f"expected a {kind!r} frame, got {frame.kind!r}")
        return frame

    def get_json(self, route: str) -> dict[str, Any]:
        """``GET route`` (idempotent, retried) answered by a JSON object."""
        _, data = self.request("GET", route, idempotent=True)
        try:
            result = json.loads(data)
        except ValueError as e:
            raise self.error("GET", route, f"response is not JSON: {data[:200]!r}") from e
        if not isinstance(result, dict):
            raise self.error("GET", route, f"expected a JSON object, got {result!r:.200}")
        return result

    def status(self) -> dict[str, Any]:
        """The server's ``/v1/status`` counters."""
        return self.get_json("/v1/status")
