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
from sparkdownpour.transport.http_wire import Connection, Response

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
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = 443 if self._tls else 80
        host = host if self._port == default_port else f"{host}:{self._port}"
        # The headers every request carries, encoded once (see http_wire for why).
        try:
            self._common = (f"Host: {host}\r\nAuthorization: Bearer {token}\r\n"
                            "Connection: keep-alive\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("token must be Latin-1 text (an HTTP header value); the run's "
                             "own tokens are URL-safe base64") from None
        self._conn: Connection | None = None

    # -- connection handling -------------------------------------------------------------

    def _open(self) -> Connection:
        self._conn = Connection(self._host, self._port, timeout=self.timeout, tls=self._tls,
                                buffer_bytes=_SOCKET_BUFFER)
        return self._conn

    def _connection(self) -> Connection:
        """The kept-alive connection, reopened when the server closed it in between."""
        conn = self._conn
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
    ) -> tuple[Response, bytes | bytearray]:
        """One request; ``body`` is a list of buffers written to the socket in order.

        Connection errors and timeouts are retried ``retries`` times (idempotent requests
        only) with exponential backoff; any status not in ``accept`` raises."""
        attempts = 1 + self.retries if idempotent else 1
        length = None if body is None else sum(len(part) for part in body)
        head = self._head(method, route, length)
        if body is not None and length <= _JOIN_BELOW:
            # One send for headers and body: sent part by part, a small update cost a system
            # call and a wake-up of the server's reader per part (an MLP's push: 6 sends).
            body = b"".join(body)
        attempt = 0
        while True:
            sent = False
            try:
                conn = self._connection()
                conn.send(head, body)
                sent = True
                resp = conn.read_head(method)
                data = conn.read_body(resp)
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

    def _head(self, method: str, route: str, length: int | None) -> bytes:
        """The request line and headers, blank line included (``length``: the body's)."""
        target = self._prefix + route
        if any(c in target for c in " \r\n\t\0"):  # would end the request line early
            raise ValueError(f"route must not contain spaces or control characters: {route!r}")
        head = f"{method} {target} HTTP/1.1\r\n".encode("ascii") + self._common
        if length is not None:
            head += (f"Content-Type: {FRAME_CONTENT_TYPE}\r\n"
                     f"Content-Length: {length}\r\n").encode("ascii")
        elif method in ("POST", "PUT", "PATCH"):
            head += b"Content-Length: 0\r\n"  # a body-less POST still says where it ends
        return head + b"\r\n"

    @staticmethod
    def _describe(resp: Response, data: bytes | bytearray) -> str:
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

    def read_frame(self, method: str, route: str, resp: Response,
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
