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

from typing import Iterator

import pyarrow as pa
from pyspark.ml import Model
from pyspark.ml.functions import array_to_vector
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkdownpour.data.columns import features_expression
from sparkdownpour.data.sparse import SPARSE_MIN_FEATURES
from sparkdownpour.history import History
from sparkdownpour.ml.params import TASKS, KerasModelParams
from sparkdownpour.ml.persistence import KerasParamsReader, KerasParamsWriter, jsonable
from sparkdownpour.ml.predict import digest_of, keras_from_bytes, predict_batches


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
        wide_vectors = isinstance(features, str) and features in dataset.columns and \
            isinstance(dataset.schema[features].dataType, VectorUDT) and \
            self.getNumFeatures() >= SPARSE_MIN_FEATURES  # scored sparse: never densified
        frame = dataset.withColumn(scratch, udf(
            F.col(features) if wide_vectors else features_expression(dataset, features)))
        if "prediction" in outputs:
            frame = frame.withColumn(outputs["prediction"], F.col(f"{scratch}.prediction"))
        if "probability" in outputs:  # array_to_vector throws on null: a null row stays null
            probability = F.col(f"{scratch}.probability")
            frame = frame.withColumn(outputs["probability"],
                                     F.when(probability.isNotNull(), array_to_vector(probability)))
        return frame.drop(scratch)

    def write(self) -> MLWriter:
        history = self.history
        return KerasParamsWriter(self, self._require_payload, lambda: {
            "history": jsonable({"epochs": history.epochs, "info": _lasting(history.info)})})

    @classmethod
    def read(cls) -> MLReader:
        return KerasParamsReader(KerasPredictionModel, _model_from_saved, "fitted model")


class DownpourModel(KerasPredictionModel):
    """What ``DownpourEstimator.fit`` returns."""


class SandblasterModel(KerasPredictionModel):
    """What ``SandblasterEstimator.fit`` returns."""


def _lasting(info: dict) -> dict:
    """``history.info`` without what meant something only while the fit ran: the addresses of
    servers that stopped with it and the dashboard's one-time login link (a login code has no
    business in a model directory)."""
    return {key: value for key, value in info.items()
            if key not in ("dashboard", "dashboard_server", "server", "shard_urls")
            and not (key == "shards" and isinstance(value, list))}  # Downpour's shard URLs


def _model_from_saved(cls, payload: bytes, metadata: dict) -> KerasPredictionModel:
    saved = metadata.get("history") or {}
    return cls(payload, History(epochs=saved.get("epochs", []), info=saved.get("info", {})))
