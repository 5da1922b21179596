"""Delay-aware rules under the deterministic delayed-gradient simulator (delays 0..32)."""

import numpy as np
import pytest

from sparkdownpour import optimizers
from sparkdownpour.server import ParameterStore
from tests.optimizers.delay_sim import START, loss, simulate

DELAYS = (0, 1, 2, 4, 8, 16, 32)
RULES = {  # the hyper-parameters each rule is run with in every test below
    "sgd": {"learning_rate": 0.03},
    "dc_asgd": {"learning_rate": 0.03, "variance_control": 1.0},
    "dc_asgd_adaptive": {"learning_rate": 0.03, "variance_control": 2.0},
    "staleness_aware": {"learning_rate": 0.5},
    "delay_tolerant_adagrad": {"learning_rate": 1.0},
}


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("delay", DELAYS)
def test_each_rule_converges_on_a_quadratic_under_delay(name, delay):
    losses = simulate(optimizers.get(name, **RULES[name]), delay, 2000)
    assert np.isfinite(losses).all()
    assert losses[-1] < 1e-3 * loss(START), (name, delay, losses[-1])


@pytest.mark.parametrize("variant", ["dc_asgd", "dc_asgd_adaptive"])
def test_dc_asgd_beats_plain_asgd_at_delay_16(variant):
    """Noisy gradients (the regime of the g ⊙ g Hessian approximation), same learning rate,
    three seeds: the mean loss over the last 200 updates."""
    def final(name):
        return np.mean([np.mean(simulate(optimizers.get(name, **RULES[name]), 16, 2000,
                                         noise=1.0, seed=s)[-200:]) for s in range(3)])
    plain, compensated = final("sgd"), final(variant)
    assert compensated < 0.85 * plain, (plain, compensated)


def test_delay_tolerant_adagrad_is_adagrad_without_delay():
    a = simulate(optimizers.get("delay_tolerant_adagrad", learning_rate=0.5), 0, 300, noise=1.0)
    b = simulate(optimizers.get("adagrad", learning_rate=0.5, epsilon=1e-30), 0, 300, noise=1.0)
    np.testing.assert_allclose(a, b, rtol=1e-3)


def test_staleness_aware_divides_the_step_by_the_staleness():
    rule = optimizers.get("staleness_aware", learning_rate=1.0)
    params, g = [np.ones(3, np.float32)], [np.full(3, 0.5, np.float32)]
    for tau, step in ((0, 0.5), (1, 0.5), (4, 0.125)):
        new, _ = rule.update(g, rule.init(params), params, staleness=tau)
        np.testing.assert_allclose(new[0], 1 - step)


def test_dc_asgd_without_a_known_read_is_plain_sgd():
    rule = optimizers.get("dc_asgd", learning_rate=0.1)
    params, g = [np.ones(3, np.float32)], [np.full(3, 2.0, np.float32)]
    new, _ = rule.update(g, rule.init(params), params, staleness=5, backup=None)
    np.testing.assert_allclose(new[0], 1 - 0.2)


def test_store_gives_staleness_and_the_readers_backup():
    """Through the real store: replica b read before a's push, so its push is 1 stale and is
    compensated with b's own backup (w_b = 0), not a's."""
    rule = optimizers.get("dc_asgd", learning_rate=1.0, variance_control=1.0)
    store = ParameterStore([np.zeros(2, np.float32)], rule)
    store.fetch_frame("a")
    store.fetch_frame("b")
    store.push([np.ones(2, np.float32)], replica="a", base_step=0)  # w = -1
    result = store.push([np.ones(2, np.float32)], replica="b", base_step=0)
    assert result.staleness == 1
    # g_c = 1 + 1 * 1 * 1 * (-1 - 0) = 0, so w stays -1
    np.testing.assert_allclose(store.snapshot()[0], [-1, -1])


def test_max_staleness_refuses_and_counts_stale_pushes():
    store = ParameterStore([np.zeros(2, np.float32)], optimizers.get("sgd", learning_rate=1.0),
                           max_staleness=1)
    ones = [np.ones(2, np.float32)]
    for _ in range(3):
        store.push(ones, replica="fast", base_step=store.step)
    refused = store.push(ones, replica="slow", base_step=0)  # 3 updates behind
    assert (refused.applied, refused.refusal, refused.staleness) == (False, "stale", 3)
    accepted = store.push(ones, replica="slow", base_step=2)  # 1 behind: allowed
    assert accepted.applied
    status = store.status()
    assert status["stale_refused"] == 1 and status["updates_applied"] == 4
    np.testing.assert_allclose(store.snapshot()[0], [-4, -4])


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_max_staleness_must_be_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match="max_staleness"):
        ParameterStore([np.zeros(2, np.float32)], optimizers.get("sgd"), max_staleness=bad)


def test_unknown_rule_name_lists_the_delay_rules():
    with pytest.raises(ValueError, match="dc_asgd.*staleness_aware|staleness_aware.*dc_asgd"):
        optimizers.get("dcasgd")
