"""ParameterStore: concurrency, staleness bookkeeping, validation that leaves the store unchanged."""

import json
import threading

import numpy as np
import pytest

from sparkdownpour.server.store import ParameterStore, PushResult
from sparkdownpour.transport.frames import decode_frame
from tests.server.conftest import SHAPES, PlainSGD, full, zeros


def params_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_copies_params_to_float32():
    original = [np.arange(6, dtype=np.float64).reshape(2, 3)]
    store = ParameterStore(original, PlainSGD())
    original[0][:] = -1  # the caller's array must not alias the store's
    step, params = store.fetch()
    assert step == 0 and params[0].dtype == np.float32
    np.testing.assert_array_equal(params[0], np.arange(6).reshape(2, 3))
    params[0][:] = 99  # neither may the fetched copy
    np.testing.assert_array_equal(store.snapshot()[0], np.arange(6).reshape(2, 3))


def test_rejects_bad_constructor_arguments():
    with pytest.raises(TypeError, match="init"):
        ParameterStore(zeros(), object())
    with pytest.raises(ValueError, match="empty"):
        ParameterStore([], PlainSGD())


@pytest.mark.timeout(30)
def test_concurrent_pushes_are_never_lost():
    threads, pushes = 8, 40
    store = ParameterStore(zeros(), PlainSGD(1.0))
    errors = []

    def worker(t):
        try:
            for _ in range(pushes):
                base, _ = store.fetch()
                # Integer-valued grads: float32 sums are exact, so the result is exact too.
                store.push(full(t + 1), replica=f"r{t}", base_step=base)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(20)
    assert not errors
    status = store.status()
    assert status["step"] == status["updates_applied"] == threads * pushes
    assert status["replicas"] == {f"r{t}": pushes for t in range(threads)}
    expected = -float(sum(t + 1 for t in range(threads)) * pushes)  # lr=1: params -= sum(grads)
    assert params_equal(store.snapshot(), full(expected))
    assert sum(status["staleness"]["histogram"].values()) == threads * pushes
    json.dumps(status)  # JSON-serializable


def test_staleness_is_recorded():
    store = ParameterStore(zeros(), PlainSGD())
    assert store.push(full(1), replica="a", base_step=0) == PushResult(1, 0)
    assert store.push(full(1), replica="b", base_step=0) == PushResult(2, 1)
    assert store.push(full(1), replica="b", base_step=0) == PushResult(3, 2)
    assert store.push(full(1), replica="c", base_step=10) == PushResult(4, 0)  # future: clamped
    for _ in range(70):
        store.push(full(0), replica="slow", base_step=0)
    s = store.status()["staleness"]
    assert s["max"] == 73
    assert s["histogram"]["0"] == 2 and s["histogram"]["1"] == 1 and s["histogram"]["2"] == 1
    assert s["histogram"][">64"] == 73 - 64
    assert s["mean"] == pytest.approx((0 + 1 + 2 + 0 + sum(range(4, 74))) / 74)


@pytest.mark.parametrize("grads, message", [
    (zeros()[:2], "expected 3 arrays, got 2"),
    (zeros([(3, 4), (6,), ()]), r"shape mismatch at array 1: got \(6,\) expected \(5,\)"),
    ([np.zeros((3, 4)), np.array([0, 0, np.nan, 0, 0]), np.zeros(())], r"non-finite .* in array 1"),
])
def test_bad_push_leaves_store_unchanged(grads, message):
    store = ParameterStore(full(2), PlainSGD())
    store.push(full(1), replica="a", base_step=0)
    before = store.snapshot()
    with pytest.raises(ValueError, match=message):
        store.push(grads, replica="a", base_step=0)
    status = store.status()
    assert params_equal(store.snapshot(), before)
    assert (status["step"], status["updates_applied"], status["updates_rejected"]) == (1, 1, 1)


def test_bad_base_step_is_rejected():
    store = ParameterStore(zeros(), PlainSGD())
    with pytest.raises(ValueError, match="base_step must be a non-negative integer, got -1"):
        store.push(zeros(), replica="a", base_step=-1)
    assert store.status()["updates_rejected"] == 1


def test_fetch_frame_is_cached_per_step_and_decodes():
    store = ParameterStore(full(3), PlainSGD())
    first = store.fetch_frame()
    assert store.fetch_frame() is first  # encoded once per step
    frame = decode_frame(first, expected_shapes=SHAPES)
    assert frame.kind == "params" and frame.step == 0
    assert params_equal(frame.arrays, full(3))
    store.push(full(1), replica="a", base_step=0)
    frame = decode_frame(store.fetch_frame())
    assert frame.step == 1 and params_equal(frame.arrays, full(2))


def test_set_params_replaces_and_invalidates_the_frame():
    store = ParameterStore(zeros(), PlainSGD())
    old = store.fetch_frame()
    store.set_params(full(5))
    assert params_equal(store.snapshot(), full(5))
    assert store.fetch_frame() != old
    with pytest.raises(ValueError, match=r"shape mismatch at array 0"):
        store.set_params(zeros([(4, 3), (5,), ()]))
    assert params_equal(store.snapshot(), full(5))


def test_broken_rule_fails_loudly_and_keeps_state():
    class Broken(PlainSGD):
        def update(self, grads, state, params):
            return params[:1], state

    store = ParameterStore(zeros(), Broken())
    with pytest.raises(RuntimeError, match="returned 1 arrays, expected 3"):
        store.push(zeros(), replica="a", base_step=0)
    assert store.step == 0


def test_status_contents():
    store = ParameterStore(zeros(), PlainSGD())
    store.note_traffic(received=10, sent=20)
    s = store.status()
    assert s["num_params"] == 12 + 5 + 1 and s["num_arrays"] == 3
    assert (s["bytes_in"], s["bytes_out"]) == (10, 20)
    assert s["uptime_s"] >= 0 and s["rule"] == "sgd"
    assert s["staleness"] == {"mean": 0.0, "max": 0, "histogram": {}}


def test_this_epoch_counts_only_the_open_epoch_and_survives_a_checkpoint():
    store = ParameterStore(zeros(), PlainSGD())
    grads = full(1.0)
    store.open_epoch(1)
    for base in (0, 0, 0):  # staleness 0, 1, 2
        store.push(grads, replica="r", base_step=base)
    assert store.status()["this_epoch"] == {"updates_applied": 3, "staleness_mean": 1.0,
                                            "staleness_max": 2}
    store.open_epoch(2)
    store.push(grads, replica="r", base_step=store.step)
    status = store.status()
    assert status["this_epoch"] == {"updates_applied": 1, "staleness_mean": 0.0,
                                    "staleness_max": 0}
    assert (status["updates_applied"], status["staleness"]["max"]) == (4, 2)  # the run's
    # A resume restores the interrupted epoch's counts and reopens the same epoch: kept.
    again = ParameterStore(zeros(), PlainSGD())
    again.restore_state(store.export_state())
    again.open_epoch(2)
    assert again.status()["this_epoch"] == status["this_epoch"]


def test_sharded_this_epoch_combines_the_shards():
    from sparkdownpour.server.shards import ShardedStore

    store = ShardedStore(zeros(), PlainSGD(), 2)
    store.open_epoch(1)
    first, second = store.layout.split(full(1.0))
    store.stores[0].push(first, replica="a", base_step=0)
    store.stores[1].push(second, replica="a", base_step=0)
    store.stores[1].push(second, replica="b", base_step=0)
    assert store.status()["this_epoch"] == {"updates_applied": 2, "staleness_mean": 1 / 3,
                                            "staleness_max": 1}


def test_a_positioned_push_tells_an_adaptive_rule_how_many_mini_batches_it_sums():
    """A push of mini-batches [0, 4) (n_push=4) reaches Adagrad as 4 batches: its accumulator
    grows by the sum's square over 4, as with four pushes of the mean; a push of [4, 5) is one."""
    from sparkdownpour.optimizers import Adagrad
    from sparkdownpour.server.ledger import Position

    params = [np.ones((2, 3), np.float32)]
    store = ParameterStore(params, Adagrad(learning_rate=0.1))
    store.open_epoch(1)
    start = store._state.accumulator[0].copy()
    grad = np.full((2, 3), 2.0, np.float32)
    assert store.push([grad], replica="r", base_step=0, position=Position(1, 0, 0, 4, 0)).applied
    np.testing.assert_allclose(store._state.accumulator[0], start + grad * grad / 4, rtol=1e-6)
    assert store.push([grad], replica="r", base_step=1, position=Position(1, 0, 4, 5, 0)).applied
    np.testing.assert_allclose(store._state.accumulator[0], start + 1.25 * grad * grad, rtol=1e-6)


def test_a_push_without_a_position_tells_an_adaptive_rule_its_mini_batches_in_its_report():
    """exactly_once=False sends no position: the report's ``batches`` does its part, so Adagrad
    treats the sum of 4 mini-batches as 4 steps either way; without it, a push is one."""
    from sparkdownpour.optimizers import Adagrad

    params = [np.ones((2, 3), np.float32)]
    store = ParameterStore(params, Adagrad(learning_rate=0.1))
    store.open_epoch(1)
    start = store._state.accumulator[0].copy()
    grad = np.full((2, 3), 2.0, np.float32)
    assert store.push([grad], replica="r", base_step=0, report={"batches": 4}).applied
    np.testing.assert_allclose(store._state.accumulator[0], start + grad * grad / 4, rtol=1e-6)
    assert store.push([grad], replica="r", base_step=1, report={"loss": 0.5}).applied
    np.testing.assert_allclose(store._state.accumulator[0], start + 1.25 * grad * grad, rtol=1e-6)
