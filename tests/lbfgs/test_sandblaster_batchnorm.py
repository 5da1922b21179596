"""Sandblaster's objective for a model with BatchNormalization (``lbfgs.statistics``), checked
against the same objective written out in numpy: each BatchNorm layer normalises with the mean
and population variance of its input over the whole data set at the starting point, layer after
layer, fixed; the model is evaluated with training=False (Dropout off)."""

import keras
import numpy as np
import pytest

from sparkdownpour import Sandblaster
from sparkdownpour.examples import arrays_to_frame
from sparkdownpour.keras_model import state_arrays

L2 = 1e-2
EPS = 1e-3  # BatchNormalization's default epsilon


def two_batchnorm_model(seed=0):
    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(5, kernel_initializer=init(seed)),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Dropout(0.5, seed=seed),
        keras.layers.Dense(4, kernel_initializer=init(seed + 1),
                           bias_initializer=keras.initializers.Constant(0.3)),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init(seed + 2)),
    ])


def numpy_forward(weights, x, stats=None):
    """The model in inference mode, in float64; with ``stats=None`` each BatchNorm layer's
    statistics are computed from its input over all of ``x`` (and returned)."""
    w1, b1, g1, be1, w2, b2, g2, be2, w3, b3 = [np.asarray(w, np.float64) for w in weights]
    found = []

    def batchnorm(h, gamma, beta, index):
        if stats is None:
            found.append((h.mean(axis=0), h.var(axis=0)))
        mean, var = (found if stats is None else stats)[index]
        return gamma * (h - mean) / np.sqrt(var + EPS) + beta

    a1 = np.maximum(batchnorm(x @ w1 + b1, g1, be1, 0), 0.0)
    a2 = np.maximum(batchnorm(a1 @ w2 + b2, g2, be2, 1), 0.0)
    return a2 @ w3 + b3, found


def numpy_objective(weights, stats, x, y):
    z = numpy_forward(weights, x, stats)[0][:, 0]
    kernels = [weights[0], weights[4], weights[8]]
    return float(np.mean(np.logaddexp(0.0, z) - y * z)
                 + 0.5 * L2 * sum(np.sum(np.asarray(k, np.float64) ** 2) for k in kernels))


def trainable(model):
    return [np.asarray(v.numpy()) for v in model.trainable_variables]


@pytest.fixture(scope="module")
def data(spark):
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(600, 6)) * [1, 2, 3, 0.5, 4, 1] + [0, 1, -2, 5, 0, 3]) \
        .astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.2 * x[:, 4] + rng.normal(size=600) > 0).astype(np.float32)
    return arrays_to_frame(spark, x, y, 3), x.astype(np.float64), y.astype(np.float64)


def test_the_objective_is_the_model_with_full_data_statistics_fixed_at_the_start(data):
    frame, x, y = data
    model = two_batchnorm_model()
    start = trainable(model)
    result = Sandblaster(model, loss="binary_crossentropy", l2=L2, max_iter=6,
                         verbose=0).fit(frame)
    # The statistics: those of the whole data at the starting point, layer after layer.
    _, expected = numpy_forward(start, x)
    mean1, var1, mean2, var2 = state_arrays(result.model)
    for got, want in zip((mean1, var1, mean2, var2), [s for pair in expected for s in pair]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(var2 - 1.0).max() > 0.01  # not the initial values
    info = result.history.info["batchnorm_statistics"]
    assert [layer["values_per_channel"] for layer in info["layers"]] == [600, 600]
    assert "training=False" in info["definition"]
    # The objective L-BFGS reports is numpy's at the returned weights with those statistics.
    final = trainable(result.model)
    assert result.history.info["objective"] == pytest.approx(
        numpy_objective(final, expected, x, y), rel=1e-5)
    assert result.history.info["objective"] < numpy_objective(start, expected, x, y)
    # And the returned model evaluates it (Keras, inference mode, float32).
    probabilities = result.model(x.astype(np.float32), training=False).numpy()[:, 0]
    z = numpy_forward(final, x, expected)[0][:, 0]
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-z)), rtol=1e-4, atol=1e-5)


def test_a_model_with_nested_batchnorm_is_refused_before_lbfgs_starts(data):
    frame, _, _ = data
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization()])
    model = keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(1, "sigmoid")])
    with pytest.raises(ValueError, match="nested inside another layer or model"):
        Sandblaster(model, loss="binary_crossentropy", max_iter=2, verbose=0).fit(frame)
