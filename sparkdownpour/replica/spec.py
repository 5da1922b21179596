"""What a replica is given and what it reports: plain, picklable values only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pyarrow as pa

from sparkdownpour.keras_model import ModelSpec
from sparkdownpour.replica.dense_stack import DenseStack
from sparkdownpour.replica.devices import DeviceOptions

__all__ = ["STATS_DDL", "STATS_SCHEMA", "ReplicaSpec", "ReplicaStep", "new_stats"]

STATS_SCHEMA = pa.schema([
    ("partition", pa.int32()), ("attempt", pa.int32()), ("pid", pa.int64()),
    ("steps", pa.int64()), ("examples", pa.int64()), ("loss_sum", pa.float64()),
    ("fetches", pa.int64()), ("pushes", pa.int64()),
    ("compute_s", pa.float64()), ("comm_s", pa.float64()), ("model_build_s", pa.float64()),
    ("task_s", pa.float64()),
    ("skipped", pa.int64()), ("duplicates", pa.int64()), ("nonfinite", pa.int64()),
    ("clipped", pa.int64()), ("stale", pa.int64()), ("push_period", pa.float64()),
    ("device", pa.string()), ("gpu_addresses", pa.string()), ("visible", pa.string()),
    ("device_note", pa.string()), ("variable_device", pa.string()),
    ("compute_dtype", pa.string()),
])
STATS_DDL = ("partition int, attempt int, pid long, steps long, examples long, loss_sum double, "
             "fetches long, pushes long, compute_s double, comm_s double, model_build_s double, "
             "task_s double, "
             "skipped long, duplicates long, nonfinite long, clipped long, stale long, push_period double, "
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
    # n_push="auto": > 1, the loop picks n_push = n_fetch in 1..cap (replica.push_period)
    push_period_cap: int = 0
    task_cpus: int = 1  # spark.task.cpus: TensorFlow's op threads per replica
    request_retries: int = 3
    exactly_once: bool = True   # positioned pushes + resume from the server's progress
    skip_nonfinite: bool = False  # drop a NaN/Inf gradient here instead of failing the task
    clip_norm: float = 0.0      # > 0: clip each mini-batch gradient to this global L2 norm
    tls_ca: str | None = None   # PEM text of the CA that signed the server's certificate
    # Executor-side callbacks (``Callback.on_replica_step``), picklable: see callbacks.py.
    step_callbacks: tuple = ()
    shard_urls: tuple = ()  # every shard's URL, in shard order; () = the one server at url
    compression: str | None = None  # "fp16", "bf16" or "topk" pushes (see server.compression)
    topk_ratio: float = 0.01
    # mode="easgd": the replica's own rule (UpdateRule.get_config()), exchange every
    # easgd_tau mini-batches with moving rate easgd_alpha
    local_rule: dict | None = None
    easgd_tau: int = 4
    easgd_alpha: float = 0.5
    overlap: bool = False  # push on a background thread while the next mini-batch computes
    nice: int = 0  # > 0: train on a thread this much below the worker's priority (priority.py)
    devices: DeviceOptions = DeviceOptions()  # see replica.devices
    precision: str | None = None              # None/"float32", "mixed_float16", "mixed_bfloat16"
    state_replicas: int = 1  # the run's replicas: BatchNorm momentum m ** this (replica.state)
    # A Dense chain the replica computes in numpy on a CPU task (replica.dense_stack), or None
    dense_stack: DenseStack | None = None


class ReplicaStep(NamedTuple):
    """Where a replica is, as ``Callback.on_replica_step`` sees it after each mini-batch."""

    epoch: int
    partition: int
    attempt: int
    steps: int  # mini-batches this attempt has computed so far


def new_stats() -> dict[str, int]:
    return dict.fromkeys(("steps", "examples", "fetches", "pushes", "skipped", "duplicates",
                          "nonfinite", "clipped", "stale"), 0)
