"""The epoch board: how resident replicas learn which epoch to train next.

With ``resident=True`` (``resident_replicas``) Downpour's replicas stay in one long Spark stage
for the whole fit instead of one Spark job per epoch. The driver posts each epoch here; every
task long-polls for it, trains each of its partitions for that epoch against the parameter
server (exactly as a per-epoch task would) and reports each partition's statistics row. The
driver takes the epoch as done once every partition with rows reported, which it learns from
the tasks' registrations (a task names the partitions it holds: a merged task holds several, an
empty partition is held by none). Built on ``transport.board`` (one report per partition and
epoch; a late or repeated one is not counted). Routes (behind ``guarded_app``: per-run bearer
token, size limit, JSON only)::

    GET  /v1/epoch/next?after=N&wait=S  {"version", "epoch"} once past N; {"stop": true} at the end
    POST /v1/epoch/register             {"task", "partitions": [int]} -> {"registered": true}
    POST /v1/epoch/report               {"version", "partition", "stats": {name: value}}
                                        -> {"counted": bool, "why": str}
    GET  /v1/status                     {"version", "portions", "counted", "reports", "stopped"}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable

from flask import Response, jsonify

from sparkdownpour.server.epoch_client import EpochClient
from sparkdownpour.transport.board import Board, add_board_routes
from sparkdownpour.transport.flask_app import error_response, guarded_app, read_body
from sparkdownpour.transport.frames import ProtocolError

__all__ = ["EpochBoard", "EpochClient", "create_epoch_board_app"]

MAX_STRING = 2000  # a statistics row's longest text field (a device note)


class EpochBoard(Board):
    """The epoch being trained and the partitions' statistics rows reported for it."""

    def __init__(self, partitions: int, tasks: int, stat_names: Iterable[str]) -> None:
        super().__init__(partitions)
        self.tasks = tasks
        self.stat_names = frozenset(stat_names)
        self._held: dict[int, tuple[int, ...]] = {}  # task -> the partitions it trains

    def open(self, epoch: int) -> int:
        """Post ``epoch``; returns its version."""
        return self.post(epoch=epoch)

    def register(self, task: int, partitions: Iterable[int]) -> None:
        """A task holds ``partitions`` (the same again when its stage is retried)."""
        with self._cond:
            self._held[task] = tuple(sorted(partitions))
            self._cond.notify_all()

    def expected(self) -> float:
        """Partitions to hear from each epoch: unknown (infinite) until every task registered."""
        held = dict(self._held)
        if len(held) < self.tasks:
            return math.inf
        return len({p for partitions in held.values() for p in partitions})

    def report(self, version: int, partition: int, stats: dict) -> tuple[bool, str]:
        return self.count(version, partition, stats)

    def collect(self, version: int, failure: Callable[[], BaseException | None],
                poll_s: float = 0.5) -> list[dict]:
        """Every partition's statistics row for ``version``, in partition order."""
        return self.results(version, failure, poll_s, expected=self.expected)

    def check_stats(self, stats: object) -> dict:
        if not isinstance(stats, dict) or set(stats) != self.stat_names:
            got = sorted(stats) if isinstance(stats, dict) else type(stats).__name__
            raise ProtocolError(f"a statistics row has fields {got!s:.200}, expected "
                                f"{sorted(self.stat_names)}")
        for name, value in stats.items():
            if not (value is None or isinstance(value, (int, float))
                    or (isinstance(value, str) and len(value) <= MAX_STRING)):
                raise ProtocolError(f"statistics field {name} is {value!r:.80}")
        return stats


def _json_body() -> dict:
    try:
        body = json.loads(bytes(read_body()))
    except ValueError as e:
        raise ProtocolError(f"not JSON: {e}") from e
    if not isinstance(body, dict):
        raise ProtocolError("the body is not a JSON object")
    return body


def create_epoch_board_app(board: EpochBoard, *, token: str, max_request_bytes: int):
    """The board's HTTP routes (``HttpServer``'s ``app_factory``)."""
    app = guarded_app(__name__, token=token, max_request_bytes=max_request_bytes)
    add_board_routes(app, board, "/v1/epoch")

    @app.post("/v1/epoch/register")
    def register() -> Response:
        try:
            body = _json_body()
            task, partitions = int(body["task"]), [int(p) for p in body["partitions"]]
            if not 0 <= task < board.tasks or not all(0 <= p < board.portions
                                                      for p in partitions):
                raise ProtocolError(f"task {task} of {board.tasks} holding partitions "
                                    f"{partitions!s:.200} of {board.portions}")
        except (ProtocolError, KeyError, TypeError, ValueError) as e:
            return error_response(400, f"bad registration: {e}")
        board.register(task, partitions)
        return jsonify({"registered": True})

    @app.post("/v1/epoch/report")
    def report() -> Response:
        try:
            body = _json_body()
            version, partition = int(body["version"]), int(body["partition"])
            if not 0 <= partition < board.portions:
                raise ProtocolError(f"partition {partition} is not one of {board.portions}")
            stats = board.check_stats(body["stats"])
        except (ProtocolError, KeyError, TypeError, ValueError) as e:
            return error_response(400, f"bad report: {e}")
        counted, why = board.report(version, partition, stats)
        return jsonify({"counted": counted, "why": why})

    return app
