"""The DeepDist-compatible API trains a numpy-only logistic regression from an RDD."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sparkdownpour import DeepDist, ParameterServerError


def gradient(model, rows):
    # Mean log-loss gradient of this partition's rows; runs on executors, numpy only.
    x = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    p = 1.0 / (1.0 + np.exp(-(x @ model["w"] + model["b"])))
    return {"w": x.T @ (p - y) / len(y), "b": np.array([np.mean(p - y)])}


def descent(model, update):
    model["w"] -= 0.5 * update["w"]
    model["b"] -= 0.5 * update["b"]


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), y_train, scaler.transform(x_test), y_test


def test_logistic_regression_within_one_percent_of_sklearn(spark, cancer):
    x_train, y_train, x_test, y_test = cancer
    rdd = spark.sparkContext.parallelize(list(zip(x_train.tolist(), y_train.tolist())), 8).cache()
    model = {"w": np.zeros(x_train.shape[1]), "b": np.zeros(1)}
    with DeepDist(model) as dd:
        assert dd._server.url.startswith("http://127.0.0.1:")
        for _ in range(30):
            stats = dd.train(rdd, gradient, descent)
        trained = dd.model
        status = dd.status
    assert stats == {**stats, "partitions": 8, "rows": len(y_train), "updates": 8}
    assert status["updates_applied"] == 30 * 8
    ours = np.mean(((x_test @ trained["w"] + trained["b"]) > 0) == y_test)
    reference = LogisticRegression().fit(x_train, y_train).score(x_test, y_test)
    assert ours >= reference - 0.01
    assert trained is model  # descent updated the caller's own dict


def test_train_outside_the_context_is_refused(spark):
    dd = DeepDist({"w": np.zeros(2)})
    with pytest.raises(RuntimeError, match="inside `with DeepDist"):
        dd.train(spark.sparkContext.parallelize([1]), gradient, descent)


def test_wrong_update_shape_fails_the_job_with_the_servers_message(spark):
    rdd = spark.sparkContext.parallelize([([1.0, 2.0], 1)], 1)
    with DeepDist({"w": np.zeros(2), "b": np.zeros(1)}) as dd:
        with pytest.raises(Exception) as info:
            dd.train(rdd, lambda model, rows: {"w": np.zeros(5), "b": np.zeros(1)}, descent)
        assert dd.status["updates_applied"] == 0
    assert "shape" in str(info.value)
    assert ParameterServerError.__name__ in str(info.value)


def test_descent_in_place_never_touches_the_servers_arrays(spark):
    rdd = spark.sparkContext.parallelize([([1.0, 2.0], 1)], 1)
    with DeepDist({"w": np.zeros(2), "b": np.zeros(1)}) as dd:
        held = list(dd._store._params)  # the server's own arrays, as a fetch encodes them
        dd.train(rdd, gradient, descent)
        assert held[0].tolist() == [0.0] and held[1].tolist() == [0.0, 0.0]
        assert dd._store.fetch()[1][1].tolist() != [0.0, 0.0]  # the update did land


class Vectors:
    """A plain object whose state is numpy attributes, as DeepDist's README's Word2Vec."""

    def __init__(self):
        self.syn0 = np.zeros((3, 2))
        self.layers = [np.zeros(2)]
        self.vocab = {"a": 0, "b": 1, "c": 2}  # not state: no arrays
        self.alpha = 0.1


def test_a_plain_object_with_numpy_attributes_trains_from_a_dataframe(spark):
    from sparkdownpour import tree

    leaves, structure = tree.flatten(Vectors())
    assert structure[0] == "object" and structure[1] == ["layers", "syn0"]

    def count(model, rows):  # on executors: the fetched state is loaded into the copy
        assert model.vocab == {"a": 0, "b": 1, "c": 2}
        model.syn0[0] += 1.0  # gradient may change its copy in place
        update = {"syn0": np.zeros((3, 2)), "layers": [np.ones(2)]}
        for row in rows:
            update["syn0"][model.vocab[row.word]] += model.alpha
        return update

    def add(model, update):
        model.syn0 += update["syn0"]
        model.layers[0] += update["layers"][0]

    frame = spark.createDataFrame([(w,) for w in "aabcc"], "word string").repartition(2)
    model = Vectors()
    syn0 = model.syn0
    with DeepDist(model) as dd:
        stats = dd.train(frame, count, add)
        stats = dd.train(frame, count, add)
        assert dd.model is model
    assert stats["rows"] == 5 and stats["partitions"] == 2
    assert model.syn0 is syn0  # updated in place
    np.testing.assert_allclose(model.syn0[:, 0], [0.4, 0.2, 0.4])
    np.testing.assert_allclose(model.layers[0], [4.0, 4.0])
