"""The model's non-trainable state on the server: BatchNorm moving statistics and the like.

Only trainable variables are pushed and updated by the rule. A model's other floating weights
(``keras_model.state_variables``: BatchNorm's moving mean and variance, a frozen layer's
weights) change in each replica's forward passes instead, so each replica *reports* them:
when its partition ends, and every ``REPORT_EVERY`` mini-batches before that
(``replica.state``). ``ModelState`` keeps each partition's latest report (a retried or
speculative attempt of the partition replaces it, a report from an earlier epoch than the one
held is refused, so a straggler cannot overwrite anybody's) and serves their elementwise mean:
the *combined* state. Before any report it serves the initial values (the driver's model, or a
restored checkpoint's). Update rules never touch it.

Replicas pull the combined state when a partition starts, so their moving averages continue
from everybody's, and the driver puts it into its model after every epoch (the final model,
validation, checkpoints, saved models). One store holds it: the unsharded one, or shard 0 of a
sharded server (``shard_store_kwargs``); the others get no ``state``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from sparkdownpour.transport.frames import encode_frame

__all__ = ["COMBINE", "ModelState", "StateReport", "shard_store_kwargs"]

COMBINE = "mean"  # how reports are combined: the elementwise mean of each partition's latest


class StateReport(NamedTuple):
    """One partition's latest report."""

    epoch: int
    attempt: int
    arrays: list[np.ndarray]


def shard_store_kwargs(store_kwargs: dict, index: int) -> dict:
    """``store_kwargs`` for shard ``index``: only shard 0 holds the model's state."""
    if index == 0 or "state" not in store_kwargs:
        return store_kwargs
    return {k: v for k, v in store_kwargs.items() if k != "state"}


class ModelState:
    """Thread-safe non-trainable state: every partition's latest report and their mean."""

    def __init__(self, arrays: Sequence[Any]) -> None:
        self._initial = [np.array(a, dtype=np.float32, order="C", copy=True) for a in arrays]
        if not self._initial:
            raise ValueError("a model state needs at least one array; give None for a model "
                             "without non-trainable state")
        self.shapes = tuple(a.shape for a in self._initial)
        self._lock = threading.Lock()
        self._reports: dict[int, StateReport] = {}
        self._combined = [a.copy() for a in self._initial]
        self._version = 0  # bumped by every accepted report and every restore
        self._received = self._refused = 0
        self._frame: tuple[int, bytes] | None = None

    # -- replicas ------------------------------------------------------------------------

    def check(self, arrays: Sequence[Any]) -> list[np.ndarray]:
        """Float32 copies of ``arrays``; ``ValueError`` naming the array for a wrong count,
        shape or a non-finite value."""
        if len(arrays) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} state arrays, got {len(arrays)}")
        out = []
        for i, (a, shape) in enumerate(zip(arrays, self.shapes)):
            arr = np.array(a, dtype=np.float32, copy=True)
            if arr.shape != shape:
                raise ValueError(f"state array {i} has shape {arr.shape}, expected {shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"non-finite value (NaN/Inf) in state array {i}")
            out.append(arr)
        return out

    def report(self, arrays: Sequence[Any], *, epoch: int, partition: int,
               attempt: int = 0) -> bool:
        """Keep ``arrays`` as ``partition``'s latest state; False (and counted) when the
        partition already reported from a later epoch."""
        checked = self.check(arrays)
        with self._lock:
            held = self._reports.get(partition)
            if held is not None and held.epoch > epoch:
                self._refused += 1
                return False
            self._reports[partition] = StateReport(int(epoch), int(attempt), checked)
            self._received += 1
            self._combine()
            return True

    def _combine(self) -> None:
        """The mean of every partition's latest report (lock held)."""
        reports = list(self._reports.values())
        self._combined = [np.mean([r.arrays[i] for r in reports], axis=0, dtype=np.float64)
                          .astype(np.float32) for i in range(len(self.shapes))]
        self._version += 1

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def fetch(self) -> tuple[int, list[np.ndarray]]:
        """``(version, copies of the combined arrays)``."""
        with self._lock:
            return self._version, [a.copy() for a in self._combined]

    def fetch_frame(self) -> bytes:
        """The combined state as a ``state`` frame (step: the version), encoded once per
        version."""
        with self._lock:
            if self._frame is None or self._frame[0] != self._version:
                self._frame = (self._version, encode_frame(self._combined, kind="state",
                                                           step=self._version))
            return self._frame[1]

    # -- driver: status and checkpoints --------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._lock:
            epochs = sorted({r.epoch for r in self._reports.values()})
            return {"combine": COMBINE, "arrays": len(self.shapes),
                    "values": int(sum(a.size for a in self._combined)),
                    "partitions_reporting": len(self._reports), "reports_received": self._received,
                    "reports_refused": self._refused, "report_epochs": epochs,
                    "version": self._version,
                    "described": self._describe()}

    def _describe(self) -> str:
        n = len(self._reports)
        if not n:
            return "initial values (no replica has reported yet)"
        return f"mean of the latest report of each of {n} partition(s)"

    def export(self) -> dict[str, Any]:
        """The combined arrays and counters, for a checkpoint."""
        with self._lock:
            return {"arrays": [a.copy() for a in self._combined],
                    "counters": {"received": self._received, "refused": self._refused,
                                 "partitions": len(self._reports)}}

    def restore(self, exported: dict[str, Any]) -> None:
        """Adopt a checkpoint's combined state as the new initial value (no reports held)."""
        arrays = self.check(exported["arrays"])
        counters = exported.get("counters", {})
        with self._lock:
            self._initial, self._combined = arrays, [a.copy() for a in arrays]
            self._reports.clear()
            self._received = int(counters.get("received", 0))
            self._refused = int(counters.get("refused", 0))
            self._version += 1
