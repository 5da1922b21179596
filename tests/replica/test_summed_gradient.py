"""One TensorFlow call for a push's mini-batches (GradientFunction.summed, PartitionLoop.flush):
the same sum as one call per mini-batch, used only where that holds."""

import keras
import numpy as np
import pytest

from sparkdownpour import optimizers
from sparkdownpour.examples import build_mlp
from sparkdownpour.keras_model import trainable_arrays
from sparkdownpour.replica.gradient import GradientFunction
from sparkdownpour.replica.loop import run_partition
from sparkdownpour.server import ParameterServer, ParameterStore
from tests.replica.test_loop import batches, builder, spec


def test_one_call_gives_the_sum_of_the_mini_batches_gradients_and_losses():
    rng = np.random.default_rng(4)
    gradient = GradientFunction(build_mlp(6, 9, 3), "sparse_categorical_crossentropy")
    assert gradient.sums_batches
    sizes = [32, 32, 17]  # a short last mini-batch weighs its rows by 1/17
    parts = [(rng.normal(size=(n, 6)).astype(np.float32),
              rng.integers(0, 3, n).astype(np.float32)) for n in sizes]
    one_by_one = [gradient(x, y) for x, y in parts]
    loss_sum, grads = gradient.summed(parts)
    assert loss_sum == pytest.approx(sum(loss * n for (loss, _), n in zip(one_by_one, sizes)),
                                     rel=1e-5)
    for got, *each in zip(grads, *(g for _, g in one_by_one)):
        np.testing.assert_allclose(got, np.sum(each, axis=0), rtol=1e-4, atol=1e-6)


def test_a_model_with_dropout_is_summed():
    """Dropout's seed generator is a non-trainable (integer) variable, not batch statistics:
    one call draws every row's mask, as one call per mini-batch would."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.3), keras.layers.Dense(3,
                                                                            activation="softmax")])
    assert model.non_trainable_variables  # the seed state
    assert GradientFunction(model, "sparse_categorical_crossentropy").sums_batches


def test_binary_output_with_rank_two_labels_is_summed_too():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    gradient = GradientFunction(model, "binary_crossentropy")
    rng = np.random.default_rng(5)
    parts = [(rng.normal(size=(8, 3)).astype(np.float32), (rng.random(8) < 0.5).astype(
        np.float32)) for _ in range(3)]
    total = np.sum([gradient(x, y)[1][0] for x, y in parts], axis=0)
    np.testing.assert_allclose(gradient.summed(parts)[1][0], total, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("build, loss, precision", [
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(),
                               keras.layers.Dense(3, activation="softmax")]),
     "sparse_categorical_crossentropy", None),  # moving statistics follow each mini-batch
    (lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(
        3, activation="softmax", kernel_regularizer="l2")]),
     "sparse_categorical_crossentropy", None),  # counted once per mini-batch
    (lambda: build_mlp(4, 8, 3), keras.losses.SparseCategoricalCrossentropy(), None),
    (lambda: build_mlp(4, 8, 3), "sparse_categorical_crossentropy", "mixed_float16"),
])
def test_models_whose_mini_batches_are_not_summed(build, loss, precision):
    assert not GradientFunction(build(), loss, precision=precision).sums_batches


def _train(**changes):
    store = ParameterStore(trainable_arrays(builder()), optimizers.get("sgd", learning_rate=0.1))
    with ParameterServer(store, host="127.0.0.1") as server:
        (stats,) = list(run_partition(batches(83), spec(server.url, server.token, n_fetch=4,
                                                        n_push=4, **changes)))
    return store, stats.to_pylist()[0]


def test_the_loop_applies_the_same_updates_summed_as_one_by_one():
    """83 rows in mini-batches of 5, a push every 4: the summed calls (the default here) and
    one call per mini-batch (a clip_norm too large to clip turns summing off) leave the server
    at the same parameters, with the same pushes and the same loss."""
    summed_store, summed = _train()
    each_store, each = _train(clip_norm=1e9)
    assert (summed["steps"], summed["pushes"]) == (each["steps"], each["pushes"]) == (17, 5)
    assert summed["loss_sum"] == pytest.approx(each["loss_sum"], rel=1e-5)
    for got, want in zip(summed_store.snapshot(), each_store.snapshot()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
