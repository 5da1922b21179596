"""Row-sparse updates: a first layer's gradient with most rows zero, applied to its rows only.

With sparse inputs (hashed text, one-hot categories) a mini-batch touches a few rows of the
first ``Dense`` kernel (one row per input feature); every other row of its gradient is exactly
zero. A replica then pushes ``RowSparse(shape, rows, values)``: the sorted, distinct indices of
the non-zero rows and those rows. ``apply_update`` applies a push that holds some:

- ``SGD`` and ``Adagrad`` apply the rule to the pushed rows only. A zero gradient row changes
  neither the parameters nor Adagrad's accumulator, so the result equals the dense update bit
  for bit (the same float32 operations run on the same values, in the same order).
- ``Adam`` is *lazy*, as TensorFlow's sparse apply ops (``ResourceSparseApplyAdagrad``, and
  ``LazyAdam``) are: only the pushed rows' parameters and moments ``m``, ``v`` move; the step
  count (and so the bias correction) advances for the whole array. Untouched rows keep their
  moments instead of decaying them, and their parameters do not drift on old momentum. This
  differs from dense Adam, on purpose: it is what makes a push cost its rows, not the layer.
- Every other rule (momentum, the delay-aware rules, user rules) is given the dense
  equivalent (``RowSparse.to_dense``): exact, at the dense cost.

For a pushed row the lazy update runs the rule's own ``update`` on that row's slice of the
parameters and state, so it is the rule's formula, not a copy of it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparkdownpour.optimizers.rules import SGD, Adagrad, Adam

__all__ = ["LAZY_RULES", "RowSparse", "apply_update", "densify", "row_sparse"]

LAZY_RULES = (SGD, Adagrad, Adam)  # applied row by row; others get the dense equivalent


class RowSparse:
    """An array of ``shape`` that is zero except at ``rows`` (sorted, distinct), which hold
    ``values`` (shape ``(len(rows), *shape[1:])``, float32)."""

    __slots__ = ("shape", "rows", "values")

    def __init__(self, shape: Sequence[int], rows: np.ndarray, values: np.ndarray) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float32)

    def check(self, shape: Sequence[int] | None = None) -> RowSparse:
        """Raise ``ValueError`` unless the rows are distinct, ascending and in range and the
        values fit the shape; returns self."""
        if shape is not None and tuple(shape) != self.shape:
            raise ValueError(f"got shape {self.shape} expected {tuple(shape)}")
        if not self.shape:
            raise ValueError("a row-sparse array needs at least one dimension")
        if self.values.shape != (len(self.rows), *self.shape[1:]):
            raise ValueError(f"{len(self.rows)} rows need values of shape "
                             f"{(len(self.rows), *self.shape[1:])}, got {self.values.shape}")
        if len(self.rows):
            if self.rows[0] < 0 or self.rows[-1] >= self.shape[0]:
                raise ValueError(f"row index out of range for shape {self.shape} (rows "
                                 f"{int(self.rows.min())} to {int(self.rows.max())})")
            if len(self.rows) > 1 and not (np.diff(self.rows) > 0).all():
                raise ValueError("row indices must be distinct and ascending")
        return self

    @property
    def nbytes(self) -> int:
        return 4 * len(self.rows) + self.values.nbytes

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, np.float32)
        dense[self.rows] = self.values
        return dense

    def __repr__(self) -> str:
        return f"RowSparse(shape={self.shape}, rows={len(self.rows)})"


def densify(grads: Sequence[Any]) -> list:
    """Every ``RowSparse`` as its dense equivalent."""
    return [g.to_dense() if isinstance(g, RowSparse) else g for g in grads]


def row_sparse(grad: np.ndarray, max_fraction: float = 0.5) -> RowSparse | np.ndarray:
    """``grad`` (2-D or more) as a ``RowSparse`` when at most ``max_fraction`` of its rows are
    non-zero (exactly: a row with any non-zero entry is kept whole), else unchanged."""
    if grad.ndim < 2 or not grad.shape[0]:
        return grad
    nonzero = np.any(grad.reshape(grad.shape[0], -1) != 0, axis=1)
    rows = np.flatnonzero(nonzero)
    if len(rows) > max_fraction * grad.shape[0]:
        return grad
    return RowSparse(grad.shape, rows, grad[rows])


def _state_slice(state: Any, i: int, rows: np.ndarray | None) -> Any:
    """Array ``i``'s part of a rule state (None, or a NamedTuple of per-array lists and scalars),
    restricted to ``rows``."""
    if state is None:
        return None
    return type(state)(*[[f[i] if rows is None else f[i][rows]] if isinstance(f, list) else f
                         for f in state])


def apply_update(rule: Any, grads: Sequence[Any], state: Any, params: Sequence[np.ndarray],
                 batches: int = 1) -> tuple[list[np.ndarray], Any]:
    """``rule.update(grads, state, params)`` where some grads may be ``RowSparse``; ``batches``:
    the mini-batches the push sums, for the rules that count them (``counts_batches``)."""
    update = rule.update
    if batches != 1 and getattr(rule, "counts_batches", False):
        update = functools.partial(rule.update, batches=batches)
    if not any(isinstance(g, RowSparse) for g in grads):
        return update(grads, state, params)
    if type(rule) not in LAZY_RULES:  # exactly these: a subclass may keep other state
        return update(densify(grads), state, params)
    new_params, pieces = [], []
    for i, (g, p) in enumerate(zip(grads, params)):
        if isinstance(g, RowSparse):
            part, piece = update([g.values], _state_slice(state, i, g.rows), [p[g.rows]])
            out = np.array(p, dtype=np.float32, copy=True)
            out[g.rows] = part[0]
            new_params.append(out)
        else:
            part, piece = update([g], _state_slice(state, i, None), [p])
            new_params.append(part[0])
        pieces.append(piece)
    if state is None:
        return new_params, None
    fields = []
    for k, field in enumerate(state):
        if not isinstance(field, list):  # a scalar (Adam's count): every piece advanced it alike
            fields.append(pieces[0][k])
            continue
        merged = []
        for i, g in enumerate(grads):
            if isinstance(g, RowSparse):
                whole = np.array(field[i], copy=True)
                whole[g.rows] = pieces[i][k][0]
                merged.append(whole)
            else:
                merged.append(pieces[i][k][0])
        fields.append(merged)
    return new_params, type(state)(*fields)


def payload_fraction(grads: Sequence[Any]) -> float:
    """Bytes of a push with row-sparse arrays over its dense bytes (for logs and benchmarks)."""
    dense = sum(4 * math.prod(np.shape(g) if not isinstance(g, RowSparse) else g.shape)
                for g in grads)
    sent = sum(g.nbytes if isinstance(g, RowSparse) else 4 * np.size(g) for g in grads)
    return sent / max(dense, 1)
