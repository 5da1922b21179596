"""The fitted Spark ML models: a trained Keras model as a ``pyspark.ml.Model`` that predicts.

``transform(df)`` appends ``predictionCol`` (class index or value) and, for classifiers,
``probabilityCol`` (a Spark ML vector), computed on executors by a scalar-iterator Arrow UDF over
batches of rows; nothing is collected to the driver. An empty column name skips that column, as
in MLlib.

Persistence is Spark ML's: ``metadata/`` (class, uid, Params, training history, the model's
SHA-256) plus ``keras/``, a one-row Parquet file holding the ``.keras`` bytes, so the directory
can live on any Hadoop file system and load with ``PipelineModel.load``. No pickle anywhere.

The ``.keras`` bytes reach executors without ``SparkContext.broadcast`` (which Spark Connect
lacks), the same way in classic and Connect sessions: inside the UDF's closure, which Spark
ships once per executor, or beyond a size in a file written once per model (``ml.payload``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

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
from sparkdownpour.ml.payload import payload_source
from sparkdownpour.ml.persistence import KerasParamsReader, KerasParamsWriter, jsonable
from sparkdownpour.ml.predict import digest_of, keras_from_bytes, predict_batches

logger = logging.getLogger(__name__)

# Spark 4.3 (seen with 4.3.0; spark.sql.execution.arrow.pythonUDF.columnarInput.enabled, on by
# default) evaluates an Arrow UDF over a columnar child (a vectorized Parquet scan, batch or
# streaming, or any source that yields ColumnarBatches) in ColumnarArrowEvalPythonEvaluatorFactory.
# When the UDF's arguments are not plain Arrow-backed columns (ours are vector_to_array/cast
# expressions, and Parquet's column vectors are not Arrow), it falls back to a row queue and then
# turns every output row, the passed-through input columns included, back into a ColumnarBatch
# with RowToColumnConverter, which has no case for user-defined types: any Spark ML vector column
# in the frame (the features or any other) fails the task with UNSUPPORTED_DATATYPE
# UDT("STRUCT<type: TINYINT ...>"), whatever the UDF's input is. Spark's row path handles UDTs,
# so when the frame carries one, the columnar input is switched off (_row_input_for_udt_columns).
COLUMNAR_UDF_INPUT = "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"


class KerasPredictionModel(Model, KerasModelParams, MLReadable, MLWritable):
    """A trained Keras model that adds prediction (and probability) columns to a DataFrame."""

    def __init__(self, payload: bytes | None = None, history: History | None = None) -> None:
        super().__init__()
        self._payload = payload
        self._history = history or History()
        self._keras = None
        self._source = None  # where executors read the payload (ml.payload), made on first use

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

    def _payload_source(self, spark):
        """Where executors read the payload: the bytes in the UDF's closure, or a file beyond
        ``ml.payload``'s limit (classic and Connect sessions alike)."""
        if self._source is None:
            payload = self._require_payload()
            self._source = payload_source(spark, payload, digest_of(payload))
        return self._source

    def unpersist(self) -> KerasPredictionModel:
        """Forget where the executors read the model's bytes; the next ``transform`` ships them
        again. (There is no broadcast to free: the bytes travel in the UDF's closure, which
        Spark drops with the stage, or in a file that lives until the process ends.)"""
        self._source = None
        return self

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
        slots = self._scoring_slots(dataset)
        features = [slot.column for slot in slots] if slots else self._features_col()
        features_expression(dataset, features)  # a missing or mistyped column: refused now
        _row_input_for_udt_columns(dataset)
        options = dict(digest=digest_of(self._require_payload()),
                       payload=self._payload_source(dataset.sparkSession), task=task,
                       activation=self.getOutputActivation(), num_features=self.getNumFeatures(),
                       features_col=features, task_cpus=task_cpus(dataset.sparkSession),
                       inputs=slots)

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

    def _scoring_slots(self, dataset: DataFrame) -> tuple:
        """A model with several inputs: each input and the column that feeds it, mapped as the
        fit mapped them (``inputs.assign_columns`` over ``featuresCols``, or the fit's own
        columns), after refusing, before any job, a column the frame lacks or a number column
        for an input wider than one value."""
        from sparkdownpour.data.columns import NUMERIC_TYPES
        from sparkdownpour.inputs import InputSlot, assign_columns

        saved = self.getFeatureInputs()
        if not saved:
            return ()
        slots = tuple(InputSlot(entry["input"], entry["column"], tuple(entry["shape"]),
                                entry["dtype"]) for entry in saved)
        if self.getFeaturesCols():
            slots = assign_columns(slots, self.getFeaturesCols())
        for slot in slots:
            if slot.column not in dataset.columns:
                raise ValueError(f"column {slot.column!r} for model input {slot.input_name!r} "
                                 f"not found; the DataFrame has columns {dataset.columns} "
                                 "(setFeaturesCols names one column per input)")
            if isinstance(dataset.schema[slot.column].dataType, NUMERIC_TYPES) and \
                    slot.width != 1:
                raise ValueError(f"column {slot.column!r} holds one number per row but model "
                                 f"input {slot.input_name!r} takes shape {slot.shape} "
                                 f"({slot.width} values)")
        return slots

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


def _has_udt(dtype: T.DataType) -> bool:
    if isinstance(dtype, T.UserDefinedType):
        return True
    if isinstance(dtype, T.StructType):
        return any(_has_udt(field.dataType) for field in dtype.fields)
    if isinstance(dtype, T.ArrayType):
        return _has_udt(dtype.elementType)
    if isinstance(dtype, T.MapType):
        return _has_udt(dtype.keyType) or _has_udt(dtype.valueType)
    return False


def _row_input_for_udt_columns(dataset: DataFrame) -> None:
    """Work around Spark's columnar Arrow-UDF path for frames with a UDT column (see
    ``COLUMNAR_UDF_INPUT``): the one place that knows about it.

    The setting is read when a query runs, so it is set on the frame's session (a streaming
    query copies it when it starts). It only turns an optimisation off; results are the same.
    """
    if not _has_udt(dataset.schema):
        return
    conf = dataset.sparkSession.conf
    if str(conf.get(COLUMNAR_UDF_INPUT, "true")).lower() == "false":
        return
    logger.info("the DataFrame has a user-defined-type column (a Spark ML vector); setting %s="
                "false on its session, because Spark's columnar Arrow-UDF input path cannot "
                "pass such a column through", COLUMNAR_UDF_INPUT)
    conf.set(COLUMNAR_UDF_INPUT, "false")


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
