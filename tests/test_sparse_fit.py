"""Both trainers fit sparse vector columns (HashingTF-like) without densifying them."""

import keras
import numpy as np
import pytest

from sparkdownpour import Downpour, Sandblaster

D = 2048  # at least data.sparse.SPARSE_MIN_FEATURES: travels sparse


def hashed_rows(rows=300, nnz=12, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.zeros(D)
    truth[rng.choice(D, 200, replace=False)] = rng.normal(size=200) * 3
    cols = [np.sort(rng.choice(D, nnz, replace=False)) for _ in range(rows)]
    vals = [np.ones(nnz) for _ in range(rows)]
    labels = [float(truth[c] @ v > 0) for c, v in zip(cols, vals)]
    return cols, vals, np.array(labels, np.float32)


@pytest.fixture(scope="module")
def sparse_and_dense(spark):
    from pyspark.ml.linalg import Vectors

    cols, vals, labels = hashed_rows()
    sparse = spark.createDataFrame(
        [(Vectors.sparse(D, c.tolist(), v.tolist()), float(y))
         for c, v, y in zip(cols, vals, labels)], ["features", "label"]).repartition(2).cache()
    dense_x = np.zeros((len(labels), D), np.float32)
    for i, (c, v) in enumerate(zip(cols, vals)):
        dense_x[i, c] = v
    dense = spark.createDataFrame([(row.tolist(), float(y)) for row, y in zip(dense_x, labels)],
                                  "features array<float>, label double").repartition(2).cache()
    yield sparse, dense, dense_x, labels
    sparse.unpersist()
    dense.unpersist()


def logistic():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((D,)), keras.layers.Dense(1, activation="sigmoid")])


def test_sandblaster_on_sparse_vectors_reaches_the_dense_objective(sparse_and_dense):
    sparse, dense, _, _ = sparse_and_dense
    knobs = dict(loss="binary_crossentropy", max_iter=15, l2=1e-2, verbose=0)
    on_sparse = Sandblaster(logistic, **knobs).fit(sparse, num_portions=2)
    on_dense = Sandblaster(logistic, **knobs).fit(dense, num_portions=2)
    assert on_sparse.history.info["features"] == D
    # both frames are cached: the resident evaluators parse their rows in place
    assert on_sparse.history.info["read_in_place"] and on_dense.history.info["read_in_place"]
    assert on_sparse.history.info["objective"] == pytest.approx(
        on_dense.history.info["objective"], rel=1e-4)


def test_downpour_on_sparse_vectors_learns_and_pushes_rows_only(sparse_and_dense):
    from sparkdownpour.callbacks import LambdaCallback

    sparse, _, dense_x, labels = sparse_and_dense
    servers = []
    result = Downpour(logistic, loss="binary_crossentropy", optimizer="adagrad",
                      learning_rate=0.5, batch_size=16, epochs=4, verbose=0).fit(
        sparse, callbacks=[LambdaCallback(on_server_start=servers.append)])
    accuracy = np.mean((result.model(dense_x).numpy()[:, 0] > 0.5) == (labels > 0.5))
    assert accuracy > 0.85
    assert result.history["loss"][-1] < result.history["loss"][0]
    # A mini-batch touches at most 16 x 12 of the kernel's 2048 rows: pushes carry those rows.
    status = servers[0].store.status()
    assert status["bytes_in"] / status["updates_applied"] < 0.5 * 4 * D
