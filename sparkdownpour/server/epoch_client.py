"""A resident replica task's client of the epoch board (``server.epoch_board``), apart from the
board's Flask app so that an executor's worker does not import Flask."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sparkdownpour.transport.board_client import BoardClient


class EpochClient(BoardClient):
    """A resident replica task's client of the epoch board."""

    prefix = "/v1/epoch"

    def register(self, task: int, partitions: Iterable[int]) -> None:
        body = json.dumps({"task": task, "partitions": list(partitions)}).encode()
        self.request("POST", "/v1/epoch/register", [body], idempotent=True)

    def report(self, version: int, partition: int, stats: dict) -> dict:
        # Idempotent on the board (one count per partition and version), so safe to retry.
        body = json.dumps({"version": version, "partition": partition, "stats": stats}).encode()
        _, data = self.request("POST", "/v1/epoch/report", [body], idempotent=True)
        return json.loads(data)
