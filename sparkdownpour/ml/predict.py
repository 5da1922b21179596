"""Executor side of ``transform``: Arrow batches of feature arrays in, prediction structs out.

The fitted model travels as the bytes of a ``.keras`` file (Keras's portable format: JSON
architecture plus HDF5 weights, never a pickle), in the UDF's closure or a file
(``ml.payload``). Each Python worker builds the Keras model once per model digest and keeps it
for later tasks and later ``transform`` calls.
Nothing here imports a SparkSession.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from sparkdownpour.data.sparse import csr_from_vectors, model_input
from sparkdownpour.replica.worker import configure_threads, freeze_long_lived_objects

CHUNK_ROWS = 8192          # rows per model call: bounds activation memory
_CACHE_SIZE = 4            # built models kept per worker (a pipeline rarely has more)
_models: OrderedDict[str, object] = OrderedDict()
_lock = threading.Lock()


def keras_to_bytes(model) -> bytes:
    """The model as the bytes of a ``.keras`` file."""
    with tempfile.TemporaryDirectory(prefix="sparkdownpour-") as folder:
        path = os.path.join(folder, "model.keras")
        try:
            model.save(path)
        except Exception as exc:  # custom layers that Keras cannot serialise
            raise TypeError(
                f"the trained model cannot be saved in Keras's .keras format ({type(exc).__name__}"
                f": {exc}); register custom layers with keras.saving.register_keras_serializable"
                "() and give them get_config()") from exc
        with open(path, "rb") as handle:
            return handle.read()


def keras_from_bytes(payload: bytes):
    """Rebuild a model from ``.keras`` bytes; ``safe_mode`` refuses embedded Python lambdas."""
    import keras

    with tempfile.TemporaryDirectory(prefix="sparkdownpour-") as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as handle:
            handle.write(payload)
        return keras.saving.load_model(path, compile=False, safe_mode=True)


def digest_of(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _cached_model(digest: str, payload, task_cpus: int,
                  inputs: tuple = ()) -> tuple[object, bool]:
    """``(model, built_now)`` for this digest, built at most once per worker; a model with
    several inputs (``inputs``: its ``InputSlot``s) behind one flat input (``inputs.flat_model``)."""
    key = digest if not inputs else f"{digest}/flat"  # the wrapper does not depend on columns
    with _lock:
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
            return model, False
    configure_threads(task_cpus)
    model = keras_from_bytes(payload.value)
    if inputs:
        from sparkdownpour.inputs import flat_model

        model = flat_model(model, inputs)
    with _lock:
        _models[key] = model
        while len(_models) > _CACHE_SIZE:
            _models.popitem(last=False)
    return model, True


def _features_matrix(column: pa.Array, num_features: int, features_col: str) -> tuple:
    """``(x, valid)``: the non-null rows as an (n, d) float32 matrix, and which rows they are."""
    valid = np.ones(len(column), dtype=bool) if column.null_count == 0 else \
        np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    present = column if column.null_count == 0 else column.filter(pa.array(valid))
    lengths = present.value_lengths().to_numpy(zero_copy_only=False) if len(present) else \
        np.zeros(0, dtype=np.int64)
    wrong = np.flatnonzero(lengths != num_features)
    if len(wrong):
        raise ValueError(f"features column {features_col!r} has a row of {int(lengths[wrong[0]])} "
                         f"values; the model was trained on {num_features} features per row")
    flat = present.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(len(present), num_features), valid


def _probabilities(outputs: np.ndarray, activation: str) -> np.ndarray:
    outputs = outputs.astype(np.float64)
    if activation == "softmax":
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-outputs))
    return outputs


def _columns(outputs: np.ndarray, task: str, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """``(prediction, probability rows)`` from the model's raw outputs."""
    if task == "regression":
        return outputs[:, 0].astype(np.float64), None
    probabilities = _probabilities(outputs, activation)
    if task == "binary":
        p = probabilities[:, 0]
        return (p > 0.5).astype(np.float64), np.stack([1.0 - p, p], axis=1)
    return probabilities.argmax(axis=1).astype(np.float64), probabilities


def _struct(prediction: np.ndarray, probability: np.ndarray | None, valid: np.ndarray):
    null = None if valid.all() else ~valid
    mask = None if null is None else pa.array(null)  # the Arrow form, for nested arrays
    full_prediction = np.full(len(valid), np.nan)
    full_prediction[valid] = prediction
    arrays, names = [pa.array(full_prediction, mask=null)], ["prediction"]
    if probability is not None:
        width = probability.shape[1]
        full = np.zeros((len(valid), width))
        full[valid] = probability
        offsets = pa.array(np.arange(len(valid) + 1, dtype=np.int32) * width)
        arrays.append(pa.ListArray.from_arrays(offsets, pa.array(full.ravel()), mask=mask))
        names.append("probability")
    return pa.StructArray.from_arrays(arrays, names=names, mask=mask)


def predict_batches(batches: Iterator[pa.Array], *, digest: str, payload, task: str,
                    activation: str, num_features: int, features_col,
                    task_cpus: int = 1, inputs: tuple = ()) -> Iterator[pa.Array]:
    """The body of the scalar-iterator Arrow UDF: one struct array per batch of features.

    A model with several inputs gets its columns concatenated in input order (``features_col``
    lists them) and ``inputs``, their ``InputSlot``s, to cut them apart again, as in training.
    """
    model, built_now = _cached_model(digest, payload, task_cpus, tuple(inputs))
    for column in batches:
        if pa.types.is_struct(column.type):  # a sparse vector column, as it is (data.sparse)
            x, valid = csr_from_vectors(column, num_features, features_col)
        else:
            x, valid = _features_matrix(column, num_features, features_col)
        outputs = [model(model_input(x[i:i + CHUNK_ROWS]), training=False).numpy()
                   for i in range(0, len(x), CHUNK_ROWS)]
        width = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else 1
        outputs = np.concatenate(outputs) if outputs else np.zeros((0, int(width or 1)))
        yield _struct(*_columns(outputs.reshape(len(x), -1), task, activation), valid)
        if built_now:
            freeze_long_lived_objects()  # once per built model, after TF's first call
            built_now = False
