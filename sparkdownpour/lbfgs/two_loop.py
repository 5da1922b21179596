"""The L-BFGS two-loop recursion, run on dot products only (the vector-free form).

The search direction is a linear combination of the basis ``s_0..s_{k-1}, y_0..y_{k-1}, g``, so
the recursion can run on the (2k+1)x(2k+1) matrix of their dot products and return the
combination's coefficients (Chen, Wang, Yu and Zhou, "Large-scale L-BFGS using MapReduce",
NIPS 2014). The vectors stay on the shards; each iteration needs one round of dot products for
the newest pair and gradient, and one linear combination to form the direction.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

GRADIENT = "g"


@dataclass
class CurvatureHistory:
    """The last ``size`` pairs (s_i, y_i), as slot names on the shards, and their dot products.

    ``size + 1`` slots rotate, so a candidate pair is written to a free slot and the oldest pair
    survives until the candidate passes the curvature check.
    """

    size: int
    pairs: deque = field(default_factory=deque)        # (s_name, y_name), oldest first
    _dots: dict = field(default_factory=dict)          # frozenset({a, b}) -> a . b

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"history_size must be >= 1, received {self.size}")

    def __len__(self) -> int:
        return len(self.pairs)

    def basis(self) -> list[str]:
        return [s for s, _ in self.pairs] + [y for _, y in self.pairs] + [GRADIENT]

    def free_slot(self) -> tuple[str, str]:
        used = {s for s, _ in self.pairs}
        slot = next(i for i in range(self.size + 1) if f"s{i}" not in used)
        return f"s{slot}", f"y{slot}"

    def dot(self, a: str, b: str) -> float:
        return self._dots[frozenset((a, b))]

    def dots_needed(self, candidate: tuple[str, str] | None) -> list[tuple[str, str]]:
        """Every product involving the (changed) gradient or the candidate pair, each once."""
        fresh = [GRADIENT] + (list(candidate) if candidate else [])
        others = [n for n in self.basis() if n != GRADIENT]
        return [(a, b) for i, a in enumerate(fresh) for b in fresh[i:] + others]

    def update(self, candidate: tuple[str, str] | None, products: dict[tuple[str, str], float]
               ) -> None:
        """Record the gradient's new products and, if given, append the candidate pair."""
        if candidate is not None:
            if len(self.pairs) == self.size:
                self.pairs.popleft()
            self.pairs.append(candidate)
        live = set(self.basis())
        # Forget everything about the gradient and dead slots; keep the old pairs' products.
        self._dots = {k: v for k, v in self._dots.items() if k <= live and GRADIENT not in k
                      and not (candidate and k & set(candidate))}
        for (a, b), value in products.items():
            if a in live and b in live:
                self._dots[frozenset((a, b))] = value

    def clear(self) -> None:
        """Drop every pair (after a failed line search): the next step is steepest descent."""
        self.pairs.clear()
        self._dots = {k: v for k, v in self._dots.items() if k == frozenset((GRADIENT,))}

    def gram(self) -> np.ndarray:
        names = self.basis()
        return np.array([[self.dot(a, b) for b in names] for a in names], dtype=np.float64)


def direction_coefficients(history: CurvatureHistory) -> np.ndarray:
    """Coefficients of ``d = -H g`` over ``history.basis()``, from dot products alone.

    With an empty history this is steepest descent, ``d = -g``. The initial inverse Hessian is
    ``gamma I`` with ``gamma = s'y / y'y`` of the newest pair (Nocedal & Wright eq. 7.20).
    """
    k = len(history)
    gram = history.gram()
    delta = np.zeros(2 * k + 1)
    delta[2 * k] = 1.0  # q = g
    rho = [1.0 / gram[i, k + i] for i in range(k)]
    alpha = np.zeros(k)
    for i in range(k - 1, -1, -1):
        alpha[i] = rho[i] * (delta @ gram[i])
        delta[k + i] -= alpha[i]
    if k:
        delta *= gram[k - 1, 2 * k - 1] / gram[2 * k - 1, 2 * k - 1]
    for i in range(k):
        beta = rho[i] * (delta @ gram[k + i])
        delta[i] += alpha[i] - beta
    return -delta
