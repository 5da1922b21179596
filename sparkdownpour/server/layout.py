"""How the flat parameter vector is split into shards, and put back together exactly.

DistBelief's server is sharded: each shard holds one contiguous range of the parameters and
applies updates to it on its own. ``ShardLayout`` is the one place that knows the split:

- ``num_shards == 1``: the shard holds the model's arrays as they are (no flattening, so the
  single-shard wire format, checkpoints and status are those of an unsharded server);
- ``num_shards > 1``: the model's arrays are flattened in order into one float32 vector, cut
  into ``num_shards`` near-equal contiguous ranges (``shard_bounds``), and each shard holds its
  range as one 1-D array. The update rules are elementwise, so applying a rule to each range
  on its own is the same as applying it to the whole vector.

Split and merge only copy float32 values, so ``merge(split(arrays))`` equals ``arrays`` bit for
bit (see tests/server/test_layout.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparkdownpour.optimizers.sparse import RowSparse

__all__ = ["ShardLayout", "shard_bounds"]


def shard_bounds(size: int, num_shards: int) -> list[tuple[int, int]]:
    """``num_shards`` contiguous near-equal ranges covering ``range(size)`` (sizes differ by <= 1)."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an integer >= 1, received {num_shards!r}")
    if num_shards > max(size, 1):
        raise ValueError(f"num_shards={num_shards} is more than the {size} parameters to split; "
                         f"use num_shards <= {max(size, 1)}")
    base, extra = divmod(size, num_shards)
    bounds, start = [], 0
    for i in range(num_shards):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class ShardLayout:
    """The split of arrays of ``shapes`` over ``num_shards`` shards."""

    def __init__(self, shapes: Sequence[Sequence[int]], num_shards: int = 1) -> None:
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        if not self.shapes:
            raise ValueError("shapes is empty: a model needs at least one array to shard")
        self.sizes = [math.prod(s) for s in self.shapes]
        self.size = sum(self.sizes)
        self.num_shards = num_shards
        self.bounds = shard_bounds(self.size, num_shards)

    def shard_shapes(self, index: int) -> list[tuple[int, ...]]:
        """The shapes shard ``index`` serves."""
        if self.num_shards == 1:
            return list(self.shapes)
        lo, hi = self.bounds[index]
        return [(hi - lo,)]

    def split(self, arrays: Sequence[Any]) -> list[list[np.ndarray]]:
        """Per shard, the list of float32 arrays it holds (views where no copy is needed)."""
        if len(arrays) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} arrays, got {len(arrays)}")
        # A row-sparse update (optimizers.sparse) passes through to one shard; ranges densify it.
        converted = [a if isinstance(a, RowSparse) and self.num_shards == 1 else
                     np.asarray(a.to_dense() if isinstance(a, RowSparse) else a, np.float32)
                     for a in arrays]
        for i, (a, shape) in enumerate(zip(converted, self.shapes)):
            if a.shape != shape:
                raise ValueError(f"shape mismatch at array {i}: got {a.shape} expected {shape}")
        if self.num_shards == 1:
            return [converted]
        flat = np.concatenate([a.reshape(-1) for a in converted])
        return [[flat[lo:hi]] for lo, hi in self.bounds]

    def merge(self, per_shard: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """The model's arrays from every shard's arrays (the inverse of ``split``)."""
        if len(per_shard) != self.num_shards:
            raise ValueError(f"expected arrays from {self.num_shards} shards, got {len(per_shard)}")
        if self.num_shards == 1:
            return [np.asarray(a, dtype=np.float32) for a in per_shard[0]]
        parts = []
        for i, (arrays, (lo, hi)) in enumerate(zip(per_shard, self.bounds)):
            if len(arrays) != 1 or np.shape(arrays[0]) != (hi - lo,):
                raise ValueError(f"shard {i} must give one array of shape ({hi - lo},), got "
                                 f"{[np.shape(a) for a in arrays]}")
            parts.append(np.asarray(arrays[0], dtype=np.float32))
        flat = np.concatenate(parts)
        out, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(flat[start:start + size].reshape(shape))
            start += size
        return out
