"""DeepDist in a Spark Connect session: a DataFrame, and a plain object with numpy attributes."""

import numpy as np

from sparkdownpour import DeepDist


class Linear:
    """DeepDist's README style: state in numpy attributes, other attributes left alone."""

    def __init__(self, features):
        self.w = np.zeros(features)
        self.b = np.zeros(1)
        self.name = "linear"  # not state
        self.rate = 0.5


def gradient(model, rows):  # runs on executors, on this process's copy of the object
    x = np.array([row.features for row in rows])
    y = np.array([row.label for row in rows])
    p = 1.0 / (1.0 + np.exp(-(x @ model.w + model.b)))
    return {"w": x.T @ (p - y) / len(y), "b": np.array([np.mean(p - y)])}


def descent(model, update):  # on the driver, in place
    model.w -= model.rate * update["w"]
    model.b -= model.rate * update["b"]


def test_a_plain_object_trains_from_a_dataframe(connect):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 3))
    y = (x @ np.array([2.0, -1.0, 0.5]) > 0).astype(float)
    frame = connect.createDataFrame([(row.tolist(), float(label)) for row, label in zip(x, y)],
                                    "features array<double>, label double").repartition(4)
    model = Linear(3)
    with DeepDist(model) as dd:
        for _ in range(10):
            stats = dd.train(frame, gradient, descent)
        trained = dd.model
    assert trained is model and model.name == "linear"
    assert stats["partitions"] == 4 and stats["rows"] == 400 and stats["updates"] == 4
    assert np.mean(((x @ model.w + model.b) > 0) == y) > 0.95
