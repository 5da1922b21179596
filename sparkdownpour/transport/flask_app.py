"""Guarded Flask apps: every server of the project starts from ``guarded_app``.

``guarded_app`` refuses, before any body is read, a request without the run's bearer token
(401), with a body over the size limit (413), or a GET with a body (400); errors answer JSON.
``frame_response`` and ``read_body`` move binary frames with as few copies as WSGI allows.
A dashboard may register a browser authenticator under ``app.extensions[BROWSER_AUTH]``: an
object with ``allows(method, path, cookies)`` that lets a logged-in browser read GET routes.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from sparkdownpour.config import DEFAULT_MAX_REQUEST_BYTES
from sparkdownpour.transport.frames import FRAME_CONTENT_TYPE, ProtocolError

__all__ = ["BROWSER_AUTH", "DEFAULT_MAX_REQUEST_BYTES", "SERVICE_TICK", "error_response",
           "frame_response", "guarded_app", "read_body"]

BROWSER_AUTH = "sparkdownpour.browser_auth"  # app.extensions key (install_dashboard)
# app.extensions key: a no-argument callable the serving loop calls every few hundredths of a
# second while the server runs (the dashboard samples its time series with it).
SERVICE_TICK = "sparkdownpour.service_tick"


def error_response(status: int, message: str) -> Response:
    resp = jsonify({"error": message})
    resp.status_code = status
    return resp


def frame_response(frame: bytes, **headers: Any) -> Response:
    resp = Response(frame, status=200, content_type=FRAME_CONTENT_TYPE)
    resp.headers["Cache-Control"] = "no-store"
    for key, value in headers.items():
        resp.headers[f"X-Sdp-{key.capitalize()}"] = str(value)
    return resp


def read_body() -> bytes:
    """Read the request body once, with as few copies as the WSGI server allows.

    With a Content-Length (always, from our client) the bytes are read straight from the
    server's input stream into one buffer; werkzeug's generic ``get_data`` would go through
    64 KiB chunks and two extra copies of a multi-megabyte body.
    """
    length = request.content_length
    stream = request.environ.get("wsgi.input")
    if length is None or stream is None or "wsgi.input_terminated" in request.environ:
        return request.get_data(cache=False)  # chunked: let werkzeug dechunk (and cap) it
    data = stream.read(length) if length else b""
    if len(data) != length:
        raise ProtocolError(f"body ended after {len(data)} of {length} bytes (client disconnected?)")
    return data


def guarded_app(name: str, *, token: str, max_request_bytes: int) -> Flask:
    """A Flask app that refuses, before reading any body, a request without the bearer
    ``token`` (401) or with a body over ``max_request_bytes`` (413); errors answer JSON."""
    if not isinstance(token, str) or not token:
        raise ValueError("token must be a non-empty string (the per-run secret)")
    if not isinstance(max_request_bytes, int) or max_request_bytes <= 0:
        raise ValueError(f"max_request_bytes must be a positive integer, got {max_request_bytes!r}")
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    expected = f"Bearer {token}".encode()

    @app.before_request
    def _authenticate() -> Response | None:
        # Runs before routing errors and before any body is read.
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected) and not _browser_allowed(app):
            what = "wrong bearer token" if given else "missing 'Authorization: Bearer <token>'"
            if BROWSER_AUTH in app.extensions and not given:  # a browser, most likely
                what += " (browsers: open the one-time dashboard link from the driver log)"
            return error_response(401, f"unauthorized: {what}")
        length = request.content_length
        if length is not None and length > max_request_bytes:
            return error_response(
                413, f"request body is {length} bytes, the server limit is {max_request_bytes}"
            )
        if request.method in ("GET", "HEAD") and (length or "wsgi.input_terminated" in request.environ):
            # Nothing we serve reads a GET body; refusing one keeps the answer to any
            # unexpected input a 4xx rather than a silent 200.
            return error_response(400, f"{request.method} {request.path} takes no request body")
        return None

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException) -> Response:
        return error_response(e.code or 500, f"{e.name}: {e.description}")

    return app


def _browser_allowed(app: Flask) -> bool:
    """A dashboard's browser (``observe.browser_auth``) may read; apps without one: never."""
    auth = app.extensions.get(BROWSER_AUTH)
    return auth is not None and auth.allows(request.method, request.path, request.cookies)
