"""Compressed pushes: half-precision or top-k updates, decoded to float32 by the server.

Fetches stay exact float32; only the replica's update is compressed (``compression=`` knob):

- ``"fp16"``: IEEE half precision. Relative error at most 2**-11 for |g| in [2**-14, 65504];
  smaller values keep an absolute error of at most 2**-25; larger ones are clipped to ±65504
  (a gradient that large is the bug, not the rounding).
- ``"bf16"``: bfloat16 (float32's exponent, 8 bits of mantissa), rounded to nearest even:
  relative error at most 2**-8 over float32's whole range. Halves the bytes like fp16
  without its range problems.
- ``"topk"``: per array, the ``ceil(topk_ratio * size)`` entries of largest magnitude, as exact
  float32 values with their indices; the rest is kept on the replica and added to the next
  update (error feedback, Stich et al. 2018 / Lin et al. 2018), so nothing is ever lost: after
  any number of pushes, what was sent plus the residual equals the sum of the gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparkdownpour.transport.frames import Encoded

__all__ = ["COMPRESSIONS", "Compressor", "check_compression"]

COMPRESSIONS = ("fp16", "bf16", "topk")
_F16_MAX = np.float32(65504.0)


def check_compression(method: Any, topk_ratio: Any = 0.01) -> None:
    """Refuse an unknown method or a ratio outside (0, 1], naming the value and the choices."""
    if method is not None and method not in COMPRESSIONS:
        raise ValueError(f"compression must be None or one of {', '.join(COMPRESSIONS)}, "
                         f"received {method!r}")
    if isinstance(topk_ratio, bool) or not isinstance(topk_ratio, (int, float)) or \
            not 0 < topk_ratio <= 1:
        raise ValueError(f"topk_ratio must be a number in (0, 1], received {topk_ratio!r}")


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> the high 16 bits of the nearest bfloat16 (round half to even)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype("<u2")


class Compressor:
    """Encodes one replica's (one shard client's) updates; holds top-k's residual."""

    def __init__(self, method: str, topk_ratio: float = 0.01) -> None:
        check_compression(method, topk_ratio)
        self.method, self.topk_ratio = method, float(topk_ratio)
        self.residual: list[np.ndarray] | None = None

    def encode(self, arrays: Sequence[Any]) -> list[Encoded]:
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        if self.method == "fp16":
            return [Encoded(a.shape, "<f2", [np.clip(a, -_F16_MAX, _F16_MAX).astype("<f2")])
                    for a in arrays]
        if self.method == "bf16":
            return [Encoded(a.shape, "bf16", [bf16_bits(a)]) for a in arrays]
        if self.residual is None or [r.shape for r in self.residual] != [a.shape for a in arrays]:
            self.residual = [np.zeros(a.shape, np.float32) for a in arrays]
        out = []
        for i, a in enumerate(arrays):
            total = (self.residual[i] + a).reshape(-1)
            k = min(total.size, max(1, math.ceil(self.topk_ratio * total.size))) if total.size \
                else 0
            index = np.argpartition(np.abs(total), total.size - k)[total.size - k:] if k else \
                np.zeros(0, np.int64)
            index = np.sort(index).astype("<u4")
            values = total[index].astype("<f4")
            total[index] = 0.0  # what is sent leaves the residual
            self.residual[i] = total.reshape(a.shape)
            out.append(Encoded(a.shape, "<f4", [index, values], nnz=int(k)))
        return out
