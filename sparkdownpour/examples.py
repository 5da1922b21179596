"""The bundled example: scikit-learn's handwritten digits and the 64-128-10 MLP.

Shared by ``jobs/train_digits.py``, ``jobs/bench_digits.py`` and the tests, so they all train the
same model on the same split.
"""

from __future__ import annotations

import numpy as np


def digits_arrays(test_size: float = 0.2, random_state: int = 0):
    """(x_train, y_train, x_test, y_test): 8x8 images scaled to [0, 1], 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=random_state)
    return x_train, y_train, x_test, y_test


def arrays_to_frame(spark, x: np.ndarray, y: np.ndarray, num_partitions: int | None = None):
    """A DataFrame with ``features: array<float>`` and ``label: long`` columns."""
    import pandas as pd

    pdf = pd.DataFrame({"features": list(x.astype(np.float32)), "label": y.astype(np.int64)})
    frame = spark.createDataFrame(pdf, schema="features array<float>, label long")
    return frame.repartition(num_partitions) if num_partitions else frame


def build_mlp(inputs: int = 64, hidden: int = 128, outputs: int = 10, seed: int = 0):
    """An MLP classifier: ``inputs`` -> ReLU ``hidden`` -> softmax ``outputs``, seeded."""
    import keras

    return keras.Sequential([
        keras.Input((inputs,)),
        keras.layers.Dense(hidden, activation="relu",
                           kernel_initializer=keras.initializers.GlorotUniform(seed)),
        keras.layers.Dense(outputs, activation="softmax",
                           kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
    ])


def build_digits_mlp(seed: int = 0):
    """The digits MLP: 64 inputs, one ReLU hidden layer of 128, a softmax over 10 classes."""
    return build_mlp(64, 128, 10, seed)


def logistic_objective(x: np.ndarray, y: np.ndarray, l2: float):
    """Reference objective for binary logistic regression, in float64 numpy: mean log-loss of
    ``sigmoid(x w + b)`` plus ``l2/2 |w|^2`` (the intercept not penalised, as in Spark MLlib),
    and its gradient; parameters are ``[w..., b]``. What Sandblaster is checked against."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)

    def objective(params):
        w, b = params[:-1], params[-1]
        z = x64 @ w + b
        p = 1.0 / (1.0 + np.exp(-z))
        value = np.mean(np.logaddexp(0.0, z) - y64 * z) + 0.5 * l2 * w @ w
        grad = np.append(x64.T @ (p - y64) / len(y64) + l2 * w, np.mean(p - y64))
        return value, grad
    return objective


def build_digits_bn_mlp(seed: int = 0, hidden: int = 128, dropout: float = 0.2):
    """The digits MLP with ``BatchNormalization`` and ``Dropout`` after its hidden layer: a
    model whose non-trainable state (the moving mean and variance) matters at inference."""
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(hidden, kernel_initializer=keras.initializers.GlorotUniform(seed)),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.Dropout(dropout, seed=seed),
        keras.layers.Dense(10, activation="softmax",
                           kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
    ])


def build_digits_convnet(seed: int = 0, filters: int = 16):
    """A small convolutional network with ``BatchNormalization`` for the digits as 8x8x1
    images (3x3 convolution, BatchNorm, ReLU, 2x2 max-pooling, softmax): the features stay a
    flat 64-vector, reshaped by the model's first layer."""
    import keras

    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Reshape((8, 8, 1)),
        keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init(seed)),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax", kernel_initializer=init(seed + 1)),
    ])
