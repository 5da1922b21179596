"""How a Keras model travels to executors and computes its gradient there.

A ``ModelSpec`` carries either the user's zero-argument builder (cloudpickled by Spark with the
closure) or the model's JSON architecture; weights never travel with it: replicas fetch them from
the master model server. The server holds the *trainable* variables only, in
``model.trainable_variables`` order, on the driver and on every executor alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep executor stderr readable

# The Keras losses the trainers treat specially, by the names loss_name() gives.
SPARSE_LOSSES = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")
BINARY_LOSSES = ("binary_crossentropy", "BinaryCrossentropy")
CATEGORICAL_LOSSES = ("categorical_crossentropy", "CategoricalCrossentropy")


@dataclass(frozen=True)
class ModelSpec:
    """Plain, picklable description of the model and loss, built on each Python worker once."""

    num_features: int
    loss: str | Callable
    builder: Callable | None = None
    config_json: str | None = None

    def build(self):
        import keras

        if self.builder is not None:
            model = self.builder()
            if not isinstance(model, keras.Model):
                raise TypeError(f"the model builder returned {type(model).__name__}, "
                                "expected a keras.Model")
        else:
            model = keras.models.model_from_json(self.config_json)
        if not model.built:
            model.build((None, self.num_features))
        return model


def spec_for(model, num_features: int, loss) -> ModelSpec:
    """Describe a keras.Model instance or a zero-argument builder for shipping to executors."""
    import keras

    if isinstance(model, keras.Model):
        try:
            config_json = model.to_json()
            keras.models.model_from_json(config_json)  # fail on the driver, not on executors
        except Exception as exc:  # custom layers without get_config, subclassed models, ...
            raise TypeError(
                "this keras.Model cannot be rebuilt from its configuration "
                f"({type(exc).__name__}: {exc}); pass a zero-argument function that builds it "
                "instead, e.g. Downpour(build_model, ...)") from exc
        return ModelSpec(num_features=num_features, loss=loss, config_json=config_json)
    if callable(model):
        return ModelSpec(num_features=num_features, loss=loss, builder=model)
    raise TypeError(f"model must be a keras.Model or a zero-argument function returning one, "
                    f"received {type(model).__name__}")


def driver_model(model, loss, num_features: int, features_col):
    """The driver's keras.Model (the user's instance, or one built) and its ``ModelSpec``.

    An unknown loss, an unbuildable model or a features-count mismatch fails here, on the
    driver, before any Spark job.
    """
    import keras

    resolve_loss(loss)
    spec = spec_for(model, num_features, loss)
    built = model if isinstance(model, keras.Model) else spec.build()
    if not built.built:
        built.build((None, num_features))
    expected = built.inputs[0].shape[-1] if getattr(built, "inputs", None) else num_features
    if expected is not None and int(expected) != num_features:
        raise ValueError(f"the model takes {expected} input features but features column "
                         f"{features_col!r} holds {num_features} per row")
    return built, spec


def output_units(model) -> int:
    shape = model.outputs[0].shape if getattr(model, "outputs", None) else None
    if shape is None or shape[-1] is None:
        raise ValueError("cannot tell the model's number of outputs; give its last layer a size")
    return int(shape[-1])


def trainable_arrays(model) -> list[np.ndarray]:
    return [np.asarray(v.numpy(), dtype=np.float32) for v in model.trainable_variables]


def assign_trainable(model, arrays) -> None:
    variables = model.trainable_variables
    if len(variables) != len(arrays):
        raise ValueError(f"the model has {len(variables)} trainable variables, received "
                         f"{len(arrays)} arrays")
    for variable, array in zip(variables, arrays):
        variable.assign(array)


def resolve_loss(loss):
    import keras

    if not isinstance(loss, str):
        return loss
    try:
        return keras.losses.get(loss)
    except ValueError as exc:
        raise ValueError(f"unknown Keras loss {loss!r}; use a name from keras.losses such as "
                         "'sparse_categorical_crossentropy', 'binary_crossentropy' or 'mse', "
                         "or pass a callable") from exc


def loss_name(loss) -> str | None:
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or getattr(loss, "__name__", None)


class GradientFunction:
    """The replica's compiled ``gradient()``: mean loss and its gradient for one mini-batch.

    Runs on ``device`` (see ``replica.devices``). Under a mixed ``precision`` the model computes
    in float16/bfloat16 while its variables, the loss and the returned gradients are float32;
    with float16 the loss is scaled dynamically (``precision.LossScale``)."""

    def __init__(self, model, loss, device: str = "/CPU:0", precision: str | None = None) -> None:
        import tensorflow as tf

        from sparkdownpour.replica.precision import LossScale

        self.model = model
        self.device = device
        self.loss_scale = LossScale() if precision == "mixed_float16" else None
        loss_fn = resolve_loss(loss)
        self.label_rank2 = output_units(model) == 1 and loss_name(loss) not in SPARSE_LOSSES
        num_features = int(model.inputs[0].shape[-1]) if getattr(model, "inputs", None) else None
        label_shape = [None, 1] if self.label_rank2 else [None]

        # A fixed signature with a free batch dimension: one trace serves full and short batches.
        @tf.function(input_signature=[tf.TensorSpec([None, num_features], tf.float32),
                                      tf.TensorSpec(label_shape, tf.float32),
                                      tf.TensorSpec([], tf.float32)])
        def step(x, y, scale):
            with tf.device(device), tf.GradientTape() as tape:
                # float32 predictions: a mixed policy's float16 output would make a float16 loss.
                predictions = tf.cast(model(x, training=True), tf.float32)
                loss_value = tf.reduce_mean(loss_fn(y, predictions))
                if model.losses:  # regularisation terms declared on layers
                    loss_value += tf.add_n([tf.cast(v, tf.float32) for v in model.losses])
                scaled = loss_value * scale
            grads = tape.gradient(scaled, model.trainable_variables)
            return loss_value, [tf.cast(tf.convert_to_tensor(g), tf.float32) / scale
                                for g in grads]

        self._step = step

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        if self.label_rank2:
            y = y.reshape(-1, 1)
        while True:
            scale = self.loss_scale.value if self.loss_scale is not None else 1.0
            loss_value, grads = self._step(x, y, np.float32(scale))
            loss, grads = float(loss_value), [g.numpy() for g in grads]
            # A non-finite loss is not a scaling problem: hand it on (skip_nonfinite decides).
            if self.loss_scale is None or not np.isfinite(loss) or \
                    self.loss_scale.update(grads) or scale <= 1.0:
                return loss, grads
