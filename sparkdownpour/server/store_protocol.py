"""What the driver may ask of a parameter store, whatever kind it is.

Three kinds implement ``Store``: ``store.ParameterStore`` (one shard, in process),
``shards.ShardedStore`` (several, in process) and ``store_process.StoreProcess`` (one shard in a
child process, reached over its pipe; a ``ShardedStore`` over those is the process-backed
sharded store). Trainers, checkpoints, the progress bar and the dashboard use only these
members. What replicas do (push, fetch a frame) goes over HTTP to the shard's own app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """A parameter store as the driver sees it."""

    @property
    def step(self) -> int:
        """Updates applied so far."""

    def fetch(self) -> tuple[Any, list[np.ndarray]]:
        """``(step, params)``: the parameters now (a sharded store: every shard's step)."""

    def snapshot(self) -> list[np.ndarray]:
        """A copy of the parameters now."""

    def fetch_state(self) -> list[np.ndarray]:
        """The model's combined non-trainable state (``model_state``); [] if none is held."""

    def set_params(self, params: Sequence[Any]) -> None:
        """Replace the parameters (shapes must match)."""

    def open_epoch(self, epoch: int) -> None:
        """From now on, pushes of earlier epochs are refused (see ``ledger``)."""

    def progress(self, epoch: int, partition: int, **kwargs: Any) -> int:
        """How many mini-batches of ``partition`` were applied in ``epoch``."""

    def live_loss(self) -> float | None:
        """The recent training loss the replicas reported, if any."""

    def status(self) -> dict[str, Any]:
        """Counters for the history, the dashboard and ``/metrics`` (JSON-able)."""

    def export_state(self) -> dict[str, Any]:
        """Everything a checkpoint holds: parameters, rule state, ledger."""

    def restore_state(self, state: dict[str, Any]) -> None:
        """Adopt ``export_state``'s output (a resumed run)."""
