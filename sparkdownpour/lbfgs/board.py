"""The evaluation board: how resident evaluator tasks learn which point to evaluate next.

With ``evaluation="resident"`` (``lbfgs.resident``) Sandblaster's executors keep their portions
of the data for the whole fit inside one long barrier stage instead of one Spark stage per
evaluation. The coordinator posts each evaluation here (a version number and the name of the
point the shards hold); every task long-polls for it, evaluates its portion and reports the
loss and gradient sums back. The board counts one report per portion and version: a task of a
retried barrier stage that reports a portion again is told so and not counted twice, a report
for an evaluation that is over is ignored. Routes (behind ``guarded_app``: per-run bearer token,
size limit, no pickle)::

    GET  /v1/eval/next?after=N&wait=S  {"version", "point"} once the board is past N, else
                                       {"version": N} after S seconds; {"stop": true} at the end
    POST /v1/eval/result               body: RESULT_HEADER (the JSON header's length), the JSON
                                       header {version, portion, loss, rows, devices}, then the
                                       gradient sum as little-endian float64 (none for 0 rows)
                                       -> {"counted": bool, "why": str}
    GET  /v1/status                    {"version", "portions", "counted", "reports", "stopped"}

The board itself and its long poll are ``transport.board``'s, shared with resident replicas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
from flask import Response, jsonify

from sparkdownpour.lbfgs.board_client import RESULT_HEADER, EvaluationClient, encode_result
from sparkdownpour.transport.board import MAX_WAIT_S, Board, add_board_routes
from sparkdownpour.transport.flask_app import error_response, guarded_app, read_body
from sparkdownpour.transport.frames import ProtocolError

__all__ = ["MAX_WAIT_S", "EvaluationBoard", "EvaluationClient", "create_board_app",
           "decode_result", "encode_result"]

MAX_HEADER_BYTES = 64 * 1024


class EvaluationBoard(Board):
    """The current evaluation (``post(point)``) and the sums reported for it."""

    def __init__(self, portions: int, size: int) -> None:
        super().__init__(portions)
        self.size = size

    def post(self, point: str) -> int:  # type: ignore[override]
        """Start the next evaluation, of the shards' vector ``point``; returns its version."""
        return super().post(point=point)

    def report(self, version: int, portion: int, loss: float, grad: np.ndarray | None, rows: int,
               devices: list[str]) -> tuple[bool, str]:
        """Count one portion's sums for ``version``; ``(counted, why not)``. The gradient is
        kept as given (the route's is a read-only view of its request body, which nothing
        else holds), so a report costs no copy of it."""
        return self.count(version, portion, (loss, grad, rows, devices))

    def collect(self, version: int, failure: Callable[[], BaseException | None],
                poll_s: float = 0.5) -> tuple[float, np.ndarray, int, tuple[str, ...]]:
        """Wait for every portion's report for ``version``: ``(loss sum, gradient sum, rows,
        devices)``, added up in portion order so the sums do not depend on the order the
        reports arrived in. Raises what ``failure()`` returns as soon as it returns something."""
        results = self.results(version, failure, poll_s)
        grad = np.zeros(self.size)
        for _, part, _, _ in results:
            if part is not None:
                grad += part
        return (sum(r[0] for r in results), grad, sum(r[2] for r in results),
                tuple(sorted({d for r in results for d in r[3]})))


def decode_result(data: bytes, size: int, portions: int) -> dict:
    """A reported result, checked: every field typed and in range, the gradient ``size`` long."""
    if len(data) < RESULT_HEADER.size:
        raise ProtocolError(f"a result body of {len(data)} bytes has no header")
    (length,) = RESULT_HEADER.unpack_from(data)
    if length > MAX_HEADER_BYTES or RESULT_HEADER.size + length > len(data):
        raise ProtocolError(f"header length {length} does not fit a body of {len(data)} bytes")
    try:
        header = json.loads(bytes(data[RESULT_HEADER.size:RESULT_HEADER.size + length]))
        version, portion = int(header["version"]), int(header["portion"])
        loss, rows, devices = float(header["loss"]), int(header["rows"]), header["devices"]
    except (ValueError, KeyError, TypeError) as e:
        raise ProtocolError(f"malformed result header: {e}") from e
    if not 0 <= portion < portions:
        raise ProtocolError(f"portion {portion} is not one of the {portions} portions")
    if rows < 0 or (rows and math.isnan(loss)) or not isinstance(devices, list) \
            or not all(isinstance(d, str) for d in devices) or len(devices) > 16:
        raise ProtocolError(f"bad result fields: rows {rows}, loss {loss}, devices {devices!r:.80}")
    raw = memoryview(data)[RESULT_HEADER.size + length:]
    if rows and len(raw) != 8 * size:
        raise ProtocolError(f"the gradient has {len(raw)} bytes, expected {8 * size} "
                            f"({size} float64 values)")
    if not rows and len(raw):
        raise ProtocolError("a portion without rows sends no gradient")
    grad = np.frombuffer(raw, "<f8") if rows else None
    return {"version": version, "portion": portion, "loss": loss, "grad": grad, "rows": rows,
            "devices": devices}


def create_board_app(board: EvaluationBoard, *, token: str, max_request_bytes: int):
    """The board's HTTP routes (``HttpServer``'s ``app_factory``)."""
    app = guarded_app(__name__, token=token, max_request_bytes=max_request_bytes)

    add_board_routes(app, board, "/v1/eval")

    @app.post("/v1/eval/result")
    def result() -> Response:
        try:
            fields = decode_result(read_body(), board.size, board.portions)
        except ProtocolError as e:
            return error_response(400, f"bad result: {e}")
        counted, why = board.report(**fields)
        return jsonify({"counted": counted, "why": why})

    return app
