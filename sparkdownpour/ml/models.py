"""The fitted Spark ML models: a trained Keras model as a ``pyspark.ml.Model`` that predicts.

``transform(df)`` appends ``predictionCol`` (class index or value) and, for classifiers,
``probabilityCol`` (a Spark ML vector), computed on executors by a scalar-iterator Arrow UDF over
batches of rows; nothing is collected to the driver. An empty column name skips that column, as
in MLlib.

Persistence is Spark ML's: ``metadata/`` (class, uid, Params, training history, the model's
SHA-256) plus ``keras/``, a one-row Parquet file holding the ``.keras`` bytes, so the directory
can live on any Hadoop file system and load with ``PipelineModel.load``. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import pyarrow as pa
from pyspark.ml import Model
from pyspark.ml.functions import array_to_vector
from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkdownpour.data.columns import features_expression
from sparkdownpour.history import History
from sparkdownpour.ml.params import TASKS, KerasModelParams
from sparkdownpour.ml.predict import digest_of, keras_from_bytes, predict_batches

FORMAT = "keras-v3"  # the .keras zip: config.json + model.weights.h5 + metadata.json


class KerasPredictionModel(Model, KerasModelParams, MLReadable, MLWritable):
    """A trained Keras model that adds prediction (and probability) columns to a DataFrame."""

    def __init__(self, payload: bytes | None = None, history: History | None = None) -> None:
        super().__init__()
        self._payload = payload
        self._history = history or History()
        self._keras = None
        self._broadcast = None  # (SparkContext, Broadcast of the payload), made on first use

    @property
    def keras_model(self):
        """The trained ``keras.Model`` on the driver (built from the stored bytes once)."""
        if self._keras is None:
            self._keras = keras_from_bytes(self._require_payload())
        return self._keras

    @property
    def history(self) -> History:
        """The training history of the ``fit`` that produced this model (kept when saved)."""
        return self._history

    def copy(self, extra=None):
        copied = super().copy(extra)
        copied._keras = None  # the copy builds its own Keras object; the bytes are immutable
        return copied

    def _require_payload(self) -> bytes:
        if self._payload is None:
            raise RuntimeError(f"{type(self).__name__} holds no trained model; get one from "
                               "an estimator's fit() or load() a saved one")
        return self._payload

    def _payload_broadcast(self, spark):
        sc = spark.sparkContext
        if self._broadcast is None or self._broadcast[0] is not sc:
            self._broadcast = (sc, sc.broadcast(self._require_payload()))
        return self._broadcast[1]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from pyspark.sql.functions import arrow_udf

        from sparkdownpour.session import task_cpus

        task = self.getTask()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, received {task!r}")
        outputs = {"prediction": self.getPredictionCol(),
                   "probability": self.getProbabilityCol() if task != "regression" else ""}
        outputs = {field: name for field, name in outputs.items() if name}
        for name in outputs.values():
            if name in dataset.columns:
                raise ValueError(f"output column {name!r} already exists in the DataFrame; "
                                 f"choose another with setPredictionCol/setProbabilityCol")
        if not outputs:
            return dataset
        features = self.getFeaturesCol()
        options = dict(digest=digest_of(self._require_payload()),
                       broadcast=self._payload_broadcast(dataset.sparkSession), task=task,
                       activation=self.getOutputActivation(), num_features=self.getNumFeatures(),
                       features_col=features, task_cpus=task_cpus(dataset.sparkSession))

        def predict(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            return predict_batches(batches, **options)

        fields = [T.StructField("prediction", T.DoubleType())]
        if task != "regression":
            fields.append(T.StructField("probability", T.ArrayType(T.DoubleType())))
        udf = arrow_udf(predict, T.StructType(fields))  # iterator form, from the type hints
        scratch = f"__sparkdownpour_{self.uid}"
        frame = dataset.withColumn(scratch, udf(features_expression(dataset, features)))
        if "prediction" in outputs:
            frame = frame.withColumn(outputs["prediction"], F.col(f"{scratch}.prediction"))
        if "probability" in outputs:  # array_to_vector throws on null: a null row stays null
            probability = F.col(f"{scratch}.probability")
            frame = frame.withColumn(outputs["probability"],
                                     F.when(probability.isNotNull(), array_to_vector(probability)))
        return frame.drop(scratch)

    def write(self) -> MLWriter:
        return _KerasModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _KerasModelReader(cls)


class DownpourModel(KerasPredictionModel):
    """What ``DownpourEstimator.fit`` returns."""


class SandblasterModel(KerasPredictionModel):
    """What ``SandblasterEstimator.fit`` returns."""


# Addresses of servers that stopped with the fit, and the dashboard's one-time login link:
# meaningless once saved, and a login code has no business in a model directory.
_RUN_ONLY_INFO = ("dashboard", "server", "shard_urls")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str, allow_nan=True))


class _KerasModelWriter(MLWriter):
    def __init__(self, instance: KerasPredictionModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        import keras

        payload = self.instance._require_payload()
        history = self.instance.history
        DefaultParamsWriter.saveMetadata(
            self.instance, path, self.sparkSession,
            extraMetadata={"kerasFormat": FORMAT, "kerasVersion": keras.__version__,
                           "kerasSha256": digest_of(payload),
                           "history": _jsonable({"epochs": history.epochs,
                                                 "info": {k: v for k, v in history.info.items()
                                                          if k not in _RUN_ONLY_INFO}})})
        frame = self.sparkSession.createDataFrame([(bytearray(payload),)], "keras binary")
        frame.coalesce(1).write.parquet(os.path.join(path, "keras"))


class _KerasModelReader(MLReader):
    def __init__(self, cls) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> KerasPredictionModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        module, _, name = metadata["class"].rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name, None)
        if not (isinstance(cls, type) and issubclass(cls, KerasPredictionModel)):
            raise ValueError(f"{path} holds a {metadata['class']}, not a sparkdownpour model")
        if metadata.get("kerasFormat") != FORMAT:
            raise ValueError(f"{path}: unknown model format {metadata.get('kerasFormat')!r}; "
                             f"this release reads {FORMAT!r}")
        row = self.sparkSession.read.parquet(os.path.join(path, "keras")).first()
        payload = bytes(row["keras"]) if row is not None else b""
        if digest_of(payload) != metadata.get("kerasSha256"):
            raise ValueError(f"{path}/keras does not match the SHA-256 in its metadata: the "
                             "saved model is corrupt or incomplete; save it again")
        saved = metadata.get("history") or {}
        instance = cls(payload, History(epochs=saved.get("epochs", []),
                                        info=saved.get("info", {})))
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance
