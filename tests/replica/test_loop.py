"""The replica loop against a real server on 127.0.0.1, outside Spark (no TaskContext)."""

import socket
import time

import numpy as np
import pyarrow as pa
import pytest

from sparkdownpour import ParameterServerError, optimizers
from sparkdownpour.examples import build_mlp
from sparkdownpour.keras_model import ModelSpec, trainable_arrays
from sparkdownpour.replica.loop import ReplicaSpec, run_partition
from sparkdownpour.server import ParameterServer, ParameterStore


def builder():
    return build_mlp(inputs=4, hidden=8, outputs=3)


def batches(rows, chunk=7):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=rows).astype(np.float32)
    for start in range(0, rows, chunk):
        features = pa.array(list(x[start:start + chunk]), type=pa.list_(pa.float32()))
        yield pa.RecordBatch.from_arrays([features, pa.array(y[start:start + chunk])],
                                         ["features", "label"])


def spec(url, token, **changes):
    base = dict(run_id=f"test-{time.time_ns()}", model=ModelSpec(num_features=4,
                loss="sparse_categorical_crossentropy", builder=builder), url=url, token=token,
                batch_size=5, n_fetch=1, n_push=1, epoch=1, seed=0, request_timeout=5.0)
    return ReplicaSpec(**{**base, **changes})


def train_one_partition(rule, steps: int, **changes):
    """One replica's epoch of ``steps`` 5-row mini-batches against a real server: its
    statistics row and the store."""
    store = ParameterStore(trainable_arrays(builder()), rule)
    store.open_epoch(1)
    with ParameterServer(store, host="127.0.0.1") as server:
        (stats,) = list(run_partition(batches(5 * steps), spec(server.url, server.token,
                                                               **changes)))
    return stats.to_pylist()[0], store


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("n_fetch,n_push,fetches,pushes", [
    (1, 1, 10, 10),   # 50 rows, batch 5: 10 steps; each push brings the next parameters back
    (2, 3, 5, 4),     # fetch at steps 0,2,4,6,8; push after 3, 6, 9 and the last partial one
    (4, 2, 3, 5),
])
def test_fetch_and_push_cadence_and_nothing_dropped(n_fetch, n_push, fetches, pushes, overlap):
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd", learning_rate=0.1))
    with ParameterServer(store, host="127.0.0.1") as server:
        (stats,) = list(run_partition(batches(50), spec(server.url, server.token,
                                                        n_fetch=n_fetch, n_push=n_push,
                                                        overlap=overlap)))
    row = stats.to_pylist()[0]
    assert (row["steps"], row["examples"]) == (10, 50)
    assert row["pushes"] == pushes
    # With overlap, parameters returned by a push still in flight when the next fetch is due
    # serve as that fetch, so there can be fewer fetches, never more.
    assert row["fetches"] == fetches if not overlap else 0 < row["fetches"] <= fetches
    assert store.status()["updates_applied"] == pushes
    assert store.status()["replicas"] == {"p0-a0": pushes}


def test_max_steps_bounds_the_warm_start():
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd"))
    with ParameterServer(store, host="127.0.0.1") as server:
        (stats,) = list(run_partition(batches(50), spec(server.url, server.token, max_steps=3)))
    assert stats.to_pylist()[0]["steps"] == 3 and store.status()["updates_applied"] == 3


@pytest.mark.timeout(60)
def test_dead_server_fails_fast_with_parameter_server_error():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ParameterServerError, match=rf"127\.0\.0\.1:{port}"):
        list(run_partition(batches(20), spec(f"http://127.0.0.1:{port}", "token")))
    assert time.monotonic() - started < 20


def test_wrong_token_is_a_clear_error():
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd"))
    with ParameterServer(store, host="127.0.0.1") as server:
        with pytest.raises(ParameterServerError, match="401"):
            list(run_partition(batches(20), spec(server.url, "not-the-token")))
    assert store.status()["updates_applied"] == 0


def test_overlap_pushes_in_the_background_and_counts_the_extra_staleness():
    """With overlap each gradient is computed on parameters one push older: the server sees
    staleness 1 from a lone replica, and still applies every push exactly once, in order."""
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd", learning_rate=0.1))
    store.open_epoch(1)
    with ParameterServer(store, host="127.0.0.1") as server:
        (stats,) = list(run_partition(batches(50), spec(server.url, server.token, overlap=True)))
    row = stats.to_pylist()[0]
    status = store.status()
    assert row["pushes"] == status["updates_applied"] == 10
    assert status["progress"] == {"1/0": 10}
    assert status["staleness"]["max"] == 1 and status["staleness"]["histogram"]["1"] == 9


def test_summed_pushes_reach_adagrad_as_their_mini_batches_with_or_without_positions():
    """n_push=3 against Adagrad: a push with a position (exactly_once) and one without
    (exactly_once=False, which tells the count in its report) end at the same parameters."""
    finals = []
    for exactly_once in (True, False):
        row, store = train_one_partition(optimizers.get("adagrad", learning_rate=0.1), 10,
                                         n_push=3, n_fetch=3, exactly_once=exactly_once)
        assert row["pushes"] == 4  # 10 mini-batches: 3 + 3 + 3 + 1
        finals.append(store.snapshot())
    for with_position, without in zip(*finals):
        np.testing.assert_allclose(without, with_position, rtol=1e-6, atol=1e-7)
