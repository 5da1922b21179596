"""The Downpour model replica: one Spark task's loop over its data partition.

Runs inside ``DataFrame.mapInArrow`` on an executor. Every ``n_fetch`` mini-batches it fetches the
parameters from the master model server, computes ``gradient()`` with TensorFlow on each
mini-batch, accumulates, and pushes the accumulated gradient every ``n_push`` mini-batches. When a
push is immediately followed by a fetch, one request does both (the server answers the push with
the fresh parameters), which halves the round trips of the common ``n_fetch = n_push = 1`` case.
Yields one statistics row per partition.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from sparkdownpour.data.batches import mini_batches
from sparkdownpour.replica.keras_model import GradientFunction, ModelSpec, assign_trainable
from sparkdownpour.replica.worker import configure_threads, freeze_long_lived_objects
from sparkdownpour.server.client import ParameterClient

STATS_SCHEMA = pa.schema([
    ("partition", pa.int32()), ("attempt", pa.int32()), ("pid", pa.int64()),
    ("steps", pa.int64()), ("examples", pa.int64()), ("loss_sum", pa.float64()),
    ("fetches", pa.int64()), ("pushes", pa.int64()),
    ("compute_s", pa.float64()), ("comm_s", pa.float64()), ("model_build_s", pa.float64()),
])
STATS_DDL = ("partition int, attempt int, pid long, steps long, examples long, loss_sum double, "
             "fetches long, pushes long, compute_s double, comm_s double, model_build_s double")


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica needs, as plain values (no session, server or lock inside)."""

    run_id: str
    model: ModelSpec
    url: str
    token: str
    batch_size: int
    n_fetch: int
    n_push: int
    epoch: int
    seed: int
    request_timeout: float
    max_steps: int = 0  # 0: the whole partition (warm-start uses a bound)
    task_cpus: int = 1  # spark.task.cpus: TensorFlow's op threads per replica


class _Replica:
    """A built model and its compiled gradient, kept per Python worker and reused."""

    def __init__(self, spec: ModelSpec, task_cpus: int) -> None:
        configure_threads(task_cpus)
        self.model = spec.build()
        self.gradient = GradientFunction(self.model, spec.loss)
        self.frozen = False  # see freeze_long_lived_objects: done after the first traced step


_REPLICAS: "OrderedDict[str, _Replica]" = OrderedDict()
_KEEP = 2  # two runs alternating on one worker (e.g. two notebooks' fits) keep both warm


def _replica_for(spec: ReplicaSpec) -> tuple[_Replica, float]:
    cached = _REPLICAS.get(spec.run_id)
    if cached is not None:
        _REPLICAS.move_to_end(spec.run_id)
        return cached, 0.0
    start = time.perf_counter()
    replica = _Replica(spec.model, spec.task_cpus)
    _REPLICAS[spec.run_id] = replica
    while len(_REPLICAS) > _KEEP:
        _REPLICAS.popitem(last=False)
    return replica, time.perf_counter() - start


def _task_identity() -> tuple[int, int]:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:  # called outside Spark (tests of the loop itself)
        return 0, 0
    return ctx.partitionId(), ctx.attemptNumber()


_END = object()


def _with_last(items: Iterator) -> Iterator[tuple[object, bool]]:
    """Pair each item with whether it is the last, so the final push asks for nothing back."""
    iterator = iter(items)
    previous = next(iterator, _END)
    while previous is not _END:
        current = next(iterator, _END)
        yield previous, current is _END
        previous = current


def run_partition(batches: Iterator[pa.RecordBatch], spec: ReplicaSpec) -> Iterator[pa.RecordBatch]:
    """Train on one partition against the server; yield one row of statistics."""
    partition, attempt = _task_identity()
    replica, build_s = _replica_for(spec)
    replica_id = f"p{partition}-a{attempt}"
    rng = np.random.default_rng([spec.seed, spec.epoch, partition])
    client = ParameterClient(spec.url, spec.token, timeout=spec.request_timeout)
    steps = examples = fetches = pushes = 0
    loss_sum = compute_s = comm_s = 0.0
    base_step, fresh, accumulated, pending = 0, False, None, 0
    try:
        for (x, y), last in _with_last(mini_batches(batches, spec.model.num_features,
                                                     spec.batch_size, rng)):
            last = last or (spec.max_steps and steps + 1 >= spec.max_steps)
            if steps % spec.n_fetch == 0 and not fresh:
                t0 = time.perf_counter()
                base_step, params = client.fetch()
                assign_trainable(replica.model, params)
                comm_s += time.perf_counter() - t0
                fetches += 1
            fresh = False
            t0 = time.perf_counter()
            loss, grads = replica.gradient(x, y)
            accumulated = grads if accumulated is None else [a + g for a, g in zip(accumulated, grads)]
            compute_s += time.perf_counter() - t0
            steps, pending = steps + 1, pending + 1
            examples += len(y)
            loss_sum += loss * len(y)
            if pending == spec.n_push:
                t0 = time.perf_counter()
                if steps % spec.n_fetch == 0 and not last:  # the next step fetches: get them now
                    base_step, params = client.push(accumulated, base_step=base_step,
                                                    replica=replica_id, return_params=True)
                    assign_trainable(replica.model, params)
                    fetches, fresh = fetches + 1, True
                else:
                    client.push(accumulated, base_step=base_step, replica=replica_id)
                comm_s += time.perf_counter() - t0
                pushes, accumulated, pending = pushes + 1, None, 0
            if last:
                break
        if pending:  # the partition ended between two pushes: nothing computed is dropped
            t0 = time.perf_counter()
            client.push(accumulated, base_step=base_step, replica=replica_id)
            comm_s += time.perf_counter() - t0
            pushes += 1
    finally:
        client.close()
    if not replica.frozen:
        freeze_long_lived_objects()
        replica.frozen = True
    yield pa.RecordBatch.from_pylist([{
        "partition": partition, "attempt": attempt, "pid": os.getpid(), "steps": steps,
        "examples": examples, "loss_sum": loss_sum, "fetches": fetches, "pushes": pushes,
        "compute_s": compute_s, "comm_s": comm_s, "model_build_s": build_s,
    }], schema=STATS_SCHEMA)
