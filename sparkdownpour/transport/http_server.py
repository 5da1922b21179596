"""A threaded, keep-alive HTTP server for a Flask app, started and stopped from the driver.

``HttpServer`` is a context manager: the server is always shut down (``stop`` is
idempotent and safe in ``finally``), and each run gets its own random bearer token unless
one is given.
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from sparkdownpour.transport.flask_app import DEFAULT_MAX_REQUEST_BYTES, SERVICE_TICK
from sparkdownpour.transport.keepalive import (
    KeepAliveHandler,
    close_connections,
    enable_connection_tracking,
)

__all__ = ["HttpServer", "tls_context"]

logger = logging.getLogger(__name__)

_SOCKET_BUFFER = 4 * 1024 * 1024  # big frames: fewer wakeups per megabyte on loopback/LAN


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen ourselves: werkzeug's make_server calls sys.exit on a bind error."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit the buffer sizes of the listening one.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from e
    return sock


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) from PEM certificate and key files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load the TLS certificate {cert_file!r} and key {key_file!r}: "
                         f"{e}") from e
    return context


def _guarded(tick: Callable[[], None]) -> Callable[[], None]:
    """``tick``, with its errors logged: an exception would end the serving loop."""
    def run() -> None:
        try:
            tick()
        except Exception:  # noqa: BLE001
            logger.debug("service tick failed", exc_info=True)
    return run


class HttpServer:
    """Serves ``app_factory(store, token=, max_request_bytes=)`` over HTTP from a daemon thread.

    The parameter server, Sandblaster's vector shards and the dashboards all run on it, so they
    share the keep-alive handler, TLS, the free-port bind and the shutdown. ``host`` is both
    the bind address and the one in ``url``: on a cluster pass the driver's address that
    executors can reach, never a wildcard. ``port=0`` picks a free port. ``token`` defaults to
    a fresh random secret per server.
    """

    def __init__(
        self,
        store: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        app_factory: Callable[..., Any],
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in 0..65535 (0 = any free port), got {port!r}")
        self.store = store
        self.host = host
        self.requested_port = port
        self.token = token if token is not None else secrets.token_urlsafe(32)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext (see tls_context()), got "
                            f"{type(ssl_context).__name__}")
        self.ssl_context = ssl_context
        self.app = app_factory(store, token=self.token, max_request_bytes=max_request_bytes)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound port (the free one the OS picked when ``port=0``)."""
        if self._port is None:
            raise RuntimeError(f"the {type(self).__name__} is not running; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` for clients (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> HttpServer:
        """Bind and serve in a daemon thread; a no-op if already running. Returns self."""
        with self._lock:
            if self._server is not None:
                return self
            sock = _listen(self.host, self.requested_port)
            try:
                # make_server dups the fd, so our socket can be closed right after.
                server = make_server(
                    self.host, self.requested_port, self.app, threaded=True,
                    request_handler=KeepAliveHandler, fd=sock.fileno(),
                )
            finally:
                sock.close()
            if self.ssl_context is not None:
                # The handshake runs in the connection's own handler thread
                # (KeepAliveHandler.setup), not in accept(): a client that connects and
                # says nothing must not stall the accept loop for everyone.
                server.socket = self.ssl_context.wrap_socket(
                    server.socket, server_side=True, do_handshake_on_connect=False)
                server.ssl_context = self.ssl_context
            enable_connection_tracking(server)
            tick = getattr(self.app, "extensions", {}).get(SERVICE_TICK)
            if tick is not None:  # socketserver calls it once per pass of the accept loop
                server.service_actions = _guarded(tick)
            self._port = server.server_address[1]
            thread = threading.Thread(
                target=server.serve_forever,
                # How quickly stop() is noticed: a fit stops two or more servers at its end,
                # each waiting half an interval on average; a pass costs ~20 us of CPU.
                kwargs={"poll_interval": 0.01},
                name=f"sparkdownpour-server-{self._port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            logger.info("%s listening on %s", type(self).__name__, self.url)
            return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down and join the serving thread; safe to call repeatedly or when never started."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None:
                return
            try:
                server.shutdown()
                close_connections(server)  # idle keep-alive clients must not outlive the server
                if thread is not None:
                    thread.join(timeout)
                    if thread.is_alive():
                        logger.warning("server thread did not stop within %.1f s", timeout)
            finally:
                server.server_close()
                logger.info("server on port %s stopped", self._port)
                self._port = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"{type(self).__name__}({where})"
