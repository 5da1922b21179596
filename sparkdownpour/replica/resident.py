"""A resident replica task: one Spark task that trains its partitions for every epoch.

With ``resident=True`` Downpour runs one long barrier stage for the whole fit instead of one
Spark job per epoch (``resident_replicas`` on the driver). Each task reads its share of the
cached data once and keeps it, as Arrow batches, in the Python worker. When there are more
partitions than task slots a task holds several: the driver numbers the rows by their cached
partition before merging partitions into tasks, and the task splits them again, so every
partition keeps its own mini-batches, positions and exactly-once ledger entries, the same as
when it is a task of its own. Then, for each epoch the epoch board posts, the task trains its
partitions one after the other with ``PartitionLoop`` (fetch, compute, push: nothing differs
from a per-epoch task) and reports each partition's statistics row to the board.

A retried stage's tasks (Spark reruns a barrier stage's tasks together) re-read their data,
ask the board for the epoch in progress, and resume each partition where the server's ledger
says it got to, as any retried task does. Their attempt number is Spark's task attempt id
(unique in the application; a rerun barrier stage starts its tasks' attempt numbers at 0
again), so the ledger and the status tell the attempts apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pyarrow as pa

from sparkdownpour.data.names import PARTITION_ID
from sparkdownpour.replica.loop import PartitionLoop
from sparkdownpour.replica.priority import run_at_nice
from sparkdownpour.replica.spec import ReplicaSpec
from sparkdownpour.server.epoch_client import EpochClient
from sparkdownpour.transport.board_client import MAX_WAIT_S, BoardAddress

__all__ = ["serve_partitions", "split_by_partition"]


def split_by_partition(batches: Iterator[pa.RecordBatch], max_records: int
                       ) -> dict[int, list[pa.RecordBatch]]:
    """The task's rows, per cached partition (``PARTITION_ID``), without that column, in
    batches of ``max_records`` rows counted from each partition's start: the batches a task of
    that partition alone gets, so an epoch's shuffled mini-batches are the same either way."""
    pieces: dict[int, list[pa.RecordBatch]] = {}
    for batch in batches:
        if len(batch) == 0:
            continue
        index = batch.schema.get_field_index(PARTITION_ID)
        ids = batch.column(index).to_numpy(zero_copy_only=False)
        rows = batch.remove_column(index)
        # Rows arrive partition after partition; a batch may straddle a boundary.
        starts = [0, *(np.flatnonzero(np.diff(ids)) + 1).tolist()]
        for begin, end in zip(starts, [*starts[1:], len(ids)]):
            pieces.setdefault(int(ids[begin]), []).append(rows.slice(begin, end - begin))
    return {partition: pa.Table.from_batches(parts).combine_chunks()
            .to_batches(max_chunksize=max_records)
            for partition, parts in pieces.items()}


def serve_partitions(batches: Iterator[pa.RecordBatch], spec: ReplicaSpec, board: BoardAddress,
                     max_records: int) -> Iterator[pa.RecordBatch]:
    """``mapInArrow(barrier=True)`` function: keep this task's partitions, train them for
    every epoch the board posts until it says stop. Reports go to the board; no rows."""
    from pyspark import TaskContext

    context = TaskContext.get()
    task, attempt = context.partitionId(), context.taskAttemptId()
    held = split_by_partition(batches, max_records)
    client = EpochClient(board.url, board.token, timeout=board.timeout,
                         retries=spec.request_retries, ca_data=spec.tls_ca)
    wait_s = min(MAX_WAIT_S, board.timeout / 2)

    def every_epoch() -> None:
        version = 0
        client.register(task, sorted(held))
        while True:
            answer = client.next_after(version, wait_s)
            if answer.get("stop"):
                return
            version = int(answer["version"])
            epoch_spec = replace(spec, epoch=int(answer["epoch"]))
            for partition in sorted(held):
                loop = PartitionLoop(epoch_spec, identity=(partition, attempt))
                row = loop.run(iter(held[partition])).to_pylist()[0]
                client.report(version, partition, row)

    try:
        run_at_nice(every_epoch, spec.nice)
    finally:
        client.close()
    yield from ()
