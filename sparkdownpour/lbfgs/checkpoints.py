"""Sandblaster's checkpoints: the current point ``x`` every ``checkpoint_every`` iterations.

A checkpoint is the Downpour server's format (``server.checkpoint``: one ``.npz``, written
atomically, SHA-256 verified, never pickled) holding ``x`` (float64, from the shards) and the
iterations done. ``fit(resume=True)`` starts L-BFGS again from the newest checkpoint whose
configuration matches: the iterations already done are not redone, but the curvature history
(the ``s``, ``y`` pairs on the shards) starts empty, so the first step after a resume is a
steepest-descent step, as after a failed line search. ``max_iter`` counts the iterations of
all the runs together.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from sparkdownpour.server.checkpoint import latest_checkpoint, write_checkpoint

__all__ = ["IterationCheckpoints", "config_hash", "resume_point"]

logger = logging.getLogger(__name__)


def config_hash(cfg, shapes, rows: int, features: int) -> str:
    """What must match for a point to be resumable: the objective (model shapes, loss, L2,
    data size). Not the partitioning or the shards: the objective does not depend on them."""
    described = {"shapes": [list(s) for s in shapes], "loss": str(cfg.loss), "l2": cfg.l2,
                 "l2_biases": cfg.l2_biases, "rows": rows, "features": features,
                 "algorithm": "sandblaster"}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def resume_point(directory, digest: str) -> tuple[np.ndarray, int, str] | None:
    """``(x, iterations done, path)`` of the newest usable checkpoint, or None (with a warning)."""
    state = latest_checkpoint(directory, config_hash=digest)
    if state is None:
        logger.warning("resume=True but no usable Sandblaster checkpoint in %s: starting "
                       "afresh", directory)
        return None
    return state["params"][0], int(state["step"]), state["path"]


class IterationCheckpoints:
    """Writes ``fetch_x()`` every ``every`` iterations and at the end (``finish``).

    ``done`` is the iterations an earlier, resumed run had already done: the numbering (and
    ``every``) continue from there."""

    def __init__(self, directory, *, every: int, keep: int, digest: str,
                 fetch_x: Callable[[], np.ndarray], done: int = 0) -> None:
        self.directory, self.every, self.keep, self.digest = directory, every, keep, digest
        self.fetch_x, self.done = fetch_x, done
        self.written_at: int | None = None

    def note(self, record: dict[str, Any]) -> None:
        """After iteration ``record["iteration"]`` (numbered from the first run's start)."""
        if record["iteration"] % self.every == 0:
            self._write(record["iteration"], record.get("objective"))

    def finish(self, iteration: int, objective: float | None) -> None:
        if iteration != self.written_at:
            self._write(iteration, objective)

    def _write(self, iteration: int, objective: float | None) -> None:
        x = np.asarray(self.fetch_x(), dtype=np.float64)
        state = {"params": [x], "rule_arrays": [], "rule_structure": None, "step": iteration,
                 "counters": {}, "ledger": {}}
        path = write_checkpoint(self.directory, state, config_hash=self.digest, keep=self.keep,
                                extra={"iterations_done": iteration, "objective": objective})
        self.written_at = iteration
        logger.info("Sandblaster checkpoint after iteration %d: %s", iteration, path)
