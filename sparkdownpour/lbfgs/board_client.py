"""An evaluator task's side of the evaluation board (``lbfgs.board``): its client and the result
encoding, apart from the board's Flask app so that an evaluator's worker does not import Flask."""

from __future__ import annotations

import json
import struct

import numpy as np

from sparkdownpour.transport.board_client import BoardClient

RESULT_HEADER = struct.Struct("<I")


def encode_result(version: int, portion: int, loss: float, grad: np.ndarray | None, rows: int,
                  devices: list[str]) -> list[bytes]:
    header = json.dumps({"version": version, "portion": portion, "loss": float(loss),
                         "rows": int(rows), "devices": list(devices)}).encode()
    body = b"" if grad is None else np.ascontiguousarray(grad, "<f8").tobytes()
    return [RESULT_HEADER.pack(len(header)), header, body]


class EvaluationClient(BoardClient):
    """An evaluator task's client of the board."""

    prefix = "/v1/eval"

    def report(self, version: int, portion: int, loss: float, grad: np.ndarray | None, rows: int,
               devices: list[str]) -> dict:
        # Idempotent on the board (one count per portion and version), so safe to retry.
        resp, data = self.request("POST", "/v1/eval/result",
                                  encode_result(version, portion, loss, grad, rows, devices),
                                  idempotent=True)
        return json.loads(data)
