"""The update-rule interface the master model server applies on every push.

A rule is a small object with two pure functions, in the optax style:

    state = rule.init(params)
    new_params, new_state = rule.update(grads, state, params)

``params`` and ``grads`` are lists of float32 numpy arrays in the same order and shapes. The rule
never mutates its inputs, so the server can hand out a consistent snapshot while the next update
is being computed, and tests can replay any sequence of pushes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Arrays = Sequence[np.ndarray]


class UpdateRule:
    """Base class: holds validated hyper-parameters; subclasses implement init and update.

    A rule of your own may set two class attributes: ``counts_batches = True`` when its
    ``update`` takes ``batches=k`` for a push that sums k mini-batches, and
    ``takes_summed_pushes = True`` when such a push is as good an update for it as k pushes
    (then ``n_push="auto"`` may choose a period above 1; left False, it pushes every
    mini-batch)."""

    name = "rule"
    # True: ``update`` takes ``batches=k`` for a push that sums k mini-batches' gradients
    # (n_push > 1) and treats it as k steps; a rule linear in the gradient (SGD) needs nothing.
    counts_batches = False
    # True: a push summing k mini-batches' gradients is as good an update for this rule as
    # k pushes (linear in the gradient, or counting the batches), so n_push="auto" may choose
    # a period above 1. The others (g*g terms, accumulators that do not count) keep it at 1.
    takes_summed_pushes = False

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = check_positive("learning_rate", learning_rate)

    def init(self, params: Arrays) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, grads: Arrays, state: Any, params: Arrays) -> tuple[list[np.ndarray], Any]:
        raise NotImplementedError  # pragma: no cover - interface

    def get_config(self) -> dict:
        """Hyper-parameters as plain values, enough to rebuild the rule with ``get``."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def check_positive(name: str, value: float) -> float:
    """Accept a finite number > 0, else say what was received."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, received {value!r} of type {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, received {value!r}")
    return value


def check_unit_interval(name: str, value: float) -> float:
    """Accept a number in [0, 1), the range of every decay/momentum coefficient."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, received {value!r} of type {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), received {value!r}")
    return value


def zeros_like(params: Arrays) -> list[np.ndarray]:
    return [np.zeros(np.shape(p), dtype=np.float32) for p in params]
