"""A strong-Wolfe line search with cubic interpolation (Nocedal & Wright, Algorithms 3.5, 3.6).

``phi(t)`` returns ``(f(x + t d), f'(x + t d) . d)``; every call is a full pass over the data in
Sandblaster, so the search is frugal: it returns the *last* point it evaluated (the coordinator
keeps that point's gradient on the shards and accepts it without another pass), and both the
bracketing and the zoom phases are bounded.

Near the optimum a step's true decrease falls below the objective's rounding (Sandblaster
evaluates in float32), while the slope stays accurate. Exact Armijo then fails on noise, so a
step is also accepted on Hager & Zhang's (2005) approximate Wolfe conditions: the slope
condition, and f(t) no more than ``f_noise * |f0|`` above f0. Such a result says so
(``approximate=True``): its change in f is noise, not information.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Phi = Callable[[float], tuple[float, float]]


@dataclass(frozen=True)
class LineSearchResult:
    ok: bool
    step: float
    value: float
    slope: float
    evaluations: int
    reason: str = ""
    approximate: bool = False


def cubic_minimizer(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float | None:
    """Minimiser of the cubic through (a, fa, da) and (b, fb, db); None when it has none."""
    if a == b:
        return None
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    radicand = d1 * d1 - da * db
    if not math.isfinite(radicand) or radicand < 0:
        return None
    d2 = math.copysign(math.sqrt(radicand), b - a)
    denominator = db - da + 2.0 * d2
    if denominator == 0 or not math.isfinite(denominator):
        return None
    t = b - (b - a) * (db + d2 - d1) / denominator
    return t if math.isfinite(t) else None


def _safeguarded(t: float | None, lo: float, hi: float, margin: float = 0.1) -> float:
    """Keep an interpolated step well inside [lo, hi] (either order); bisect when it is not."""
    left, right = min(lo, hi), max(lo, hi)
    pad = margin * (right - left)
    if t is None or not left + pad <= t <= right - pad:
        return 0.5 * (lo + hi)
    return t


def strong_wolfe(phi: Phi, f0: float, slope0: float, step: float, *, c1: float = 1e-4,
                 c2: float = 0.9, max_evaluations: int = 20, max_step: float = 1e10,
                 f_noise: float = 0.0) -> LineSearchResult:
    """Find t with f(t) <= f0 + c1 t slope0 and |f'(t)| <= c2 |slope0| (or, approximately,
    f(t) <= f0 + f_noise |f0| and |f'(t)| <= c2 |slope0|).

    ``slope0`` must be negative (a descent direction). Fails (``ok=False``) after
    ``max_evaluations`` calls of ``phi`` or on a non-finite value it cannot back away from.
    """
    if not slope0 < 0:
        return LineSearchResult(False, 0.0, f0, slope0, 0, f"not a descent direction (slope "
                                                           f"{slope0:.3g} >= 0)")
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"need 0 < c1 < c2 < 1, received c1={c1}, c2={c2}")
    evaluations = 0

    def evaluate(t: float) -> tuple[float, float]:
        nonlocal evaluations
        evaluations += 1
        return phi(t)

    def armijo(t: float, f: float) -> bool:
        return f <= f0 + c1 * t * slope0

    def curvature(slope: float) -> bool:
        return abs(slope) <= -c2 * slope0

    def approximately_wolfe(f: float, slope: float) -> bool:
        # With c2 <= 1 - 2 c1 the slope condition implies Hager-Zhang's f'(t) <= (2c1-1) f'(0).
        return f_noise > 0 and f <= f0 + f_noise * abs(f0) and curvature(slope)

    def zoom(lo, f_lo, d_lo, hi, f_hi, d_hi) -> LineSearchResult:
        # Invariant: lo satisfies Armijo with the lowest f so far; f'(lo) (hi - lo) < 0.
        while evaluations < max_evaluations:
            t = _safeguarded(cubic_minimizer(lo, f_lo, d_lo, hi, f_hi, d_hi), lo, hi)
            f, d = evaluate(t)
            if math.isfinite(f) and (not armijo(t, f) or f >= f_lo) and approximately_wolfe(f, d):
                return LineSearchResult(True, t, f, d, evaluations, approximate=True)
            if not math.isfinite(f) or not armijo(t, f) or f >= f_lo:
                hi, f_hi, d_hi = t, f, d if math.isfinite(d) else 0.0
                if not math.isfinite(f):
                    f_hi, d_hi = math.inf, 0.0
                continue
            if curvature(d):
                return LineSearchResult(True, t, f, d, evaluations)
            if d * (hi - lo) >= 0:
                hi, f_hi, d_hi = lo, f_lo, d_lo
            lo, f_lo, d_lo = t, f, d
            if abs(hi - lo) <= 1e-12 * max(1.0, abs(lo)):
                break
        return LineSearchResult(False, lo, f_lo, d_lo, evaluations,
                                f"zoom found no strong-Wolfe step in {max_evaluations} evaluations")

    t_prev, f_prev, d_prev = 0.0, f0, slope0
    t = min(step, max_step)
    while evaluations < max_evaluations:
        f, d = evaluate(t)
        if not math.isfinite(f) or not math.isfinite(d):
            # Overshot into overflow: treat as "too far" and zoom back towards t_prev.
            return zoom(t_prev, f_prev, d_prev, t, math.inf, 0.0) if evaluations < max_evaluations \
                else LineSearchResult(False, t, f, d, evaluations, "non-finite objective")
        if not armijo(t, f) and approximately_wolfe(f, d):
            return LineSearchResult(True, t, f, d, evaluations, approximate=True)
        if not armijo(t, f) or (evaluations > 1 and f >= f_prev):
            return zoom(t_prev, f_prev, d_prev, t, f, d)
        if curvature(d):
            return LineSearchResult(True, t, f, d, evaluations)
        if d >= 0:
            return zoom(t, f, d, t_prev, f_prev, d_prev)
        if t >= max_step:
            break
        t_prev, f_prev, d_prev = t, f, d
        t = min(4.0 * t, max_step)  # still descending steeply: expand the bracket
    return LineSearchResult(False, t_prev, f_prev, d_prev, evaluations,
                            f"no strong-Wolfe step within {max_evaluations} evaluations")
