"""Downpour's numpy replica (replica.dense_stack) against its TensorFlow gradient
(replica.gradient): the same weights and mini-batches give the same loss and gradients, one
by one and summed; which models it takes; and a fit that uses it reports so."""

import keras
import numpy as np
import pytest

from sparkdownpour.keras_model import assign_trainable
from sparkdownpour.replica.dense_stack import DenseStackGradient, dense_stack, shipped_model
from sparkdownpour.replica.gradient import GradientFunction
from tests.lbfgs.test_linear_evaluator import labels_for as family_labels


def chain(features, hidden, output, hidden_activation="relu", use_bias=True, functional=False):
    inputs = keras.Input((features,))
    h = inputs
    for units in hidden:
        h = keras.layers.Dense(units, activation=hidden_activation, use_bias=use_bias)(h)
    out = keras.layers.Dense(output[0], activation=output[1], use_bias=use_bias)(h)
    if functional:
        return keras.Model(inputs, out)
    return keras.Sequential([inputs, *[layer for layer in keras.Model(inputs, out).layers[1:]]])


def labels_for(loss, rng, rows, units):
    family = {"sparse_categorical_crossentropy": "sparse", "binary_crossentropy": "binary"}
    return family_labels(family.get(loss, "mse"), rng, rows, units)


CASES = [  # hidden units, hidden activation, (units, output activation), loss, bias, functional
    ((16,), "relu", (5, "softmax"), "sparse_categorical_crossentropy", True, False),
    ((12, 8), "tanh", (1, "sigmoid"), "binary_crossentropy", True, True),
    ((10,), "sigmoid", (1, "linear"), "mse", False, False),
    ((), "relu", (3, "softmax"), "sparse_categorical_crossentropy", False, True),
    ((8, 8, 6), "linear", (1, "linear"), "mean_squared_error", True, False),
]


@pytest.mark.parametrize("hidden, activation, output, loss, use_bias, functional", CASES)
def test_numpy_and_tensorflow_gradients_agree(hidden, activation, output, loss, use_bias,
                                              functional):
    rng = np.random.default_rng(len(hidden) * 11 + output[0])
    features, rows = 7, 64
    model = chain(features, hidden, output, activation, use_bias, functional)
    form = dense_stack(model, loss)
    assert form is not None and form.shapes == [tuple(v.shape) for v in model.trainable_variables]
    reference, ours = GradientFunction(model, loss), DenseStackGradient(form, task_cpus=1)
    # Large weights: saturated outputs, where clipped probabilities would differ from logits.
    weights = [rng.normal(scale=1.5, size=v.shape).astype(np.float32)
               for v in model.trainable_variables]
    assign_trainable(model, weights)
    ours.assign(weights)
    batches = [(rng.normal(size=(n, features)).astype(np.float32),
                labels_for(loss, rng, n, output[0])) for n in (rows, rows, 13)]
    for x, y in batches:
        (ref_loss, ref_grads), (loss_value, grads) = reference(x, y), ours(x, y)
        assert loss_value == pytest.approx(ref_loss, rel=1e-4, abs=1e-5)
        for ref, got in zip(ref_grads, grads, strict=True):
            assert got.shape == ref.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-5)
    (ref_sum, ref_grads), (loss_sum, grads) = reference.summed(batches), ours.summed(batches)
    assert loss_sum == pytest.approx(ref_sum, rel=1e-4)
    for ref, got in zip(ref_grads, grads, strict=True):
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=5e-5)


def mlp(**dense_options):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3, activation="softmax", **dense_options)])


def residual():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(6, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
        keras.layers.Add()([inputs, h])))


def frozen():
    model = mlp()
    model.layers[0].trainable = False
    return model


REFUSED = {  # what keeps TensorFlow: (builder, loss, precision)
    "dropout": (lambda: keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                                          keras.layers.Dropout(0.5),
                                          keras.layers.Dense(3, activation="softmax")]),
                "sparse_categorical_crossentropy", None),
    "batchnorm": (lambda: keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                                            keras.layers.BatchNormalization(),
                                            keras.layers.Dense(3, activation="softmax")]),
                  "sparse_categorical_crossentropy", None),
    "regularizer": (lambda: mlp(kernel_regularizer="l2"), "sparse_categorical_crossentropy",
                    None),
    "loss object": (mlp, keras.losses.SparseCategoricalCrossentropy(), None),
    "loss that does not match the output": (mlp, "mse", None),
    "mixed precision": (mlp, "sparse_categorical_crossentropy", "mixed_float16"),
    "gelu hidden layer": (lambda: keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="gelu"),
        keras.layers.Dense(3, activation="softmax")]), "sparse_categorical_crossentropy", None),
    "not a chain": (residual, "sparse_categorical_crossentropy", None),
    "frozen layer": (frozen, "sparse_categorical_crossentropy", None),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_models_it_cannot_compute_exactly_keep_tensorflow(case):
    builder, loss, precision = REFUSED[case]
    assert dense_stack(builder(), loss, precision) is None


def test_a_dense_chain_travels_as_its_json_and_builds_from_it():
    from sparkdownpour.keras_model import spec_for

    model = mlp()
    spec = spec_for(mlp, 6, "sparse_categorical_crossentropy")
    shipped, form = shipped_model(model, spec, None, sparse_features=False)
    assert form is not None and shipped.builder is None
    rebuilt = shipped.build()  # what a task given a GPU does
    assert [tuple(v.shape) for v in rebuilt.trainable_variables] == form.shapes
    assert shipped_model(model, spec, None, sparse_features=True) == (spec, None)


def test_a_fit_of_an_mlp_runs_numpy_replicas_and_learns(spark, digits):
    from sparkdownpour import Downpour
    from sparkdownpour.examples import build_digits_mlp

    frame, (x_test, y_test) = digits
    result = Downpour(build_digits_mlp, epochs=3, verbose=0).fit(
        frame, validation_data=(x_test, y_test))
    assert result.history.info["devices"] == ["CPU:0 (numpy)"]
    assert result.history.final["val_accuracy"] > 0.85
