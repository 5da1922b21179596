"""mode="sync" on a Spark barrier stage equals one process's SGD on the rounds' summed batches."""

import numpy as np
import pytest

from sparkdownpour import Downpour
from sparkdownpour.observe.progress import expected_updates


def linear_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_initializer="zeros",
                                                                    bias_initializer="zeros")])
    return model


@pytest.mark.timeout(300)
def test_sync_equals_single_process_sgd_on_the_summed_batch(spark):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=40)).astype(np.float32)
    # Two partitions of unequal size (25 and 15 rows); each replica's batch is its whole
    # partition, so every round's rows are all 40 and sync SGD is full-batch gradient descent.
    rows = [(x[i].tolist(), float(y[i])) for i in range(40)]
    frame = spark.createDataFrame(rows, "features array<float>, label float").repartition(1)
    frame = spark.createDataFrame(frame.rdd.zipWithIndex().map(lambda r: (r[1] >= 25, r[0]))
                                  .partitionBy(2, lambda k: int(k)).values(),
                                  "features array<float>, label float")
    assert sorted(frame.rdd.glom().map(len).collect()) == [15, 25]
    lr, epochs = 0.1, 4
    trainer = Downpour(linear_model, loss="mse", optimizer="sgd", learning_rate=lr,
                       batch_size=64, epochs=epochs, mode="sync", num_shards=2, verbose=0)
    result = trainer.fit(frame)

    w, b = np.zeros(3), 0.0
    for _ in range(epochs):  # the same steps in float64, in one process
        err = x.astype(np.float64) @ w + b - y
        w, b = w - lr * 2 * x.T @ err / len(y), b - lr * 2 * err.mean()
    kernel, bias = (v.numpy() for v in result.model.trainable_variables)
    np.testing.assert_allclose(kernel[:, 0], w, atol=1e-5)
    np.testing.assert_allclose(bias[0], b, atol=1e-5)
    assert result.history["updates"] == [1] * epochs  # one averaged update per round
    assert result.history.final["updates_total"] == epochs
    assert expected_updates(trainer.config, 40, 2) == epochs  # the progress bar's total


def test_sync_mode_needs_fetch_and_push_every_batch():
    with pytest.raises(ValueError, match="mode='sync'.*received 2 and 'auto'"):
        Downpour(linear_model, mode="sync", n_fetch=2)
    with pytest.raises(ValueError, match="mode='sync'.*received 1 and 3"):
        Downpour(linear_model, mode="sync", n_push=3)
    with pytest.raises(ValueError, match="mode must be one of async, sync, easgd"):
        Downpour(linear_model, mode="hogwild")


def test_easgd_trains_digits_and_applies_one_exchange_per_tau_batches(digits):
    from sparkdownpour.examples import build_digits_mlp
    from tests.test_downpour import accuracy

    frame, (x_test, y_test) = digits
    tau = 4
    trainer = Downpour(build_digits_mlp, mode="easgd", easgd_tau=tau, optimizer="sgd",
                       learning_rate=0.1, epochs=3, verbose=0)
    result = trainer.fit(frame)
    sizes = frame.rdd.glom().map(len).collect()
    batches = [-(-size // 32) for size in sizes if size]
    assert result.history["updates"] == [sum(-(-b // tau) for b in batches)] * 3
    assert result.history.final["updates_total"] == 3 * sum(-(-b // tau) for b in batches)
    assert expected_updates(trainer.config, sum(sizes), len(sizes)) == \
        result.history.final["updates_total"]  # the progress bar's total
    # The center moves only by elastic pulls (alpha = 0.9 / 4 per exchange): slower than async
    # Downpour on this tiny problem, well above chance (0.1) after three epochs.
    assert accuracy(result.model, x_test, y_test) >= 0.7
