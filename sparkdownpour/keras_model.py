"""Keras helpers both sides share: how a model travels to executors, its losses and variables.

A ``ModelSpec`` carries either the user's zero-argument builder (cloudpickled by Spark with the
closure) or the model's JSON architecture; weights never travel with it: replicas fetch them from
the master model server. The server's update rule moves the *trainable* variables, in
``model.trainable_variables`` order, on the driver and on every executor alike; the model's
other floating weights (``state_variables``: BatchNorm statistics) are held beside them and
combined from the replicas' reports (``server.model_state``, docs/keras_models.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

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
    inputs: tuple = ()  # several inputs: ``inputs.InputSlot``s, fed from one flat vector
    # What the spec builds, as a digest of everything above (``with_key``): a Python worker
    # keeps a built model and its traced functions for the next fit of the same model.
    # "": not computed; such a model is built again for every run.
    key: str = ""

    def build(self):
        import keras

        if self.builder is not None:
            model = self.builder()
            if not isinstance(model, keras.Model):
                raise TypeError(f"the model builder returned {type(model).__name__}, "
                                "expected a keras.Model")
        else:
            model = keras.models.model_from_json(self.config_json)
        if self.inputs:
            from sparkdownpour.inputs import flat_model

            return flat_model(model, self.inputs)
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


def with_key(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its ``key``: a digest of its pickled form (builder and its closure by
    value where cloudpickle pickles them so, JSON architecture, loss, inputs)."""
    import dataclasses
    import hashlib

    from pyspark import cloudpickle

    try:
        blob = cloudpickle.dumps(dataclasses.replace(spec, key=""))
    except Exception:  # noqa: BLE001 - unpicklable here fails later, with Spark's own error
        return spec
    return dataclasses.replace(spec, key=hashlib.sha256(blob).hexdigest()[:20])


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


# -- non-trainable state (BatchNorm moving statistics, ...): held by the server too ---------

def state_variables(model) -> list:
    """The model's non-trainable *floating* weights, in ``model.non_trainable_weights`` order:
    BatchNorm's moving mean and variance, a frozen layer's weights, a Normalization layer's
    statistics. Integer ones (counters) and the random seed generators' states stay local to
    each copy of the model (see docs/keras_models.md)."""
    import keras

    return [v for v in model.non_trainable_weights
            if keras.backend.is_float_dtype(v.dtype)]


def state_names(model) -> list[str]:
    return [getattr(v, "path", None) or v.name for v in state_variables(model)]


def state_arrays(model) -> list[np.ndarray]:
    return [np.asarray(v.numpy(), dtype=np.float32) for v in state_variables(model)]


def assign_state(model, arrays) -> None:
    variables = state_variables(model)
    if len(variables) != len(arrays):
        raise ValueError(f"the model has {len(variables)} non-trainable state variables, "
                         f"received {len(arrays)} arrays")
    for variable, array in zip(variables, arrays):
        variable.assign(np.asarray(array).reshape(variable.shape))


def all_layers(model):
    """Every layer inside ``model``, nested ones (and a custom layer's sublayers) included."""
    flatten = getattr(model, "_flatten_layers", None)  # Keras 3's own walk, when present
    if flatten is not None:
        yield from flatten(include_self=False, recursive=True)
        return
    for layer in getattr(model, "layers", []):
        yield layer
        yield from all_layers(layer)
