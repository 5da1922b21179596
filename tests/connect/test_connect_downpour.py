"""Downpour in a Spark Connect session: digits, the sync mode's barrier stage, an unreachable
server address, and the server's address and job tags without a SparkContext."""

import time

import numpy as np
import pytest

from sparkdownpour import Downpour
from sparkdownpour.examples import build_digits_mlp


def test_the_workers_import_the_checkout_under_test(connect):
    import sparkdownpour

    def where(batches):
        import pyarrow as pa

        import sparkdownpour as package

        for _ in batches:
            pass
        yield pa.RecordBatch.from_pylist([{"path": package.__file__}])

    paths = {row.path for row in connect.range(2, numPartitions=2)
             .mapInArrow(where, "path string").collect()}
    assert paths == {sparkdownpour.__file__}


def test_session_helpers_need_no_spark_context(connect):
    from sparkdownpour.session import (
        default_parallelism,
        driver_address,
        num_partitions,
        task_cpus,
    )

    assert driver_address(connect) == "127.0.0.1"
    assert driver_address(connect, "10.1.2.3") == "10.1.2.3"
    assert task_cpus(connect) == 1 and default_parallelism(connect) == 2
    assert num_partitions(connect.range(0, 100, numPartitions=3)) == 3


def test_digits_reach_095(connect_digits):
    frame, (x_test, y_test) = connect_digits
    result = Downpour(build_digits_mlp, epochs=8, verbose=0).fit(
        frame, "features", "label", validation_data=(x_test, y_test))
    accuracy = float(np.mean(np.argmax(result.model(x_test).numpy(), -1) == y_test))
    assert accuracy >= 0.95
    info = result.history.info
    # 4 partitions on 2 task slots: merged (after the validation pass) into one replica each.
    assert info["partitions"] == 2 and info["server"].startswith("http://127.0.0.1:")
    assert info["replicas_chosen"] == "2 replicas for 4 partitions on 2 task slots"
    assert info["probe_s"] < 30
    # A local Connect server: its executors share this machine's cores with the server.
    assert info["replica_nice"] == 5


def test_resident_replicas_train_every_epoch_in_one_stage(connect_digits):
    frame, (x_test, y_test) = connect_digits
    # num_replicas equal to the frame's partitions: its 4 partitions kept, no shuffle.
    result = Downpour(build_digits_mlp, epochs=8, verbose=0, resident=True,
                      num_replicas=4).fit(frame, validation_data=(x_test, y_test))
    history = result.history
    assert history.info["epoch_jobs"] == ("one resident Spark stage: 4 partitions in 2 tasks "
                                          "on 2 task slots")
    assert list(history["updates"]) == [48] * 8  # each partition's 12 mini-batches, once
    accuracy = float(np.mean(np.argmax(result.model(x_test).numpy(), -1) == y_test))
    assert accuracy >= 0.94  # 0.953-0.969 after 8 epochs in 12 classic runs; 0.931 after 4


def test_far_more_partitions_than_slots_are_merged_after_the_validation_pass(connect_digits):
    # Under Connect the partition count needs a job, so the validated frame is merged.
    frame, _ = connect_digits
    history = Downpour(build_digits_mlp, epochs=1, verbose=0).fit(frame.repartition(40)).history
    assert history.info["replicas_chosen"] == "2 replicas for 40 partitions on 2 task slots"
    assert history["replicas"] == [2] and history["examples"] == [history.info["rows"]]


def linear_model():
    import keras

    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        1, kernel_initializer="zeros", bias_initializer="zeros")])


def test_sync_mode_runs_its_barrier_stage(connect):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3).astype(np.float32)
    frame = connect.createDataFrame([(x[i].tolist(), float(y[i])) for i in range(40)],
                                    "features array<float>, label float").repartition(2)
    lr, epochs = 0.1, 3
    result = Downpour(linear_model, loss="mse", optimizer="sgd", learning_rate=lr,
                      batch_size=64, epochs=epochs, mode="sync", verbose=0).fit(frame)
    w, b = np.zeros(3), 0.0  # each round is one full-batch gradient step over all 40 rows
    for _ in range(epochs):
        err = x.astype(np.float64) @ w + b - y
        w, b = w - lr * 2 * x.T @ err / len(y), b - lr * 2 * err.mean()
    kernel, bias = (v.numpy() for v in result.model.trainable_variables)
    np.testing.assert_allclose(kernel[:, 0], w, atol=1e-5)
    np.testing.assert_allclose(bias[0], b, atol=1e-5)
    assert result.history["updates"] == [1] * epochs  # one averaged update per round


def test_a_server_host_nobody_can_reach_fails_fit_within_seconds(connect_digits):
    frame, _ = connect_digits
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"192\.0\.2\.1.*server_host"):
        Downpour(build_digits_mlp, epochs=1, verbose=0, server_host="192.0.2.1").fit(frame)
    assert time.perf_counter() - started < 30


def test_the_probe_names_an_address_the_executors_cannot_dial(connect):
    import socket

    from sparkdownpour.reachability import check_reachable

    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=rf"cannot reach the server at http://127\.0\.0\.1:"
                                           rf"{port} \(server_host='127\.0\.0\.1'\).*2 of 2"):
        check_reachable(connect, [f"http://127.0.0.1:{port}"], "token", tasks=2, timeout=3,
                        host="127.0.0.1")
    assert time.perf_counter() - started < 20
