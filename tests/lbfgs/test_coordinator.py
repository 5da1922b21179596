"""The pure optimiser: two-loop recursion, line search and coordinator on known problems."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdownpour.lbfgs.coordinator import LBFGSOptions, minimize
from sparkdownpour.lbfgs.line_search import cubic_minimizer, strong_wolfe
from sparkdownpour.lbfgs.two_loop import GRADIENT, CurvatureHistory, direction_coefficients
from sparkdownpour.lbfgs.vectors import LocalVectors


def rosenbrock(x):
    value = np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    grad = np.zeros_like(x)
    grad[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    grad[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return value, grad


def numpy_objective(space, function):
    """evaluate(point) for the coordinator, reading the point back from the shards."""
    def evaluate(point):
        x = space.run([["get", point]]).gets[point]
        return function(x)
    return evaluate


@pytest.mark.parametrize("dim,shards", [(2, 1), (10, 3)])
def test_rosenbrock_reaches_the_known_minimum(dim, shards):
    space = LocalVectors(dim, shards)
    x0 = np.full(dim, -1.2)
    x0[1::2] = 1.0
    result = minimize(space, numpy_objective(space, rosenbrock), x0,
                      LBFGSOptions(max_iter=500, tol=0.0, gtol=1e-8))
    assert result.stop_reason == "gtol", result.message
    np.testing.assert_allclose(result.x, np.ones(dim), atol=1e-6)
    assert result.value < 1e-12


def test_ill_conditioned_quadratic_reaches_the_known_minimum():
    rng = np.random.default_rng(0)
    dim = 50
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eigenvalues = np.logspace(0, 4, dim)           # condition number 1e4
    a = (q * eigenvalues) @ q.T
    b = rng.normal(size=dim)
    exact = np.linalg.solve(a, b)

    def quadratic(x):
        return 0.5 * x @ a @ x - b @ x, a @ x - b

    space = LocalVectors(dim, 4)
    result = minimize(space, numpy_objective(space, quadratic), np.zeros(dim),
                      LBFGSOptions(max_iter=3000, tol=0.0, gtol=1e-5))
    assert result.stop_reason == "gtol", result.message
    # |x - x*| <= |g| / lambda_min = 1e-5.
    assert np.linalg.norm(result.x - exact) <= 1e-5
    # scipy's L-BFGS-B (m=10) needs about 650 iterations here; the records match the result.
    assert result.iterations == len(result.records) < 1000
    assert result.records[-1]["total_evaluations"] == result.evaluations


def test_l2_term_and_mask_are_applied_on_the_shards():
    """min 0.5|x - c|^2 + l2/2 |mask*x|^2 has the closed form c / (1 + l2*mask)."""
    c = np.array([1.0, -2.0, 3.0, 4.0, 5.0])
    mask = np.array([1.0, 1.0, 0.0, 1.0, 0.0])
    space = LocalVectors(5, 2)
    result = minimize(space, numpy_objective(space, lambda x: (0.5 * np.sum((x - c) ** 2), x - c)),
                      np.zeros(5), LBFGSOptions(tol=0.0, gtol=1e-10, l2=0.5), mask=mask)
    np.testing.assert_allclose(result.x, c / (1 + 0.5 * mask), rtol=1e-9)


def classic_two_loop(g, pairs):
    """Nocedal & Wright Algorithm 7.4, vectors in hand: the reference for the dot-product form."""
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (s @ y)
        q -= alpha * y
        alphas.append(alpha)
    s, y = pairs[-1]
    r = (s @ y) / (y @ y) * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        beta = (y @ r) / (s @ y)
        r += s * (alpha - beta)
    return -r


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_dot_product_two_loop_equals_the_classic_one(pairs_count, size, seed):
    rng = np.random.default_rng(seed)
    dim = 8
    history = CurvatureHistory(size)
    vectors = {GRADIENT: rng.normal(size=dim)}
    kept = []
    for _ in range(pairs_count):
        s = rng.normal(size=dim)
        y = s + 0.3 * rng.normal(size=dim)          # s'y > 0: a valid curvature pair
        name_s, name_y = history.free_slot()
        vectors[name_s], vectors[name_y] = s, y
        wanted = history.dots_needed((name_s, name_y))
        history.update((name_s, name_y), {(a, b): vectors[a] @ vectors[b] for a, b in wanted})
        kept = (kept + [(s, y)])[-size:]
    coefficients = direction_coefficients(history)
    direction = sum(c * vectors[name] for c, name in zip(coefficients, history.basis()))
    np.testing.assert_allclose(direction, classic_two_loop(vectors[GRADIENT], kept), rtol=1e-8,
                               atol=1e-10)


def test_cubic_minimizer_is_exact_on_a_cubic():
    f = lambda t: (t - 1.0) ** 3 - 3.0 * (t - 1.0) + 2.0   # local minimum at t = 2
    df = lambda t: 3.0 * (t - 1.0) ** 2 - 3.0
    assert cubic_minimizer(0.5, f(0.5), df(0.5), 3.0, f(3.0), df(3.0)) == pytest.approx(2.0)


@pytest.mark.parametrize("first_step", [1e-4, 1.0, 50.0])
def test_line_search_returns_a_strong_wolfe_step(first_step):
    f = lambda t: (t - 3.0) ** 2 + math.sin(3 * t)
    df = lambda t: 2 * (t - 3.0) + 3 * math.cos(3 * t)
    result = strong_wolfe(lambda t: (f(t), df(t)), f(0.0), df(0.0), first_step)
    assert result.ok, result.reason
    assert result.value == f(result.step) and result.slope == df(result.step)
    assert result.value <= f(0.0) + 1e-4 * result.step * df(0.0)
    assert abs(result.slope) <= 0.9 * abs(df(0.0))


def test_line_search_refuses_an_ascent_direction():
    result = strong_wolfe(lambda t: (t, 1.0), 0.0, 1.0, 1.0)
    assert not result.ok and result.evaluations == 0 and "descent" in result.reason


def test_line_search_backs_away_from_overflow():
    f = lambda t: math.inf if t > 2 else (t - 1.0) ** 2
    df = lambda t: math.nan if t > 2 else 2 * (t - 1.0)
    result = strong_wolfe(lambda t: (f(t), df(t)), 1.0, -2.0, 100.0)
    assert result.ok and 0 < result.step <= 2


def test_max_iter_is_the_stop_reason_when_reached():
    space = LocalVectors(2)
    result = minimize(space, numpy_objective(space, rosenbrock), np.array([-1.2, 1.0]),
                      LBFGSOptions(max_iter=3, tol=0.0, gtol=0.0))
    assert (result.stop_reason, result.iterations, len(result.records)) == ("max_iter", 3, 3)
    assert [r["iteration"] for r in result.records] == [1, 2, 3]
    assert all(b["objective"] < a["objective"] for a, b in zip(result.records, result.records[1:]))


def test_relative_objective_change_stops_a_flat_problem():
    space = LocalVectors(3)
    result = minimize(space, numpy_objective(space, lambda x: (float(x @ x), 2 * x)),
                      np.array([1.0, 2.0, 3.0]), LBFGSOptions(tol=1e-3, gtol=0.0))
    assert result.stop_reason in ("tol", "gtol") and result.value < 1e-6


def test_objective_rounding_noise_does_not_stop_the_search_before_gtol():
    # Sandblaster's evaluations run in float32: near the optimum the decrease a step promises is
    # below the objective's rounding, while the gradient is still accurate. The approximate Wolfe
    # conditions (Hager & Zhang 2005) let the search go on; exact Armijo alone fails here.
    rng = np.random.default_rng(3)
    dim = 20
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = (q * np.linspace(1.0, 10.0, dim)) @ q.T
    b = rng.normal(size=dim)

    def rounded(x):  # f rounded to float32 around a large constant: noise ~ 1e-4 absolute
        return float(np.float32(1e3 + 0.5 * x @ a @ x - b @ x)), a @ x - b

    exact = np.linalg.solve(a, b)
    for f_noise, reached in ((0.0, False), (LBFGSOptions().f_noise, True)):
        space = LocalVectors(dim, 2)
        result = minimize(space, numpy_objective(space, rounded), np.zeros(dim),
                          LBFGSOptions(max_iter=200, tol=0.0, gtol=1e-7, f_noise=f_noise))
        assert (result.stop_reason == "gtol") is reached, (f_noise, result.message)
    assert np.linalg.norm(result.x - exact) <= 1e-7


def test_line_search_accepts_an_approximate_wolfe_step_in_noise():
    # f's change along the step is below its noise (here: exactly flat); the slope says the
    # step is good. Accepted only within f_noise of f0.
    phi = lambda t: (1.0 + 1e-12, 0.1 * (t - 1.0) * 1e-3)
    assert strong_wolfe(phi, 1.0, -1e-4, 1.0, f_noise=1e-9).ok
    assert not strong_wolfe(phi, 1.0, -1e-4, 1.0, f_noise=0.0).ok
