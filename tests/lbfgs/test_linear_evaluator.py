"""Sandblaster's numpy evaluator (lbfgs.linear) against its TensorFlow evaluator (lbfgs.stage):
same point, same blocks, the same loss and gradient sums; and which models it takes."""

import keras
import numpy as np
import pytest

from sparkdownpour.data.sparse import CSR
from sparkdownpour.keras_model import spec_for
from sparkdownpour.lbfgs.linear import LinearEvaluator, linear_form
from sparkdownpour.lbfgs.stage import _Evaluator


def dense_model(features, units, activation, use_bias=True, **options):
    return keras.Sequential([keras.Input((features,)),
                             keras.layers.Dense(units, activation=activation,
                                                use_bias=use_bias, **options)])


def labels_for(family, rng, rows, units):
    if family == "sparse":
        return rng.integers(0, units, rows).astype(np.float32)
    if family == "binary":
        return (rng.random(rows) < 0.4).astype(np.float32)
    return rng.normal(size=rows).astype(np.float32)


CASES = [  # activation, loss, units, use_bias
    ("sigmoid", "binary_crossentropy", 1, True),
    ("sigmoid", "binary_crossentropy", 1, False),
    ("softmax", "sparse_categorical_crossentropy", 5, True),
    ("softmax", "sparse_categorical_crossentropy", 2, False),
    ("linear", "mse", 1, True),
    ("linear", "mean_squared_error", 1, False),
]


@pytest.mark.parametrize("activation, loss, units, use_bias", CASES)
@pytest.mark.parametrize("sparse", [False, True])
def test_numpy_and_tensorflow_evaluators_agree(activation, loss, units, use_bias, sparse):
    rng = np.random.default_rng(units * 7 + use_bias + 3 * len(loss))
    features, rows = 9, 300
    model = dense_model(features, units, activation, use_bias)
    form = linear_form(model, loss)
    assert form is not None and form.units == units and form.use_bias == use_bias
    spec = spec_for(lambda: dense_model(features, units, activation, use_bias), features, loss)
    reference, ours = _Evaluator(spec, task_cpus=1), LinearEvaluator(form, task_cpus=1)
    # Large weights too: logits far into the saturated range, where clipped probabilities
    # would bias the loss and the logits form must not overflow.
    point = rng.normal(scale=3.0, size=features * units + (units if use_bias else 0))
    reference.assign(point.astype(np.float32))
    ours.assign(point)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[rng.random(x.shape) < 0.6] = 0.0
    if sparse:
        nonzero = x != 0
        x_in = CSR(np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]),
                   np.nonzero(nonzero)[1], x[nonzero], features)
    else:
        x_in = x
    y = labels_for(form.family, rng, rows, units)
    blocks = [(x_in[:120], y[:120]), (x_in[120:], y[120:])]  # two blocks: sums add up
    loss_ref, grad_ref, rows_ref = reference.sums(blocks, 64)
    loss_ours, grad_ours, rows_ours = ours.sums(blocks, 64)
    assert rows_ours == rows_ref == rows
    assert loss_ours == pytest.approx(loss_ref, rel=2e-5)
    np.testing.assert_allclose(grad_ours, grad_ref, rtol=2e-4, atol=2e-5 * np.abs(grad_ref).max())


@pytest.mark.parametrize("build, loss", [
    (lambda: dense_model(4, 1, "relu"), "mse"),  # activation that is not a link
    (lambda: dense_model(4, 1, "sigmoid"), "mse"),  # activation and loss that do not pair
    (lambda: dense_model(4, 1, "sigmoid", kernel_regularizer="l2"), "binary_crossentropy"),
    (lambda: dense_model(4, 1, "sigmoid"), keras.losses.BinaryCrossentropy()),  # not a name
    (lambda: dense_model(4, 3, "sigmoid"), "binary_crossentropy"),  # labels are one number
    (lambda: dense_model(4, 3, "softmax"), "categorical_crossentropy"),
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                               keras.layers.Dense(1, activation="sigmoid")]),
     "binary_crossentropy"),  # a hidden layer
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(),
                               keras.layers.Dense(1, activation="sigmoid")]),
     "binary_crossentropy"),  # non-trainable state
])
def test_models_the_numpy_evaluator_does_not_take(build, loss):
    assert linear_form(build(), loss) is None


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1, activation="sigmoid")

    def call(self, x):
        return self.dense(x)


def test_a_subclassed_model_keeps_the_tensorflow_evaluator():
    model = _Subclassed()
    model(np.zeros((1, 4), np.float32))
    assert linear_form(model, "binary_crossentropy") is None


def test_a_functional_one_dense_model_is_taken():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    form = linear_form(model, "sparse_categorical_crossentropy")
    assert (form.num_features, form.units, form.family) == (6, 3, "sparse")
