"""The routes through which replicas read and report the model's non-trainable state.

::

    GET  /v1/state   -> state frame: the combined arrays (step: the state's version)
    POST /v1/state   <- state frame with meta {"epoch", "partition", "attempt"}
                     -> {"accepted", "version"}

Both answer 404 on a store without state (a model with none, or a shard other than 0).
Same token and body limit as every route (``transport.flask_app.guarded_app``).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify

from sparkdownpour.server.ledger import MAX_INDEX
from sparkdownpour.transport.flask_app import error_response, frame_response, read_body
from sparkdownpour.transport.frames import ProtocolError, decode_frame

__all__ = ["install_state_routes"]


def _index(meta: dict, key: str) -> int:
    value = meta.get(key, 0 if key == "attempt" else None)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INDEX:
        raise ValueError(f"meta {key!r} must be a non-negative integer, got {value!r}")
    return value


def install_state_routes(app: Flask, store: Any) -> None:
    """Add ``/v1/state`` to ``app``, serving ``store.model_state``."""

    def missing() -> Response:
        return error_response(404, "this server holds no model state (the model has no "
                                   "non-trainable variables, or this is not shard 0)")

    @app.get("/v1/state")
    def get_state() -> Response:
        state = getattr(store, "model_state", None)
        if state is None:
            return missing()
        frame = state.fetch_frame()
        store.note_traffic(sent=len(frame))
        return frame_response(frame)

    @app.post("/v1/state")
    def post_state() -> Response:
        state = getattr(store, "model_state", None)
        if state is None:
            return missing()
        try:
            body = read_body()
            frame = decode_frame(body, expected_shapes=state.shapes)
            if frame.kind != "state":
                raise ProtocolError(f"expected a frame of kind 'state', got {frame.kind!r}")
            epoch, partition = _index(frame.meta, "epoch"), _index(frame.meta, "partition")
            attempt = _index(frame.meta, "attempt")
            accepted = state.report(frame.arrays, epoch=epoch, partition=partition,
                                    attempt=attempt)
        except ValueError as e:  # ProtocolError is one
            return error_response(400, f"bad state report: {e}")
        store.note_traffic(received=len(body))
        return jsonify({"accepted": accepted, "version": state.version})
