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
    GET  /v1/status                    {"version", "portions", "counted", "reports"}
"""

from __future__ import annotations

import json
import math
import struct
import threading
from collections.abc import Callable

import numpy as np
from flask import Response, jsonify, request

from sparkdownpour.transport.client import HttpClient
from sparkdownpour.transport.flask_app import error_response, guarded_app, read_body
from sparkdownpour.transport.frames import ProtocolError

RESULT_HEADER = struct.Struct("<I")
MAX_HEADER_BYTES = 64 * 1024
MAX_WAIT_S = 20.0  # one long poll; the client asks again (and so notices a dead driver)


class EvaluationBoard:
    """The current evaluation and the sums reported for it, one report per portion."""

    def __init__(self, portions: int, size: int) -> None:
        self.portions, self.size = portions, size
        self._cond = threading.Condition()
        self.version, self.point = 0, ""
        self.stopped = False
        self.reports = 0
        # Each counted portion's (loss, gradient, rows, devices), added up in portion order
        # when complete, so the sums do not depend on the order the reports arrived in.
        self._counted: dict[int, tuple] = {}

    def post(self, point: str) -> int:
        """Start the next evaluation, of the shards' vector ``point``; returns its version."""
        with self._cond:
            self.version += 1
            self.point = point
            self._counted = {}
            self._cond.notify_all()
            return self.version

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def next_after(self, after: int, wait_s: float) -> dict:
        """What a task polling after version ``after`` should do (waits up to ``wait_s``)."""
        with self._cond:
            self._cond.wait_for(lambda: self.stopped or self.version > after, timeout=wait_s)
            if self.stopped:
                return {"stop": True}
            if self.version > after:
                return {"version": self.version, "point": self.point}
            return {"version": after}

    def report(self, version: int, portion: int, loss: float, grad: np.ndarray | None, rows: int,
               devices: list[str]) -> tuple[bool, str]:
        """Count one portion's sums for ``version``; ``(counted, why not)``."""
        with self._cond:
            self.reports += 1
            if version != self.version:
                return False, f"evaluation {version} is over (the board is at {self.version})"
            if portion in self._counted:
                return False, f"portion {portion} was already counted for evaluation {version}"
            # Kept as given (the route's is a read-only view of its request body, which
            # nothing else holds), so a report costs no copy of the gradient.
            self._counted[portion] = (loss, grad, rows, devices)
            self._cond.notify_all()
            return True, ""

    def collect(self, version: int, failure: Callable[[], BaseException | None],
                poll_s: float = 0.5) -> tuple[float, np.ndarray, int, tuple[str, ...]]:
        """Wait for every portion's report for ``version``: ``(loss sum, gradient sum, rows,
        devices)``. Raises what ``failure()`` returns (the evaluators' Spark job failed or
        ended) as soon as it returns something."""
        with self._cond:
            while len(self._counted) < self.portions:
                problem = failure()
                if problem is not None:
                    raise problem
                self._cond.wait(timeout=poll_s)
            if self.version != version:
                raise RuntimeError(f"evaluation {version} was overtaken by {self.version}")
            results = [self._counted[p] for p in sorted(self._counted)]
        grad = np.zeros(self.size)
        for _, part, _, _ in results:
            if part is not None:
                grad += part
        return (sum(r[0] for r in results), grad, sum(r[2] for r in results),
                tuple(sorted({d for r in results for d in r[3]})))

    def wake(self) -> None:
        """Wake a ``collect`` so it asks ``failure()`` now (the evaluators' job ended)."""
        with self._cond:
            self._cond.notify_all()

    def status(self) -> dict:
        with self._cond:
            return {"version": self.version, "portions": self.portions,
                    "counted": len(self._counted), "reports": self.reports,
                    "stopped": self.stopped}


def encode_result(version: int, portion: int, loss: float, grad: np.ndarray | None, rows: int,
                  devices: list[str]) -> list[bytes]:
    header = json.dumps({"version": version, "portion": portion, "loss": float(loss),
                         "rows": int(rows), "devices": list(devices)}).encode()
    body = b"" if grad is None else np.ascontiguousarray(grad, "<f8").tobytes()
    return [RESULT_HEADER.pack(len(header)), header, body]


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

    @app.get("/v1/eval/next")
    def next_evaluation() -> Response:
        try:
            after = int(request.args.get("after", "0"))
            wait_s = min(max(float(request.args.get("wait", "0")), 0.0), MAX_WAIT_S)
        except ValueError as e:
            return error_response(400, f"after and wait must be numbers: {e}")
        return jsonify(board.next_after(after, wait_s))

    @app.post("/v1/eval/result")
    def result() -> Response:
        try:
            fields = decode_result(read_body(), board.size, board.portions)
        except ProtocolError as e:
            return error_response(400, f"bad result: {e}")
        counted, why = board.report(**fields)
        return jsonify({"counted": counted, "why": why})

    @app.get("/v1/status")
    def status() -> Response:
        return jsonify(board.status())

    return app


class BoardClient(HttpClient):
    """An evaluator task's client of the board."""

    def next_after(self, after: int, wait_s: float = MAX_WAIT_S) -> dict:
        """The next evaluation past ``after``, or ``{"stop": True}``; polls until one comes."""
        while True:
            answer = self.get_json(f"/v1/eval/next?after={after}&wait={wait_s}")
            if answer.get("stop") or answer.get("version", after) > after:
                return answer  # else nothing new within wait_s: ask again

    def report(self, version: int, portion: int, loss: float, grad: np.ndarray | None, rows: int,
               devices: list[str]) -> dict:
        # Idempotent on the board (one count per portion and version), so safe to retry.
        resp, data = self.request("POST", "/v1/eval/result",
                                  encode_result(version, portion, loss, grad, rows, devices),
                                  idempotent=True)
        return json.loads(data)
