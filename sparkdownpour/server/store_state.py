"""The checkpoint half of ``ParameterStore``: its whole state out and back in, never pickled.

``CheckpointState`` is mixed into ``store.ParameterStore`` and reads its fields under its lock;
``server.checkpoint`` writes what ``export_state`` returns and hands ``restore_state`` what it
read back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparkdownpour.server.checkpoint import shard_count
from sparkdownpour.server.rule_state import flatten_rule_state, unflatten_rule_state

__all__ = ["CheckpointState", "this_epoch_status"]


class CheckpointState:
    """``export_state`` / ``restore_state`` over a ``ParameterStore``'s fields."""

    def export_state(self) -> dict[str, Any]:
        """Everything a checkpoint needs, copied under the lock (see ``server.checkpoint``)."""
        with self._lock:
            rule_arrays: list[np.ndarray] = []
            structure = flatten_rule_state(self._state, rule_arrays)
            return {
                "params": [p.copy() for p in self._params],
                "rule_arrays": [np.array(a, copy=True) for a in rule_arrays],
                "rule_structure": structure,
                "step": self._step,
                "counters": {"applied": self._applied, "rejected": self._rejected,
                             "stale_sum": self._stale_sum, "stale_max": self._stale_max,
                             "this_epoch": list(self._this_epoch)},
                "ledger": self.ledger.export(),
                **({"model_state": self.model_state.export()} if self.model_state else {}),
            }

    def restore_state(self, state: dict[str, Any]) -> None:
        """Adopt a checkpoint's state; the rule's ``init`` gives the state's container types."""
        if shard_count(state) != 1:
            raise ValueError(f"the checkpoint was written by a {shard_count(state)}-shard "
                             f"server, this one has 1; resume with "
                             f"num_shards={shard_count(state)}")
        params = [np.array(p, dtype=np.float32, order="C", copy=True) for p in state["params"]]
        if [p.shape for p in params] != list(self._shapes):
            raise ValueError(f"checkpoint shapes {[p.shape for p in params]} differ from the "
                             f"model's {list(self._shapes)}")
        template = self.rule.init([p.copy() for p in params])
        rule_state = unflatten_rule_state(template, state["rule_structure"], state["rule_arrays"])
        counters = state["counters"]
        with self._lock:
            self._params, self._state, self._step = params, rule_state, int(state["step"])
            self._applied, self._rejected = int(counters["applied"]), int(counters["rejected"])
            self._stale_sum, self._stale_max = counters["stale_sum"], counters["stale_max"]
            self._this_epoch = tuple(counters.get("this_epoch", (0, 0, 0)))
            self._frame = None
            self.ledger.restore(state["ledger"])
        if self.model_state is not None and state.get("model_state"):
            self.model_state.restore(state["model_state"])


def this_epoch_status(applied: int, stale_sum: float, stale_max: int) -> dict[str, Any]:
    """``status()["this_epoch"]``: the open epoch's own updates and their staleness."""
    return {"updates_applied": applied, "staleness_mean": stale_sum / applied if applied else 0.0,
            "staleness_max": stale_max}
