"""The Flask app in front of a ``ParameterStore``: the master model server's HTTP routes.

Routes (all need ``Authorization: Bearer <token>``)::

    GET  /v1/params[?replica=R]            -> params frame (R: the reader, for delay-aware rules)
    POST /v1/update                        -> {"step", "staleness", "applied", "progress"}
    POST /v1/update?return_params=1        -> params frame right after the update
    GET  /v1/progress?epoch=E&partition=P[&attempt=A&pid=N&device=D]
                                           -> {"epoch", "partition", "applied"}
    GET  /v1/status                        -> store.status() as JSON
    GET, POST /v1/state                    -> the model's non-trainable state (``state_routes``)
    GET  /metrics                          -> Prometheus text (``observe.metrics``)
    GET  /, /v1/dashboard, /login?code=    -> the dashboard (``observe.dashboard``); a browser
                                              may use the session cookie instead, GET only

An update whose meta carries a position (epoch, partition, begin, end, attempt) is applied at
most once: a duplicate, out-of-order or closed-epoch push is answered 409 with
``{"error", "refusal", "progress", "step"}`` and changes nothing (see ``ledger``).
A push staler than the store's ``max_staleness`` is answered 409 with ``refusal: "stale"``.

Authentication and the body size are checked before the body is read, so an unauthenticated
or oversized request costs the driver nothing but the headers. GET routes take no body.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request

from sparkdownpour.server.ledger import DEVICE_MAX, MAX_INDEX, position_from_meta
from sparkdownpour.server.sync import split_sync_meta
from sparkdownpour.transport.flask_app import (
    DEFAULT_MAX_REQUEST_BYTES,
    error_response,
    frame_response,
    guarded_app,
    read_body,
)
from sparkdownpour.transport.frames import MAX_REPLICA_CHARS, ProtocolError, decode_frame
from sparkdownpour.transport.http_server import HttpServer

__all__ = ["ParameterServer", "create_app"]

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


def create_app(store: Any, *, token: str, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> Flask:
    """Build the Flask app serving ``store``; ``token`` is the run's shared secret."""
    app = guarded_app(__name__, token=token, max_request_bytes=max_request_bytes)

    @app.get("/v1/params")
    def params() -> Response:
        replica = request.args.get("replica")
        if replica is not None and len(replica) > MAX_REPLICA_CHARS:
            return error_response(400, f"replica id is {len(replica)} characters, the limit is "
                                       f"{MAX_REPLICA_CHARS}")
        frame = store.fetch_frame(replica)
        store.note_traffic(sent=len(frame))
        return frame_response(frame)

    @app.post("/v1/update")
    def update() -> Response:
        try:
            body = read_body()
            frame = decode_frame(body, expected_shapes=store.shapes, keep_rows=True)
            if frame.kind != "update":
                raise ProtocolError(f"expected a frame of kind 'update', got {frame.kind!r}")
        except ProtocolError as e:
            store.note_rejected()
            return error_response(400, f"bad update frame: {e}")
        try:
            sync, meta = split_sync_meta(frame.meta)
            position, report = position_from_meta(meta)
        except ValueError as e:
            store.note_rejected()
            return error_response(400, f"bad update frame: {e}")
        want_params = request.args.get("return_params", "").lower() in _TRUE
        try:
            # The store checks finiteness and counts its own rejections.
            result = store.push(frame.arrays, replica=frame.replica, base_step=frame.step,
                                position=position, report=report, reread=want_params,
                                sync=sync)
        except (ValueError, TypeError) as e:
            return error_response(400, f"update rejected: {e}")
        store.note_traffic(received=len(body))
        if not result.applied and sync is not None:
            resp = jsonify({"error": f"synchronous push refused ({result.refusal}): round "
                                     f"{sync.round} of epoch {sync.epoch}, the server has applied "
                                     f"{result.progress} rounds", "refusal": result.refusal,
                            "progress": result.progress, "step": result.step, "applied": False})
            resp.status_code = 409
            return resp
        if not result.applied and result.refusal == "stale":
            resp = jsonify({"error": f"update refused (stale): staleness {result.staleness} is over "
                                     f"max_staleness {store.max_staleness}; refetch",
                            "refusal": "stale", "progress": result.progress,
                            "step": result.step, "staleness": result.staleness, "applied": False})
            resp.status_code = 409
            return resp
        if not result.applied:
            resp = jsonify({"error": f"update refused ({result.refusal}): partition "
                                     f"{position.partition} of epoch {position.epoch} is at "
                                     f"mini-batch {result.progress}, this push covers "
                                     f"[{position.begin}, {position.end})",
                            "refusal": result.refusal, "progress": result.progress,
                            "step": result.step, "applied": False})
            resp.status_code = 409
            return resp
        if want_params:
            fresh = store.fetch_frame()
            store.note_traffic(sent=len(fresh))
            return frame_response(fresh, step=result.step, staleness=result.staleness,
                                   progress="" if result.progress is None else result.progress)
        return jsonify({"step": result.step, "staleness": result.staleness, "applied": True,
                        "progress": result.progress})

    @app.get("/v1/progress")
    def progress() -> Response:
        values = {}
        for key, required in (("epoch", True), ("partition", True), ("attempt", False),
                              ("pid", False)):
            raw = request.args.get(key)
            if raw is None:
                if required:
                    return error_response(400, f"query parameter {key!r} is required")
                values[key] = 0
                continue
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 16 or int(raw) > MAX_INDEX:
                return error_response(400, f"query parameter {key!r} must be a non-negative integer, "
                                   f"got {raw[:40]!r}")
            values[key] = int(raw)
        device = request.args.get("device")
        if device is not None and not (len(device) <= DEVICE_MAX and device.isprintable()):
            return error_response(400, f"query parameter 'device' must be printable text of at "
                                       f"most {DEVICE_MAX} characters, got {device[:40]!r}")
        applied = store.progress(values["epoch"], values["partition"],
                                 attempt=values["attempt"], pid=values["pid"], device=device)
        return jsonify({"epoch": values["epoch"], "partition": values["partition"],
                        "applied": applied})

    @app.get("/v1/status")
    def status() -> Response:
        return jsonify(store.status())

    from sparkdownpour.server.state_routes import install_state_routes

    install_state_routes(app, store)
    # The dashboard at / and Prometheus metrics at /metrics (same token; see README).
    from sparkdownpour.observe.routes import install_downpour

    install_downpour(app, store)
    return app


class ParameterServer(HttpServer):
    """The master model server: ``store`` behind ``create_app``, served from a daemon thread.

    ``host`` is both the bind address and the one in ``url``: on a cluster pass the driver's
    address that executors can reach (e.g. ``spark.driver.host``), never a wildcard.
    ``port=0`` picks a free port. ``token`` defaults to a fresh random secret per server.

    >>> with ParameterServer(store) as server:      # free port on 127.0.0.1
    ...     client = ParameterClient(server.url, server.token)
    """

    def __init__(self, store: Any, **options: Any) -> None:
        options.setdefault("app_factory", create_app)
        super().__init__(store, **options)
