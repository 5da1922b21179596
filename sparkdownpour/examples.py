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
