"""n_push="auto": the period a replica chooses, its bounds, and the loop that uses it against a
real server on 127.0.0.1 (every mini-batch still applied exactly once)."""

import time

import numpy as np
import pytest

from sparkdownpour import DownpourConfig, optimizers
from sparkdownpour.keras_model import trainable_arrays
from sparkdownpour.observe.progress import expected_updates
from sparkdownpour.replica.loop import MAX_STRETCH, run_partition
from sparkdownpour.replica.push_period import (
    MAX_PERIOD,
    MIN_PUSHES_PER_EPOCH,
    PROBE_STEPS,
    REFINE_PUSHES,
    SKIP_STEPS,
    PeriodProbe,
    choose_period,
    period_cap,
    push_periods,
)
from sparkdownpour.server import ParameterServer, ParameterStore
from tests.replica.test_loop import batches, builder, spec, train_one_partition


def test_the_cap_keeps_every_replica_pushing_often_enough():
    # digits: 1437 rows, 4 replicas, batch 32: 11 mini-batches a replica, so it pushes each one
    assert period_cap(1437, 4, 32) == 1
    assert period_cap(2 * 128 * MIN_PUSHES_PER_EPOCH * 3, 2, 128) == 3
    assert period_cap(900_000, 2, 128) == min(MAX_PERIOD, 3515 // MIN_PUSHES_PER_EPOCH)
    assert period_cap(10**9, 2, 32) == MAX_PERIOD
    assert period_cap(0, 0, 32) == 1


@pytest.mark.parametrize("compute_s,comm_s,cap,period", [
    (1.0, 0.125, 16, 1),   # communication an eighth of compute already: every mini-batch
    (1.0, 0.13, 16, 2),
    (0.64, 1.0, 16, 13),   # issue 15's 1M-row MLP: 0.64 ms compute, 1 ms round trip a step
    (0.1, 1.0, 16, 16),
    (0.1, 1.0, 5, 5),
    (0.0, 1.0, 4, 4),
])
def test_the_period_leaves_communication_an_eighth_of_compute(compute_s, comm_s, cap, period):
    assert choose_period(compute_s, comm_s, cap) == period


def test_the_probe_skips_the_tracing_steps_and_decides_once():
    probe = PeriodProbe(cap=16)
    # The first steps are slow (tracing): 1 s of compute each; later 1 ms compute, 1 ms comm.
    compute = comm = 0.0
    chosen = []
    for step in range(1, PROBE_STEPS + 1):
        compute += 1.0 if step <= SKIP_STEPS else 0.001
        comm += 0.001
        chosen.append(probe.observe(step, compute, comm))
    assert chosen[:-1] == [None] * (PROBE_STEPS - 1)
    assert chosen[-1] == 8  # 8 * 1 ms / 1 ms, the tracing steps left out
    assert not probe.done


@pytest.mark.parametrize("compute_per_step,period", [(0.0005, 16), (0.000625, 13), (0.002, None)])
def test_the_second_look_lengthens_the_period_to_what_summed_compute_costs(compute_per_step,
                                                                            period):
    """At period 8 the mini-batches of a push are one TensorFlow call: cheaper per step, so the
    round trip (1 ms a push) is a larger share than the first look saw. The second look, after
    REFINE_PUSHES pushes, lengthens the period to match; it never shortens it."""
    probe = PeriodProbe(cap=16)
    steps, compute, comm = 0, 0.0, 0.0
    for _ in range(PROBE_STEPS):
        steps, compute, comm = steps + 1, compute + 0.001, comm + 0.001
        first = probe.observe(steps, compute, comm)
    assert first == 8
    chosen = []
    for _ in range(REFINE_PUSHES):
        steps, compute, comm = steps + 8, compute + 8 * compute_per_step, comm + 0.001
        chosen.append(probe.observe(steps, compute, comm))
    assert chosen == [None] * (REFINE_PUSHES - 1) + [period]
    assert probe.done and probe.observe(steps + 8, compute + 1.0, comm + 1.0) is None


@pytest.mark.parametrize("name,cap", [("sgd", 13), ("momentum", 13), ("adagrad", 13),
                                      ("adam", 13), ("staleness_aware", 13), ("dc_asgd", 0),
                                      ("delay_tolerant_adagrad", 0)])
def test_auto_keeps_a_period_of_one_for_rules_a_summed_push_would_distort(name, cap):
    """DC-ASGD's g*g compensation and AdaRevision's accumulators would take a sum of k
    gradients as one gradient k times as large; the rules linear in the gradient or counting
    the mini-batches (Adagrad, Adam) take it."""
    config = DownpourConfig(batch_size=128)
    rule = optimizers.get(name, learning_rate=0.1)
    assert push_periods(config, 900_000, 2, rule)["push_period_cap"] == cap


def test_auto_is_the_default_and_stands_aside_where_it_does_not_apply():
    config = DownpourConfig(batch_size=128)
    assert config.n_push == "auto"
    assert push_periods(config, 900_000, 2) == {"n_fetch": 1, "n_push": 1, "push_period_cap": 13}
    assert push_periods(config, 1437, 4)["push_period_cap"] == 0  # small data: fixed at 1
    assert push_periods(DownpourConfig(n_push="auto", mode="sync"), 10**7, 2)[
        "push_period_cap"] == 0
    assert push_periods(DownpourConfig(n_push=3, n_fetch=2), 10**7, 2) == {
        "n_fetch": 2, "n_push": 3, "push_period_cap": 0}
    # a fetch period given by hand: "auto" stands aside and pushes every mini-batch
    assert push_periods(DownpourConfig(n_fetch=3, batch_size=128), 10**7, 2) == {
        "n_fetch": 3, "n_push": 1, "push_period_cap": 0}
    with pytest.raises(ValueError, match="'often'"):
        DownpourConfig(n_push="often")
    with pytest.raises(ValueError, match="must be 1"):
        DownpourConfig(n_push=2, mode="sync")
    # the progress bar counts every mini-batch under "auto" (an upper bound)
    assert expected_updates(config, 1000, 2) == expected_updates(DownpourConfig(batch_size=128), 1000, 2)


@pytest.mark.parametrize("overlap", [False, True])
def test_the_loop_pushes_one_by_one_then_every_period_and_applies_every_mini_batch(overlap):
    steps = 100
    row, store = train_one_partition(optimizers.get("sgd", learning_rate=0.1), steps,
                                     push_period_cap=6, overlap=overlap)
    period = row["push_period"]
    assert 1 <= period <= 6
    # one push per probed step, then one per period (the last one partial); at most
    # REFINE_PUSHES more where the second look lengthened a first, shorter period
    at_final_period = PROBE_STEPS + -(-(steps - PROBE_STEPS) // period)
    assert at_final_period <= row["pushes"] <= at_final_period + REFINE_PUSHES
    status = store.status()
    assert status["updates_applied"] == row["pushes"]
    assert status["progress"] == {"1/0": steps}  # every mini-batch covered, exactly once
    if period > 1 and not overlap:  # each push after the probe also brings the parameters
        assert row["fetches"] == row["pushes"]


def test_the_loop_reports_its_fixed_period_without_a_cap():
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd"))
    with ParameterServer(store, host="127.0.0.1") as server:
        (stats,) = list(run_partition(batches(50), spec(server.url, server.token, n_push=3,
                                                        n_fetch=3)))
    assert stats.to_pylist()[0]["push_period"] == 3
    assert np.isclose(store.status()["updates_applied"], 4)


class SlowSGD(optimizers.get("sgd").__class__):
    """Plain SGD whose update takes 5 ms: every push is still out when the next period's
    mini-batches are computed."""

    def update(self, grads, state, params):
        time.sleep(0.005)
        return super().update(grads, state, params)


def test_overlap_stretches_a_push_while_the_last_is_out_and_applies_every_mini_batch_once():
    steps = 200
    row, store = train_one_partition(SlowSGD(learning_rate=0.1), steps, push_period_cap=4,
                                     overlap=True)
    # the probe chooses the cap (a 5 ms round trip against a tiny model's compute); pushes
    # then take in a quarter period more at a time while the last is out: up to 1.5 periods
    assert 4 < row["push_period"] <= MAX_STRETCH * 4
    after_probe = steps - PROBE_STEPS - REFINE_PUSHES * 4
    assert row["pushes"] < PROBE_STEPS + REFINE_PUSHES + after_probe / 4
    status = store.status()
    assert status["updates_applied"] == row["pushes"]
    assert status["progress"] == {"1/0": steps}  # every mini-batch covered, exactly once
    assert row["fetches"] >= row["pushes"] - 1  # every push but the last brings parameters


def test_without_overlap_a_push_never_stretches():
    row, store = train_one_partition(SlowSGD(learning_rate=0.1), 100, push_period_cap=4)
    assert row["push_period"] == 4
    assert store.status()["progress"] == {"1/0": 100}
