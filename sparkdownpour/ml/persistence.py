"""Saving and loading a Params object that carries a Keras model: fitted models and estimators.

The layout is Spark ML's own, so the directory can live on any Hadoop file system and load
from ``Pipeline.load``, ``PipelineModel.load`` or a ``CrossValidator``'s reader:
``metadata/`` (class, uid, Params, extra fields, the model's SHA-256) plus ``keras/``, a
one-row Parquet file holding the ``.keras`` bytes (architecture and weights). No pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReader, MLWriter

from sparkdownpour.ml.predict import digest_of

__all__ = ["KerasParamsReader", "KerasParamsWriter", "jsonable"]

FORMAT = "keras-v3"  # the .keras zip: config.json + model.weights.h5 + metadata.json


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, allow_nan=True))


def _check_params_are_json(instance) -> None:
    """Spark writes Param values as JSON: say which one cannot be, before anything is written."""
    for param, value in {**instance._defaultParamMap, **instance._paramMap}.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"cannot save {type(instance).__name__}: its Param {param.name} is {value!r}, "
                "which has no JSON form; set it by name (e.g. a loss or optimizer name) to "
                "save this stage") from None


class KerasParamsWriter(MLWriter):
    """Writes ``instance``'s Params and ``payload()`` (``.keras`` bytes); ``extra()`` adds
    JSON fields to the metadata."""

    def __init__(self, instance, payload: Callable[[], bytes],
                 extra: Callable[[], dict] = dict) -> None:
        super().__init__()
        self.instance, self.payload, self.extra = instance, payload, extra

    def saveImpl(self, path: str) -> None:
        import keras

        _check_params_are_json(self.instance)
        payload = self.payload()
        DefaultParamsWriter.saveMetadata(
            self.instance, path, self.sparkSession,
            extraMetadata={"kerasFormat": FORMAT, "kerasVersion": keras.__version__,
                           "kerasSha256": digest_of(payload), **self.extra()})
        frame = self.sparkSession.createDataFrame([(bytearray(payload),)], "keras binary")
        frame.coalesce(1).write.parquet(os.path.join(path, "keras"))


class KerasParamsReader(MLReader):
    """Reads what ``KerasParamsWriter`` wrote, for a subclass of ``base`` (a ``kind`` of
    stage, for messages): checks the class,
    the format and the bytes' SHA-256, then ``make(cls, payload, metadata)`` builds the
    instance, whose uid and Params are then restored."""

    def __init__(self, base: type, make: Callable[[type, bytes, dict], Any], kind: str) -> None:
        super().__init__()
        self.base, self.make, self.kind = base, make, kind

    def load(self, path: str):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        module, _, name = metadata["class"].rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name, None)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ValueError(f"{path} holds a {metadata['class']}, not a sparkdownpour "
                             f"{self.kind}")
        if metadata.get("kerasFormat") != FORMAT:
            raise ValueError(f"{path}: unknown model format {metadata.get('kerasFormat')!r}; "
                             f"this release reads {FORMAT!r}")
        row = self.sparkSession.read.parquet(os.path.join(path, "keras")).first()
        payload = bytes(row["keras"]) if row is not None else b""
        if digest_of(payload) != metadata.get("kerasSha256"):
            raise ValueError(f"{path}/keras does not match the SHA-256 in its metadata: the "
                             "saved model is corrupt or incomplete; save it again")
        instance = self.make(cls, payload, metadata)
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance
