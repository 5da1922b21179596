"""HTTP/1.1 on one kept-alive socket, as lean as a replica's round trip needs.

``http.client`` builds each request header by header (validating each with regular
expressions), wraps every response in a new buffered reader and parses its headers with the
``email`` package: measured by ``jobs/bench_client.py``, a small model's push cost a replica
0.27-0.31 ms of CPU that way against 0.18 ms here. ``Connection`` sends a request as one
prebuilt block of bytes and reads the answer's status line and headers itself, from one
buffered reader kept with the socket. It speaks only what the project's own servers
(``http_server``) answer: a status line, at most ``MAX_HEADERS`` header lines of at most
``MAX_LINE`` bytes, and a body of ``Content-Length`` bytes (or, without one, up to the end of
the connection and at most ``MAX_UNSIZED_BODY`` bytes: the project's servers size their
answers, an error page of a proxy is short). A body is held in memory only as it arrives
beyond ``PREALLOCATE_BODY`` bytes, so a wrong ``Content-Length`` cannot claim memory the
answer does not bring. Anything else raises an ``http.client`` exception, so callers retry and report
as they did; ``HttpClient`` closes a connection after any error, so a half-read answer is never
taken for the next one.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any

__all__ = ["Connection", "Response", "MAX_HEADERS", "MAX_LINE", "MAX_UNSIZED_BODY"]

MAX_LINE = 65536     # the longest status or header line accepted (as http.client)
MAX_HEADERS = 100    # the most header lines accepted (as http.client)
MAX_UNSIZED_BODY = 1 << 20       # the longest answer without a Content-Length accepted
PREALLOCATE_BODY = 64 << 20      # bodies up to this are read into one buffer sized up front
_READ_BUFFER = 64 * 1024


class Response:
    """A response's status and headers; the body is read with ``Connection.read_body``."""

    __slots__ = ("status", "reason", "headers", "length", "will_close")

    def __init__(self, status: int, reason: str, headers: dict[str, str], length: int | None,
                 will_close: bool) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        self.length, self.will_close = length, will_close

    def getheader(self, name: str, default: Any = None) -> Any:
        """The header's value (case-insensitive; repeated headers joined with ", ")."""
        return self.headers.get(name.lower(), default)


class Connection:
    """One socket to ``host:port`` (TLS when ``tls`` is a client context), with its reader."""

    def __init__(self, host: str, port: int, *, timeout: float,
                 tls: ssl.SSLContext | None = None, buffer_bytes: int | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if buffer_bytes:
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
                    except OSError:
                        pass
            if tls is not None:  # certificate and hostname verified by the context
                sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock
        self._reader = sock.makefile("rb", buffering=_READ_BUFFER)

    def send(self, head: bytes, body: list[Any] | bytes | None = None) -> None:
        """Write the request: ``head`` (request line and headers, blank line included), then
        the body (bytes, or a list of buffers written in order)."""
        if self.sock is None:
            raise http.client.NotConnected("the connection is closed")
        if body is None or isinstance(body, (bytes, bytearray)):
            self.sock.sendall(head + body if body else head)
            return
        self.sock.sendall(head)
        for part in body:
            self.sock.sendall(part)

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        return line

    def read_head(self, method: str) -> Response:
        """The status line and headers of the next response (1xx interim answers skipped)."""
        while True:
            line = self._line()
            if not line:
                raise http.client.RemoteDisconnected("Remote end closed connection without "
                                                     "response")
            version, _, rest = line.decode("iso-8859-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise http.client.BadStatusLine(line)
            headers = self._headers()
            status = int(code)
            if status >= 200:
                break
        if "transfer-encoding" in headers and headers["transfer-encoding"].lower() != "identity":
            raise http.client.HTTPException(
                f"unsupported Transfer-Encoding {headers['transfer-encoding']!r} (the project's "
                "servers send a Content-Length)")
        connection = headers.get("connection", "").lower()
        will_close = "close" in connection or (version == "HTTP/1.0"
                                               and "keep-alive" not in connection)
        length: int | None = None
        if method == "HEAD" or status in (204, 304):
            length = 0
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise http.client.HTTPException(
                    f"bad Content-Length {headers['content-length']!r}") from None
            if length < 0:
                raise http.client.HTTPException(f"bad Content-Length {length}")
        else:
            will_close = True  # the body ends with the connection
        return Response(status, reason.strip(), headers, length, will_close)

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        last = None
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return headers
            text = line.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last is not None:  # an obsolete folded line
                headers[last] += " " + text.strip()
                continue
            name, colon, value = text.partition(":")
            name = name.strip().lower()
            if not colon or not name:
                raise http.client.HTTPException(f"malformed header line {text[:100]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
            last = name
        raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")

    def read_body(self, response: Response) -> bytearray:
        """The whole body, in one writable buffer (arrays decoded from it need no copy)."""
        if response.length is None:
            body = self._reader.read(MAX_UNSIZED_BODY + 1)
            if len(body) > MAX_UNSIZED_BODY:
                raise http.client.HTTPException(
                    f"an answer without Content-Length longer than {MAX_UNSIZED_BODY} bytes")
            return bytearray(body)
        if response.length > PREALLOCATE_BODY:
            return self._read_growing(response.length)
        buf = bytearray(response.length)
        view, got = memoryview(buf), 0
        while got < len(buf):
            n = self._reader.readinto(view[got:])
            if not n:
                raise http.client.IncompleteRead(bytes(view[:got]), len(buf) - got)
            got += n
        return buf

    def _read_growing(self, length: int) -> bytearray:
        """A large body, kept as it arrives (one copy more than ``read_body``'s buffer)."""
        buf = bytearray()
        while len(buf) < length:
            chunk = self._reader.read(min(PREALLOCATE_BODY, length - len(buf)))
            if not chunk:
                raise http.client.IncompleteRead(b"", length - len(buf))
            buf += chunk
        return buf

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                self._reader.close()
            finally:
                sock.close()
