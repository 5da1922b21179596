"""The Sandblaster coordinator: batch L-BFGS whose vectors live on the shards.

The coordinator holds scalars only (objective values, dot products, step sizes); the parameter
vector ``x``, the gradient ``g``, the direction ``d`` and the history pairs stay in a
``VectorSpace``. ``evaluate(point)`` computes the data term of the objective and its gradient at
the vector named ``point``; in Sandblaster that is one Spark stage over the whole data set.
An optional L2 term ``l2/2 * x'(mask*x)`` is added on the shards.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sparkdownpour.lbfgs.line_search import strong_wolfe
from sparkdownpour.lbfgs.two_loop import GRADIENT, CurvatureHistory, direction_coefficients
from sparkdownpour.lbfgs.vectors import VectorSpace

logger = logging.getLogger(__name__)

Evaluate = Callable[[str], tuple[float, np.ndarray]]

STOP_REASONS = {
    "gtol": "gradient norm <= gtol",
    "tol": "relative objective change <= tol (or less promised by a full quasi-Newton step)",
    "max_iter": "max_iter iterations done",
    "precision": "the decrease a full step promises is below the objective's rounding (f_noise)",
    "line_search": "the line search failed even from steepest descent",
    "callback": "the callback asked to stop",
}
CURVATURE_EPS = 1e-10  # a pair with s'y <= eps * y'y would make H indefinite: skip it


@dataclass(frozen=True)
class LBFGSOptions:
    max_iter: int = 100
    tol: float = 1e-6           # relative objective change between iterations
    gtol: float = 1e-5          # Euclidean norm of the gradient
    history_size: int = 10
    l2: float = 0.0
    c1: float = 1e-4
    c2: float = 0.9
    max_line_search: int = 20   # objective evaluations per line search
    # Relative rounding noise of the objective: a step whose f rises by no more than this
    # (times |f|) is accepted on the slope alone (approximate Wolfe). 1e-7 is about float32's
    # precision, which Sandblaster's evaluations run in; 0 keeps exact Armijo.
    f_noise: float = 1e-7


@dataclass
class MinimizeResult:
    x: np.ndarray
    value: float
    grad_norm: float
    iterations: int
    evaluations: int
    stop_reason: str
    records: list[dict] = field(default_factory=list)

    @property
    def message(self) -> str:
        return STOP_REASONS[self.stop_reason]


class _Objective:
    """f and its gradient at a named point, L2 included, the gradient stored on the shards."""

    def __init__(self, space: VectorSpace, evaluate: Evaluate, l2: float) -> None:
        self.space, self.evaluate, self.l2 = space, evaluate, l2
        self.evaluations = 0

    def __call__(self, point: str, grad_name: str, direction: str | None = None
                 ) -> tuple[float, float, float]:
        """(objective, squared gradient norm, gradient . direction) at ``point``."""
        value, data_grad = self.evaluate(point)
        self.evaluations += 1
        if self.l2:
            program = [["mul", "_masked", "mask", point],
                       ["lincomb", grad_name, [["_data_grad", 1.0], ["_masked", self.l2]]],
                       ["dot", point, "_masked"]]
        else:
            program = [["lincomb", grad_name, [["_data_grad", 1.0]]]]
        program += [["dot", grad_name, grad_name]]
        if direction is not None:
            program += [["dot", grad_name, direction]]
        program += [["del", "_masked", "_data_grad"]]
        dots = self.space.run(program, puts={"_data_grad": np.asarray(data_grad)}).dots
        if self.l2:
            value += 0.5 * self.l2 * dots.pop(0)
        return float(value), dots[0], dots[1] if direction is not None else math.nan


def minimize(space: VectorSpace, evaluate: Evaluate, x0: np.ndarray, options: LBFGSOptions,
             mask: np.ndarray | None = None,
             callback: Callable[[dict], bool | None] | None = None) -> MinimizeResult:
    """Minimise ``evaluate``'s objective from ``x0``; every iteration becomes a record."""
    puts = {"x": np.asarray(x0, dtype=np.float64)}
    if options.l2:
        puts["mask"] = np.ones(space.size) if mask is None else np.asarray(mask, np.float64)
    space.run([], puts=puts)
    objective = _Objective(space, evaluate, options.l2)
    history = CurvatureHistory(options.history_size)
    started = time.perf_counter()
    value, gg, _ = objective("x", GRADIENT)
    history.update(None, {(GRADIENT, GRADIENT): gg})
    records: list[dict] = []
    reason, iteration = ("gtol" if math.sqrt(gg) <= options.gtol else "max_iter"), 0
    while reason == "max_iter" and iteration < options.max_iter:
        iteration += 1
        tick, evals_before = time.perf_counter(), objective.evaluations
        search, slope = _search(space, objective, history, value, gg, options)
        if not search.ok and -slope <= options.tol * max(abs(value), 1.0):
            # A full quasi-Newton step promises a change below tol: the line search failed
            # in the evaluation's rounding noise, so this is convergence, not a failure.
            reason, iteration = "tol", iteration - 1
            break
        if not search.ok and -slope <= options.f_noise * max(abs(value), 1.0):
            reason, iteration = "precision", iteration - 1  # tol asked for more than f can show
            break
        if not search.ok and len(history):
            logger.info("iteration %d: line search failed (%s); history reset", iteration,
                        search.reason)
            history.clear()
            search, slope = _search(space, objective, history, value, gg, options)
        if not search.ok:
            reason, iteration = "line_search", iteration - 1
            logger.info("iteration %d: line search failed from steepest descent: %s", iteration,
                        search.reason)
            break
        previous = value
        value, gg = search.value, _accept(space, history)
        record = {"iteration": iteration, "objective": value, "grad_norm": math.sqrt(gg),
                  "step_size": search.step, "evaluations": objective.evaluations - evals_before,
                  "total_evaluations": objective.evaluations, "history": len(history),
                  "wall_time_s": time.perf_counter() - tick,
                  "elapsed_s": time.perf_counter() - started}
        records.append(record)
        logger.info("L-BFGS %s", record)
        stop_asked = callback is not None and callback(record)
        if math.sqrt(gg) <= options.gtol:
            reason = "gtol"
        elif _objective_settled(previous, value, options):
            reason = "tol"
        elif stop_asked:
            reason = "callback"
    x = space.run([["get", "x"]]).gets["x"]
    return MinimizeResult(x=x, value=value, grad_norm=math.sqrt(gg), iterations=iteration,
                          evaluations=objective.evaluations, stop_reason=reason, records=records)


def _search(space, objective: _Objective, history: CurvatureHistory, value: float, gg: float,
            options: LBFGSOptions):
    """Form d = -H g on the shards and line-search along it; the last trial stays on the shards.
    Returns the search's result and the slope g'd it started from."""
    coefficients = direction_coefficients(history)
    basis = history.basis()
    slope = float(coefficients @ np.array([history.dot(b, GRADIENT) for b in basis]))
    if not slope < 0 and len(history):  # numerical trouble in H: fall back to steepest descent
        history.clear()
        coefficients, basis, slope = np.array([-1.0]), [GRADIENT], -gg
    first_step = 1.0 if len(history) else min(1.0, 1.0 / math.sqrt(gg))
    space.run([["lincomb", "d", [[name, float(c)] for name, c in zip(basis, coefficients)]]])

    def phi(t: float) -> tuple[float, float]:
        space.run([["lincomb", "trial", [["x", 1.0], ["d", t]]]])
        f, _, slope_t = objective("trial", "trial_g", direction="d")
        return f, slope_t

    return strong_wolfe(phi, value, slope, first_step, c1=options.c1, c2=options.c2,
                        max_evaluations=options.max_line_search, f_noise=options.f_noise), slope


def _objective_settled(previous: float, value: float, options: LBFGSOptions) -> bool:
    """The relative-change test. A change below f_noise is rounding, so a tol below f_noise
    asks for what the evaluations cannot show: the test is then off, and gtol or max_iter stop."""
    if options.tol < options.f_noise:
        return False
    return previous - value <= options.tol * max(abs(previous), abs(value), 1.0)


def _accept(space, history: CurvatureHistory) -> float:
    """Move x to the last trial; keep (s, y) if it has positive curvature. Returns |g|^2."""
    s, y = history.free_slot()
    wanted = history.dots_needed((s, y))
    program = [["lincomb", s, [["trial", 1.0], ["x", -1.0]]],
               ["lincomb", y, [["trial_g", 1.0], [GRADIENT, -1.0]]],
               ["lincomb", "x", [["trial", 1.0]]],
               ["lincomb", GRADIENT, [["trial_g", 1.0]]],
               ["del", "trial", "trial_g"]]
    program += [["dot", a, b] for a, b in wanted]
    products = dict(zip(wanted, space.run(program).dots))
    sy, yy = products[(s, y)], products[(y, y)]
    keep = sy > CURVATURE_EPS * yy and math.isfinite(sy) and yy > 0
    history.update((s, y) if keep else None, products)
    return products[(GRADIENT, GRADIENT)]
