"""Every update rule converges on a quadratic and on Rosenbrock; constructors refuse bad values."""

import numpy as np
import pytest

from sparkdownpour import optimizers
from sparkdownpour.optimizers import SGD, Adagrad, Adam, Momentum


def quadratic_grad(params):
    # f(w) = 0.5 * sum(d * (w - 3)^2), condition number 10: the minimum is w = 3 everywhere.
    (w,) = params
    d = np.linspace(1.0, 10.0, w.size, dtype=np.float32).reshape(w.shape)
    return [d * (w - 3.0)]


def rosenbrock_grad(params):
    (w,) = params
    x, y = float(w[0]), float(w[1])
    return [np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], np.float32)]


def run(rule, grad_fn, start, steps):
    params = [np.array(start, dtype=np.float32)]
    state = rule.init(params)
    for _ in range(steps):
        params, state = rule.update(grad_fn(params), state, params)
    return params[0]


QUADRATIC_CASES = [
    (SGD(learning_rate=0.15), 300),
    (Momentum(learning_rate=0.02, momentum=0.9), 400),
    (Momentum(learning_rate=0.02, momentum=0.9, nesterov=True), 400),
    (Adagrad(learning_rate=0.5), 2000),
    (Adam(learning_rate=0.05), 2000),
]


@pytest.mark.parametrize("rule,steps", QUADRATIC_CASES, ids=lambda c: repr(c))
def test_rule_converges_on_ill_conditioned_quadratic(rule, steps):
    w = run(rule, quadratic_grad, np.zeros((2, 3)), steps)
    np.testing.assert_allclose(w, 3.0, atol=1e-3)


ROSENBROCK_CASES = [
    (SGD(learning_rate=1e-3), 60_000, 2e-2),
    (Momentum(learning_rate=2e-4, momentum=0.9), 30_000, 2e-2),
    (Adagrad(learning_rate=0.3), 40_000, 2e-2),
    (Adam(learning_rate=1e-2), 20_000, 2e-2),
]


@pytest.mark.parametrize("rule,steps,tol", ROSENBROCK_CASES, ids=lambda c: repr(c))
def test_rule_reaches_rosenbrock_minimum(rule, steps, tol):
    w = run(rule, rosenbrock_grad, [-1.2, 1.0], steps)
    np.testing.assert_allclose(w, [1.0, 1.0], atol=tol)


def test_rules_do_not_mutate_inputs():
    params = [np.ones(4, np.float32)]
    grads = [np.full(4, 0.5, np.float32)]
    for name in optimizers.RULES:
        rule = optimizers.get(name)
        state = rule.init(params)
        new, _ = rule.update(grads, state, params)
        assert np.all(params[0] == 1.0) and np.all(grads[0] == 0.5), name
        assert new[0].dtype == np.float32 and np.all(new[0] < 1.0), name


def test_adagrad_matches_its_docstring_formula():
    rule = Adagrad(learning_rate=0.1, initial_accumulator_value=0.1, epsilon=1e-7)
    p, g = [np.array([1.0, -2.0], np.float32)], [np.array([0.5, 3.0], np.float32)]
    new, state = rule.update(g, rule.init(p), p)
    acc = 0.1 + g[0] ** 2
    np.testing.assert_allclose(state.accumulator[0], acc, rtol=1e-6)
    np.testing.assert_allclose(new[0], p[0] - 0.1 * g[0] / (np.sqrt(acc) + 1e-7), rtol=1e-6)


def test_get_by_name_and_passthrough():
    rule = optimizers.get("AdaGrad", learning_rate=0.2)
    assert isinstance(rule, Adagrad) and rule.learning_rate == 0.2
    assert optimizers.get(rule) is rule
    assert optimizers.get("adam").get_config()["name"] == "adam"


@pytest.mark.parametrize("call,error,fragment", [
    (lambda: optimizers.get("adadelta"), ValueError, "unknown optimizer 'adadelta'"),
    (lambda: optimizers.get(3), TypeError, "received 3 of type int"),
    (lambda: SGD(learning_rate=-0.1), ValueError, "learning_rate must be a finite number > 0, received -0.1"),
    (lambda: SGD(learning_rate="fast"), TypeError, "received 'fast'"),
    (lambda: Adam(learning_rate=float("nan")), ValueError, "received nan"),
    (lambda: Momentum(momentum=1.5), ValueError, "momentum must be in [0, 1), received 1.5"),
    (lambda: Momentum(nesterov="yes"), TypeError, "nesterov must be True or False"),
    (lambda: Adam(beta_2=1.0), ValueError, "beta_2 must be in [0, 1)"),
    (lambda: Adagrad(epsilon=0), ValueError, "epsilon must be a finite number > 0"),
    (lambda: optimizers.get(SGD(), learning_rate=1.0), ValueError, "set them on the rule itself"),
])
def test_bad_hyper_parameters_are_refused_with_the_value(call, error, fragment):
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)


def test_a_push_summing_k_mini_batches_counts_as_k_steps_in_adaptive_rules():
    """n_push=k sums k gradients: Adagrad's accumulator takes the sum's square over k (what k
    equal gradients add), Adam moves its moments by the mean and steps k times as far."""
    params = [np.array([1.0, -2.0], np.float32)]
    g = np.array([0.5, -0.25], np.float32)
    adagrad = Adagrad(learning_rate=0.1)
    state = adagrad.init(params)
    _, summed = adagrad.update([4 * g], state, params, batches=4)
    np.testing.assert_allclose(summed.accumulator[0], state.accumulator[0] + 4 * g * g, rtol=1e-6)
    _, as_one = adagrad.update([4 * g], state, params)  # the old reading: one step of 4g
    assert np.all(as_one.accumulator[0] > summed.accumulator[0])
    adam = Adam(learning_rate=0.01)
    one_step, _ = adam.update([g], adam.init(params), params)
    k_steps, state_k = adam.update([4 * g], adam.init(params), params, batches=4)
    np.testing.assert_allclose(params[0] - k_steps[0], 4 * (params[0] - one_step[0]), rtol=1e-5)
    np.testing.assert_allclose(state_k.m[0], 0.1 * g, rtol=1e-6)
    # linear rules need nothing: SGD on the sum is already k steps
    assert not SGD.counts_batches and Adagrad.counts_batches and Adam.counts_batches
