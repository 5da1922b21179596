"""The replica loop under faults, against a real server on 127.0.0.1 (outside Spark)."""

import threading

import numpy as np
import pyarrow as pa
import pytest

from sparkdownpour import ParameterServerError, optimizers
from sparkdownpour.keras_model import trainable_arrays
from sparkdownpour.replica.loop import clip_by_global_norm, run_partition
from sparkdownpour.server import ParameterServer, ParameterStore
from sparkdownpour.testing import FailFirstAttempt
from tests.replica.test_loop import batches, builder, spec

pytestmark = pytest.mark.timeout(120)


def new_store(lr=0.1):
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd", learning_rate=lr))
    store.open_epoch(1)
    return store


def stats_of(out):
    (batch,) = list(out)
    return batch.to_pylist()[0]


def test_a_retried_attempt_resumes_after_what_was_applied():
    store = new_store()
    with ParameterServer(store, host="127.0.0.1") as server:
        with pytest.raises(RuntimeError, match="injected failure after 4 mini-batches"):
            stats_of(run_partition(batches(50), spec(server.url, server.token,
                                                     step_callbacks=(FailFirstAttempt(4),))))
        assert store.progress(1, 0) == 3  # the 4th mini-batch was computed, never pushed
        row = stats_of(run_partition(batches(50), spec(server.url, server.token)))
    assert (row["skipped"], row["steps"], row["pushes"]) == (3, 7, 7)
    status = store.status()
    assert status["updates_applied"] == 10 and status["duplicates_refused"] == 0
    assert status["progress"] == {"1/0": 10}


@pytest.mark.parametrize("n_push", [1, 3])
def test_two_concurrent_attempts_apply_every_mini_batch_exactly_once(n_push):
    """A speculative twin: two attempts of the same partition run at the same time."""
    store = new_store()
    rows, errors = [], []
    with ParameterServer(store, host="127.0.0.1") as server:
        def attempt():
            try:
                rows.append(stats_of(run_partition(batches(200), spec(server.url, server.token,
                                                                      n_push=n_push))))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=attempt) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(100)
    assert not errors
    batches_total = 40  # 200 rows in mini-batches of 5
    status = store.status()
    assert status["progress"] == {"1/0": batches_total}
    assert status["updates_applied"] == sum(r["pushes"] for r in rows) == -(-batches_total // n_push)
    # Every mini-batch was either computed by one of them and applied, or skipped/refused.
    assert status["duplicates_refused"] == sum(r["duplicates"] for r in rows)


def poisoned(rows, every):
    """Like ``batches`` but every ``every``-th row's features are NaN (the driver would refuse
    such data; a replica can still meet a NaN gradient, e.g. from an overflow)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    x[::every] = np.nan
    y = rng.integers(0, 3, size=rows).astype(np.float32)
    features = pa.array(list(x), type=pa.list_(pa.float32()))
    yield pa.RecordBatch.from_arrays([features, pa.array(y)], ["features", "label"])


def test_nonfinite_gradient_is_refused_by_default():
    store = new_store()
    with ParameterServer(store, host="127.0.0.1") as server:
        with pytest.raises(ParameterServerError, match=r"400 .*non-finite value \(NaN/Inf\)"):
            stats_of(run_partition(poisoned(50, 7), spec(server.url, server.token, seed=1)))
    assert store.status()["updates_rejected"] >= 1


def test_skip_nonfinite_skips_and_counts():
    store = new_store()
    before = store.snapshot()
    with ParameterServer(store, host="127.0.0.1") as server:
        row = stats_of(run_partition(poisoned(50, 7), spec(server.url, server.token,
                                                            skip_nonfinite=True)))
    # 8 of 50 rows are NaN; a mini-batch holding one has a NaN gradient.
    assert row["steps"] == 10 and 1 <= row["nonfinite"] <= 8
    status = store.status()
    assert status["updates_applied"] == row["pushes"] == 10 - row["nonfinite"]
    assert status["nonfinite_skipped"] == row["nonfinite"]
    # Skipped batches fold into the next push's range; trailing ones leave the progress short.
    assert 10 - row["nonfinite"] <= status["progress"]["1/0"] <= 10
    after = store.snapshot()
    assert all(np.isfinite(p).all() for p in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_clip_norm_bounds_every_update():
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd", learning_rate=1.0))
    before = store.snapshot()
    with ParameterServer(store, host="127.0.0.1") as server:
        row = stats_of(run_partition(batches(5), spec(server.url, server.token, clip_norm=1e-3)))
    assert row["clipped"] == 1 and store.status()["clipped"] == 1
    change = np.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(store.snapshot(), before)))
    assert change == pytest.approx(1e-3, rel=1e-3)  # lr 1: the step is the clipped gradient


def test_clip_by_global_norm():
    grads = [np.array([3.0, 0.0], np.float32), np.array([[4.0]], np.float32)]
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped[0], [0.6, 0.0], rtol=1e-6)
    same, _ = clip_by_global_norm(grads, 10.0)
    assert same is grads
