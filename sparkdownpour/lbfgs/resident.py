"""Resident evaluators: one long barrier stage instead of one Spark stage per evaluation.

Sandblaster's ``evaluation="stages"`` runs every loss/gradient evaluation as its own Spark stage
over the cached blocks (``lbfgs.stage``). Each such stage pays Spark's per-stage and per-task
costs (about 0.1 s per task wave on a 2-core machine, measured) and moves the whole cached data
set from Spark's cache into the Python workers again. With ``evaluation="resident"`` (the
default) one barrier stage, with one task per task slot, reads its portion of the cached blocks
once and keeps it in the Python worker for the whole fit; the coordinator posts each evaluation
on the ``EvaluationBoard`` (``lbfgs.board``), every task evaluates its portion at the posted
point (fetched from the shards, as in a stage) and reports its sums, and the board adds them
up, counting each portion once per evaluation.

The blocks reach the stage through a shuffle where needed (``data.regroup``), each cached
portion whole and in order to its task. A barrier stage starts all its tasks together or not at all, so a busy
cluster cannot leave some portions unevaluated while others wait; when a task fails Spark
reruns all of them, and the new tasks re-read their blocks and answer the evaluation in
progress (a portion reported twice is counted once). If the stage fails for good, the
evaluation in progress raises its error. DataFrame APIs only (``mapInArrow(barrier=True)``),
as in a Spark Connect session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from sparkdownpour.data.regroup import partitions_to_tasks
from sparkdownpour.lbfgs.board import EvaluationBoard, create_board_app
from sparkdownpour.lbfgs.portion import serve_portion
from sparkdownpour.lbfgs.stage import RESULT_DDL, StageSpec
from sparkdownpour.transport.board import ResidentTasks


class ResidentEvaluations(ResidentTasks):
    """The driver's side: the board's server, and the evaluators' Spark job in a thread.

    ``start`` launches the job; ``evaluate(point)`` posts an evaluation and returns ``(loss
    sum, gradient sum, rows, devices)`` once every portion reported; ``close()`` tells the tasks
    to stop and waits for the job (``transport.board.ResidentTasks``).
    """

    def __init__(self, blocks, portions: int, size: int, *, host: str, token: str,
                 max_request_bytes: int, timeout: float, rows: tuple | None = None) -> None:
        super().__init__(EvaluationBoard(portions, size), create_board_app, host=host,
                         token=token, max_request_bytes=max_request_bytes, timeout=timeout,
                         name="resident evaluators")
        self._blocks = blocks
        self._rows = rows  # (frame in `portions` partitions, shuffled?, sparse?) or None

    def start(self, spec: StageSpec, run_job: Callable[[Callable[[], list]], list], *,
              cancel: Callable[[], None]) -> None:
        """Launch the barrier stage of ``serve_portion`` tasks: ``run_job(collect)`` runs it
        (under the run's job tag); ``cancel()`` interrupts it."""
        portions = self.board.portions
        if self._rows is None:
            function = functools.partial(serve_portion, spec=spec, board=self.address)
            # Cached portion p to task p, through a shuffle where needed (data.regroup: a
            # barrier stage cannot start from a lineage that merged partitions).
            blocks = partitions_to_tasks(self._blocks, portions, portions)
        else:  # rows Spark holds cached: parsed by the tasks (one Python pass, not two)
            frame, shuffled, sparse = self._rows
            function = functools.partial(serve_portion, spec=spec, board=self.address,
                                         rows_sparse=sparse)
            # A shuffle just before ends the chain the barrier check looks at.
            blocks = frame if shuffled else partitions_to_tasks(frame, portions, portions)
        # Spark does not rerun a failed barrier *result* stage (it aborts the job), but it
        # does rerun a failed barrier shuffle-map stage, all tasks together: the one-partition
        # shuffle after it (of no rows) makes the stage the latter.
        self.launch(lambda: run_job(lambda: blocks.mapInArrow(function, RESULT_DDL, barrier=True)
                                    .repartition(1).collect()), cancel)

    def evaluate(self, point: str) -> tuple[float, np.ndarray, int, tuple[str, ...]]:
        version = self.board.post(point)
        return self.board.collect(version, self.failure)
