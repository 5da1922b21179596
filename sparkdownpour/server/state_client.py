"""The replica's side of ``/v1/state``: read the combined non-trainable state, report its own.

A separate keep-alive connection from the replica's ``ParameterClient`` (whose push may be in
flight on a background thread with ``overlap``). Both requests are idempotent (a report
replaces the partition's previous one), so both are retried on connection errors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from sparkdownpour.transport.client import HttpClient
from sparkdownpour.transport.frames import encode_frame_parts

__all__ = ["StateClient"]

ROUTE = "/v1/state"


class StateClient(HttpClient):
    """Reads and reports the model state held by the server (or shard 0) at ``url``."""

    def fetch_state(self) -> tuple[int, list[np.ndarray]]:
        """``(version, arrays)``: the combined state now."""
        resp, data = self.request("GET", ROUTE, idempotent=True)
        frame = self.read_frame("GET", ROUTE, resp, data, "state")
        return frame.step, frame.arrays

    def report_state(self, arrays: Sequence[np.ndarray], *, epoch: int, partition: int,
                     attempt: int = 0, replica: str = "") -> bool:
        """Report this replica's state; False when the server kept a later epoch's report."""
        body = encode_frame_parts([np.asarray(a, dtype=np.float32) for a in arrays],
                                  kind="state", step=0, replica=replica,
                                  meta={"epoch": int(epoch), "partition": int(partition),
                                        "attempt": int(attempt)})
        _, data = self.request("POST", ROUTE, body, idempotent=True)
        try:
            return bool(json.loads(data)["accepted"])
        except (ValueError, KeyError, TypeError) as e:
            raise self.error("POST", ROUTE, f"unexpected response {data[:200]!r}") from e
