"""A CSR mini-batch gives the model a tf.SparseTensor; the gradient equals the dense one's."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sparkdownpour.data.sparse import CSR
from sparkdownpour.replica.gradient import GradientFunction
from sparkdownpour.replica.sparse_gradient import SparseInput, dense_chunk_rows


def batch(rows=16, d=5000, nnz=4, seed=0):
    rng = np.random.default_rng(seed)
    cols = np.stack([np.sort(rng.choice(d, nnz, replace=False)) for _ in range(rows)])
    values = rng.normal(size=(rows, nnz)).astype(np.float32)
    x = CSR(np.arange(rows + 1) * nnz, cols.ravel(), values.ravel(), d)
    return x, (rng.random(rows) > 0.5).astype(np.float32)


def mlp(d):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(4, activation="relu"),
                             keras.layers.Dense(1, activation="sigmoid")])


class DenseOnly(keras.layers.Layer):
    """A layer that cannot take a SparseTensor."""

    def call(self, x):
        return tf.convert_to_tensor(x) * 1.0


def test_sparse_and_dense_mini_batches_give_the_same_loss_and_gradient():
    x, y = batch()
    gradient = GradientFunction(mlp(x.num_features), "binary_crossentropy")
    sparse_loss, sparse_grads = gradient(x, y)
    dense_loss, dense_grads = gradient(x.to_dense(), y)
    assert gradient._sparse_step.densified is False
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-6)
    for s, d in zip(sparse_grads, dense_grads):
        np.testing.assert_allclose(s, d, rtol=1e-5, atol=1e-7)
    # Only the rows of the first kernel the batch touches are non-zero.
    touched = np.unique(x.indices)
    assert set(np.flatnonzero(np.any(sparse_grads[0] != 0, axis=1))) <= set(touched)


def test_keras_layers_without_sparse_support_still_train_from_sparse_batches():
    """Keras densifies the input of a layer that does not declare sparse support."""
    x, y = batch(d=300)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((300,)), DenseOnly(), keras.layers.Dense(1)])
    gradient = GradientFunction(model, "mse")
    loss, grads = gradient(x, y)
    dense_loss, dense_grads = gradient(x.to_dense(), y)
    assert loss == pytest.approx(dense_loss, rel=1e-6)
    np.testing.assert_allclose(grads[0], dense_grads[0], rtol=1e-5, atol=1e-7)


def test_a_function_that_refuses_sparse_input_gets_densified_mini_batches():
    x, _ = batch(d=300)
    weights = tf.constant(np.arange(300, dtype=np.float32))

    def body(features, scale):  # tf.convert_to_tensor refuses a SparseTensor
        return tf.reduce_sum(tf.linalg.matvec(tf.convert_to_tensor(features), weights)) * scale

    call = SparseInput(body, 300, [tf.TensorSpec([], tf.float32)])
    value = call(x, np.float32(2.0))
    assert call.densified is True
    assert float(value) == pytest.approx(2 * float((x.to_dense() @ weights.numpy()).sum()),
                                         rel=1e-6)
    assert float(call(x[:3], np.float32(1.0))) == pytest.approx(
        float((x[:3].to_dense() @ weights.numpy()).sum()), rel=1e-6)


def test_densified_chunks_are_bounded():
    assert dense_chunk_rows(1 << 18, 8192) == 64  # 64 MiB of float32
    assert dense_chunk_rows(10, 8192) == 8192
