"""Synchronous rounds (``mode="sync"``): the server averages one gradient per replica, then
applies the rule once.

Each replica of a Spark barrier stage pushes its mini-batch gradient for round ``k`` with
``{"sync_epoch": e, "sync_round": k, "sync_size": n, "sync_rows": r}``: ``n`` replicas take part
in the round (those with a k-th mini-batch, agreed with ``allGather``) and ``r`` is the rows
in this replica's batch. The round's gradient is the row-weighted mean, i.e. the gradient of
the mean loss over all the round's rows, exactly what one process would get from the rows of
every replica's batch put together. Rounds are applied in order; a round already applied (a
retried barrier stage re-pushing it) is refused as a duplicate. The store holds each push's
answer until its round is applied, which is what keeps the replicas in step.

Not thread-safe: ``ParameterStore`` calls it with its lock held.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["SYNC_KEYS", "SyncRounds", "SyncTag", "split_sync_meta"]

SYNC_KEYS = ("sync_epoch", "sync_round", "sync_size", "sync_rows")
MAX_REPLICAS = 65536


class SyncTag(NamedTuple):
    epoch: int
    round: int
    size: int
    rows: int


def split_sync_meta(meta: dict[str, Any]) -> tuple[SyncTag | None, dict[str, Any]]:
    """The push's ``SyncTag`` (None if it has none) and the rest of its meta.

    Raises ``ValueError`` naming the field for a partial tag or a bad value."""
    present = [k for k in SYNC_KEYS if k in meta]
    if not present:
        return None, meta
    missing = [k for k in SYNC_KEYS if k not in meta]
    if missing:
        raise ValueError(f"a synchronous push needs all of {list(SYNC_KEYS)}; missing {missing}")
    values = []
    for key in SYNC_KEYS:
        value = meta[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**53:
            raise ValueError(f"meta field {key!r} must be an integer in 0..2**53, got {value!r:.40}")
        values.append(value)
    tag = SyncTag(*values)
    if not 1 <= tag.size <= MAX_REPLICAS or tag.rows < 1:
        raise ValueError(f"sync_size must be in 1..{MAX_REPLICAS} and sync_rows >= 1, got "
                         f"{tag.size} and {tag.rows}")
    return tag, {k: v for k, v in meta.items() if k not in SYNC_KEYS}


class SyncRounds:
    """The open round's running row-weighted gradient sum."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.round = 0  # rounds applied in ``epoch``
        self._sum: list[np.ndarray] | None = None
        self._count = self._rows = 0

    def verdict(self, tag: SyncTag) -> str | None:
        """None if the push belongs to the open round, else ``duplicate`` / ``out_of_order``."""
        if tag.epoch != self.epoch:
            if self.epoch is not None and tag.epoch < self.epoch:
                return "closed_epoch"
            self.epoch, self.round = tag.epoch, 0
            self._sum, self._count, self._rows = None, 0, 0
        if tag.round < self.round:
            return "duplicate"
        if tag.round > self.round or self._count >= tag.size:
            return "out_of_order"
        return None

    def add(self, grads: Sequence[np.ndarray], tag: SyncTag) -> list[np.ndarray] | None:
        """Fold one replica's gradient in; the round's mean gradient once all have arrived."""
        weight = np.float64(tag.rows)
        if self._sum is None:
            self._sum = [np.asarray(g, np.float64) * weight for g in grads]
        else:
            for total, g in zip(self._sum, grads):
                total += np.asarray(g, np.float64) * weight
        self._count += 1
        self._rows += tag.rows
        if self._count < tag.size:
            return None
        mean = [(total / self._rows).astype(np.float32) for total in self._sum]
        self.round += 1
        self._sum, self._count, self._rows = None, 0, 0
        return mean

    def pending(self, tag: SyncTag) -> bool:
        """Whether ``tag``'s round is still open (not applied, not abandoned)."""
        return self.epoch == tag.epoch and self.round == tag.round and self._count > 0

    def applied(self, tag: SyncTag) -> bool:
        return self.epoch == tag.epoch and self.round > tag.round

    def abandon(self) -> None:
        """Drop the open round's partial sum (a replica never came; the stage will fail)."""
        self._sum, self._count, self._rows = None, 0, 0

    def status(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "rounds": self.round, "pending": self._count}
