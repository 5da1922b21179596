"""Resident replicas: Downpour's epochs in one long Spark stage (``resident=True``).

A job per epoch pays Spark's job and stage scheduling, a task launch per partition, and the
read of the cached partition into the Python worker, every epoch: about 0.15 s an epoch for a
small model on a 2-core machine, as much as the epoch's own compute (see Benchmarks). With
``resident=True`` one barrier stage runs for the whole fit, one task per task slot; each task
keeps its partitions (``replica.resident``) and trains them for every epoch the driver posts on
the epoch board (``server.epoch_board``). The driver still drives the epochs: it opens an epoch
on the server and the board, waits until every partition reported it, then scores, records,
checkpoints and decides to stop exactly as with a job per epoch; the replicas' mini-batches,
positions and exactly-once updates are the same.

Barrier, because every task must run at once: a task that finished its epoch waits for the
others, so a task that could not get a slot would stall the fit. Spark starts a barrier
stage's tasks together or not at all (it checks the slots first), and reruns them together if
one fails; a trailing one-partition shuffle makes the stage a shuffle-map stage, which Spark
does rerun (a failed barrier result stage aborts the job). Falls back to a job per epoch where
the slots cannot be counted on (dynamic allocation).

Each cached partition goes whole to one task, through one shuffle where needed
(``data.regroup``: a barrier stage cannot merge partitions, nor start from a lineage that
did), and the task splits its rows back into their partitions.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from sparkdownpour.data.regroup import partitions_to_tasks
from sparkdownpour.replica.resident import serve_partitions
from sparkdownpour.replica.spec import STATS_DDL, STATS_SCHEMA, ReplicaSpec
from sparkdownpour.server.epoch_board import EpochBoard, create_epoch_board_app
from sparkdownpour.session import conf_value, default_parallelism, task_cpus
from sparkdownpour.transport.board import ResidentTasks

logger = logging.getLogger(__name__)

__all__ = ["ResidentReplicas", "resident_tasks"]


def resident_tasks(spark, partitions: int, info: dict) -> int | None:
    """How many resident tasks train ``partitions`` partitions (one per task slot, at most one
    per partition); None where a job per epoch must be run. Says which in ``info``."""
    if (conf_value(spark, "spark.dynamicAllocation.enabled", "false") or "").lower() == "true":
        info["epoch_jobs"] = "one Spark job per epoch (resident=True needs a fixed set of " \
                             "task slots; dynamic allocation is on)"
        logger.warning("resident=True: %s", info["epoch_jobs"])
        return None
    slots = max(default_parallelism(spark) // task_cpus(spark), 1)
    tasks = min(partitions, slots)
    info["epoch_jobs"] = (f"one resident Spark stage: {partitions} partitions in {tasks} "
                          f"tasks on {slots} task slots")
    return tasks


def max_arrow_records(spark) -> int:
    return int(conf_value(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
               or 10000)


class ResidentReplicas(ResidentTasks):
    """The driver's side: the epoch board's server, and the resident stage's job in a thread.

    ``start`` launches the stage; ``run_epoch(epoch)`` posts an epoch and returns every
    partition's statistics row once all reported; ``close()`` tells the tasks to stop and
    waits for the stage (``transport.board.ResidentTasks``).
    """

    def __init__(self, partitions: int, tasks: int, *, host: str, token: str,
                 max_request_bytes: int, timeout: float, ssl_context=None) -> None:
        super().__init__(EpochBoard(partitions, tasks, STATS_SCHEMA.names),
                         create_epoch_board_app, host=host, token=token,
                         max_request_bytes=max_request_bytes, timeout=timeout,
                         name="resident replicas", ssl_context=ssl_context)
        self.tasks = tasks

    def start(self, frame, spec: ReplicaSpec, run_job: Callable[[Callable[[], list]], list], *,
              cancel: Callable[[], None]) -> None:
        """Launch the stage over ``frame`` (the cached partitions): ``run_job(collect)`` runs it
        under the run's job tag; ``cancel()`` interrupts it."""
        function = functools.partial(serve_partitions, spec=spec, board=self.address,
                                     max_records=max_arrow_records(frame.sparkSession))
        # The partition ids are taken before the partitions are merged into tasks, so each
        # task can split its rows into the partitions they came from.
        # data.regroup: through a shuffle where needed
        numbered = partitions_to_tasks(frame, self.tasks, self.board.portions)
        self.launch(lambda: run_job(lambda: numbered.mapInArrow(function, STATS_DDL,
                                                                barrier=True)
                                    .repartition(1).collect()), cancel)

    def run_epoch(self, epoch: int) -> list[dict]:
        version = self.board.open(epoch)
        return self.board.collect(version, self.failure)
