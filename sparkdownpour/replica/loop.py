"""The Downpour model replica: one Spark task's loop over its data partition.

Runs inside ``DataFrame.mapInArrow`` on an executor. Every ``n_fetch`` mini-batches it fetches the
parameters from the master model server, computes ``gradient()`` with TensorFlow on each
mini-batch, accumulates, and pushes the accumulated gradient every ``n_push`` mini-batches. When a
push is immediately followed by a fetch, one request does both (the server answers the push with
the fresh parameters), which halves the round trips of the common ``n_fetch = n_push = 1`` case.
Yields one statistics row per partition.

Sharded servers: ``spec.shard_urls`` lists every shard; ``ShardedClient`` fetches from and pushes
to all of them at once, so the base step is a tuple (one step per shard). A push staler than the
server's ``max_staleness`` is refused (its mini-batches count as consumed): the replica refetches
before its next mini-batch.

Exactly once: every push names the mini-batches it covers (epoch, partition, [begin, end)). An
attempt first asks the server how far its partition got and skips those mini-batches without
computing them (the order is deterministic: cached data, a seeded shuffle); a push refused as a
duplicate (a speculative twin got there first) makes it skip ahead the same way.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from sparkdownpour.data.batches import mini_batches
from sparkdownpour.replica.devices import DeviceOptions, Placement, place
from sparkdownpour.keras_model import ModelSpec, assign_trainable
from sparkdownpour.replica.gradient import GradientFunction
from sparkdownpour.replica.precision import build_model
from sparkdownpour.errors import ParameterServerError
from sparkdownpour.replica.worker import configure_threads, freeze_long_lived_objects
from sparkdownpour.server.sharded_client import ShardedClient
from sparkdownpour.server.ledger import Position

logger = logging.getLogger(__name__)

STATS_SCHEMA = pa.schema([
    ("partition", pa.int32()), ("attempt", pa.int32()), ("pid", pa.int64()),
    ("steps", pa.int64()), ("examples", pa.int64()), ("loss_sum", pa.float64()),
    ("fetches", pa.int64()), ("pushes", pa.int64()),
    ("compute_s", pa.float64()), ("comm_s", pa.float64()), ("model_build_s", pa.float64()),
    ("skipped", pa.int64()), ("duplicates", pa.int64()), ("nonfinite", pa.int64()),
    ("clipped", pa.int64()), ("stale", pa.int64()),
    ("device", pa.string()), ("gpu_addresses", pa.string()), ("visible", pa.string()),
    ("device_note", pa.string()), ("variable_device", pa.string()),
    ("compute_dtype", pa.string()),
])
STATS_DDL = ("partition int, attempt int, pid long, steps long, examples long, loss_sum double, "
             "fetches long, pushes long, compute_s double, comm_s double, model_build_s double, "
             "skipped long, duplicates long, nonfinite long, clipped long, stale long, "
             "device string, gpu_addresses string, visible string, device_note string, "
             "variable_device string, compute_dtype string")


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
    request_retries: int = 3
    exactly_once: bool = True   # positioned pushes + resume from the server's progress
    skip_nonfinite: bool = False  # drop a NaN/Inf gradient here instead of failing the task
    clip_norm: float = 0.0      # > 0: clip each mini-batch gradient to this global L2 norm
    tls_ca: str | None = None   # PEM text of the CA that signed the server's certificate
    # Test hook: the first attempt (attemptNumber 0) of every task raises after computing this
    # many mini-batches, so tests can make Spark retry a task halfway. 0: never.
    fail_first_attempt_after: int = 0
    fail_epoch: int = 0  # ... in this epoch only (0: every epoch)
    shard_urls: tuple = ()  # every shard's URL, in shard order; () = the one server at url
    compression: str | None = None  # "fp16", "bf16" or "topk" pushes (see server.compression)
    topk_ratio: float = 0.01
    # mode="easgd": the replica's own rule (UpdateRule.get_config()), exchange every
    # easgd_tau mini-batches with moving rate easgd_alpha
    local_rule: dict | None = None
    easgd_tau: int = 4
    easgd_alpha: float = 0.5
    overlap: bool = False  # push on a background thread while the next mini-batch computes
    devices: DeviceOptions = DeviceOptions()  # see replica.devices
    precision: str | None = None              # None/"float32", "mixed_float16", "mixed_bfloat16"


class _Replica:
    """A built model and its compiled gradient, kept per Python worker and reused."""

    def __init__(self, spec: ReplicaSpec, placement: Placement) -> None:
        import tensorflow as tf

        configure_threads(spec.task_cpus)
        with tf.device(placement.device):  # the variables live where the gradient runs
            self.model = build_model(spec.model, spec.precision)
        self.gradient = GradientFunction(self.model, spec.model.loss, placement.device,
                                         spec.precision)
        variables = self.model.trainable_variables
        self.shapes = [tuple(v.shape) for v in variables]
        # Where TensorFlow really put the weights (a Keras variable wraps a tf.Variable).
        self.variable_device = str(getattr(getattr(variables[0], "value", None), "device", "")) \
            if variables else ""
        self.compute_dtype = str(next((layer.compute_dtype for layer in self.model.layers
                                       if layer.weights), self.model.compute_dtype))
        self.placement = placement  # the current task's (tasks of a worker run one at a time)
        self.frozen = False  # see freeze_long_lived_objects: done after the first traced step


_REPLICAS: "OrderedDict[tuple[str, str], _Replica]" = OrderedDict()
_KEEP = 2  # two runs alternating on one worker (e.g. two notebooks' fits) keep both warm


def replica_for(spec: ReplicaSpec) -> tuple[_Replica, float]:
    """This worker's replica for the run, on the device this task was given (see devices)."""
    placement = place(spec.devices)  # before anything initialises TensorFlow in this worker
    key = (spec.run_id, placement.device)
    cached = _REPLICAS.get(key)
    if cached is not None:
        _REPLICAS.move_to_end(key)
        cached.placement = placement
        return cached, 0.0
    start = time.perf_counter()
    replica = _Replica(spec, placement)
    _REPLICAS[key] = replica
    while len(_REPLICAS) > _KEEP:
        _REPLICAS.popitem(last=False)
    return replica, time.perf_counter() - start


def task_identity() -> tuple[int, int]:
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


def clip_by_global_norm(grads: list[np.ndarray], clip_norm: float) -> tuple[list[np.ndarray], float]:
    """Scale ``grads`` so their joint L2 norm is at most ``clip_norm``; also return the norm."""
    norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    if np.isfinite(norm) and norm > clip_norm:
        scale = np.float32(clip_norm / norm)
        grads = [g * scale for g in grads]
    return grads, norm


class _Pending:
    """The gradient accumulated since the last push, and what the push will report."""

    def __init__(self, begin: int) -> None:
        self.begin, self.count = begin, 0
        self.grads: list[np.ndarray] | None = None
        self.loss_sum, self.rows, self.nonfinite, self.clipped = 0.0, 0, 0, 0

    def add(self, grads, loss: float, rows: int) -> None:
        self.grads = grads if self.grads is None else [a + g for a, g in zip(self.grads, grads)]
        self.loss_sum, self.rows = self.loss_sum + loss * rows, self.rows + rows

    def report(self) -> dict:
        loss = self.loss_sum / self.rows if self.rows else None
        report = {"loss": loss if loss is not None and np.isfinite(loss) else None}
        if self.nonfinite:
            report["nonfinite"] = self.nonfinite
        if self.clipped:
            report["clipped"] = self.clipped
        return report


def run_partition(batches: Iterator[pa.RecordBatch], spec: ReplicaSpec) -> Iterator[pa.RecordBatch]:
    """Train on one partition against the server; yield one row of statistics.

    With ``spec.overlap`` a push (answered with the fresh parameters when the next step
    fetches) runs on a background thread while the next mini-batch computes on the parameters
    at hand (DistBelief's weakly synchronized threads): at most one push in flight, collected
    before the next push or fetch, so pushes stay in order and exactly-once; each gradient
    pushes the base step it was computed on, so the extra staleness is counted.
    """
    partition, attempt = task_identity()
    replica, build_s = replica_for(spec)
    replica_id = f"p{partition}-a{attempt}"
    rng = np.random.default_rng([spec.seed, spec.epoch, partition])
    client = client_for(spec, replica)
    courier = ThreadPoolExecutor(1, "sparkdownpour-push") if spec.overlap else None
    stats = new_stats()
    loss_sum = compute_s = comm_s = 0.0
    in_flight = None  # (future, want_params, position) of the push on the background thread

    def settle(result, want_params: bool, position) -> str:
        """Act on a push's outcome: "ok", "skip" (resume at the server's progress) or "stop"."""
        nonlocal base_step, fresh, since_sync, resume_at, pending
        outcome = client.last_push
        if outcome["applied"]:
            stats["pushes"] += 1
            if want_params:
                base_step, params = result
                assign_trainable(replica.model, params)
                stats["fetches"], fresh = stats["fetches"] + 1, True
            return "ok"
        if outcome["refusal"] == "stale":  # dropped as too stale: refetch, go on
            stats["stale"] += 1
            since_sync, fresh = 0, False
            return "ok"
        stats["duplicates"] += 1
        if not _continue_after_refusal(outcome, position, replica_id):
            return "stop"
        resume_at, since_sync, fresh = outcome["progress"], 0, False  # fetch before computing
        pending = _Pending(resume_at)
        return "skip"

    def collect() -> str:
        nonlocal in_flight, comm_s
        if in_flight is None:
            return "ok"
        (future, want_params, position), in_flight = in_flight, None
        t0 = time.perf_counter()
        result = future.result()
        comm_s += time.perf_counter() - t0  # only the wait the computation did not hide
        return settle(result, want_params, position)

    try:
        t0 = time.perf_counter()
        resume_at = client.progress(spec.epoch, partition, attempt=attempt, pid=os.getpid(),
                                    device=replica.placement.describe()) \
            if spec.exactly_once else 0
        comm_s += time.perf_counter() - t0
        base_step, fresh, since_sync = (0,) * len(client.clients), False, 0
        pending = _Pending(resume_at)
        for index, ((x, y), last) in enumerate(_with_last(
                mini_batches(batches, spec.model.num_features, spec.batch_size, rng))):
            last = last or bool(spec.max_steps and index + 1 >= spec.max_steps)
            if since_sync % spec.n_fetch == 0 and not fresh and collect() == "stop":
                break
            if index < resume_at:  # applied already, by an earlier or a concurrent attempt
                stats["skipped"] += 1
                if last:
                    break
                continue
            if since_sync % spec.n_fetch == 0 and not fresh:
                t0 = time.perf_counter()
                base_step, params = client.fetch(replica_id)
                assign_trainable(replica.model, params)
                comm_s += time.perf_counter() - t0
                stats["fetches"] += 1
            fresh = False
            computed_on = base_step
            t0 = time.perf_counter()
            loss, grads = replica.gradient(x, y)
            usable = True
            if spec.clip_norm or spec.skip_nonfinite:
                clipped, norm = clip_by_global_norm(grads, spec.clip_norm) if spec.clip_norm \
                    else (grads, float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads))))
                usable = bool(np.isfinite(norm) and np.isfinite(loss)) or not spec.skip_nonfinite
                if not usable:
                    pending.nonfinite += 1
                    stats["nonfinite"] += 1
                    logger.warning("replica %s: non-finite loss or gradient at mini-batch %d of "
                                   "epoch %d; skipped (skip_nonfinite=True)", replica_id, index,
                                   spec.epoch)
                elif clipped is not grads:
                    grads = clipped
                    pending.clipped += 1
                    stats["clipped"] += 1
            if usable:
                pending.add(grads, loss, len(y))
            compute_s += time.perf_counter() - t0
            stats["steps"] += 1
            stats["examples"] += len(y)
            loss_sum += loss * len(y) if np.isfinite(loss) else 0.0
            since_sync += 1
            pending.count += 1
            _fail_if_asked(spec, attempt, stats["steps"])
            if pending.count < spec.n_push and not last:
                continue
            if pending.grads is not None:
                action = collect()  # the previous push first: pushes stay in order
                if action == "stop":
                    break
                if action == "skip":
                    continue
                want_params = since_sync % spec.n_fetch == 0 and not last  # the next step fetches
                position = Position(spec.epoch, partition, pending.begin, index + 1, attempt) \
                    if spec.exactly_once else None
                send = functools.partial(client.push, pending.grads, base_step=computed_on,
                                         replica=replica_id, return_params=want_params,
                                         position=position, report=pending.report())
                if courier is not None and not last:
                    in_flight = (courier.submit(send), want_params, position)
                    fresh = want_params  # the parameters are on their way: no fetch
                else:
                    t0 = time.perf_counter()
                    result = send()
                    comm_s += time.perf_counter() - t0
                    action = settle(result, want_params, position)
                    if action == "stop" or (action == "skip" and last):
                        break
                    if action == "skip":
                        continue
            pending = _Pending(index + 1) if pending.grads is not None else pending
            pending.count = 0
            if last:
                break
        collect()
    finally:
        if courier is not None:
            courier.shutdown(wait=True)
        client.close()
    yield stats_batch(replica, partition=partition, attempt=attempt, loss_sum=loss_sum,
                      compute_s=compute_s, comm_s=comm_s, model_build_s=build_s, **stats)


def new_stats() -> dict[str, int]:
    return dict.fromkeys(("steps", "examples", "fetches", "pushes", "skipped", "duplicates",
                          "nonfinite", "clipped", "stale"), 0)


def stats_batch(replica: _Replica, **row) -> pa.RecordBatch:
    """The task's one statistics row; also freezes the worker's long-lived objects once."""
    if not replica.frozen:
        freeze_long_lived_objects()
        replica.frozen = True
    placement = replica.placement
    return pa.RecordBatch.from_pylist([{
        "pid": os.getpid(), **row, "device": placement.device,
        "gpu_addresses": ",".join(placement.addresses), "visible": placement.visible,
        "device_note": placement.note, "variable_device": replica.variable_device,
        "compute_dtype": replica.compute_dtype}], schema=STATS_SCHEMA)


def client_for(spec: ReplicaSpec, replica: _Replica) -> ShardedClient:
    return ShardedClient(spec.shard_urls or (spec.url,), spec.token, replica.shapes,
                         timeout=spec.request_timeout, retries=spec.request_retries,
                         ca_data=spec.tls_ca, compression=spec.compression,
                         topk_ratio=spec.topk_ratio)


def _continue_after_refusal(outcome: dict, position: Position, replica_id: str) -> bool:
    """After a refused push: True to skip ahead to the server's progress, False to stop."""
    reason = outcome.get("refusal")
    if reason == "duplicate":
        logger.info("replica %s: mini-batches [%d, %d) were applied by another attempt; "
                    "skipping to %s", replica_id, position.begin, position.end,
                    outcome.get("progress"))
        return True
    if reason == "closed_epoch":  # the driver has moved on: nothing left to contribute
        logger.info("replica %s: epoch %d is closed on the server; stopping", replica_id,
                    position.epoch)
        return False
    raise ParameterServerError(
        f"replica {replica_id}: push of mini-batches [{position.begin}, {position.end}) of "
        f"partition {position.partition} refused as {reason} (the server is at "
        f"{outcome.get('progress')}); the partition's mini-batches are not in the same order "
        "as in an earlier attempt, so this attempt cannot continue")


def _fail_if_asked(spec: ReplicaSpec, attempt: int, steps: int) -> None:
    if spec.fail_first_attempt_after and attempt == 0 and steps == spec.fail_first_attempt_after \
            and spec.fail_epoch in (0, spec.epoch):
        raise RuntimeError(f"injected failure after {steps} mini-batches on the first attempt "
                           "(ReplicaSpec.fail_first_attempt_after, a test hook)")
