"""Column-type checks and the one cheap validation pass, before any training job starts.

Every refusal names the column, its type or the offending value, and the fix, because the
alternative is a stack trace from deep inside an executor twenty minutes into a job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkdownpour.data.names import FEATURES, LABEL, PARTITION_ID

NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                 T.DecimalType)


@dataclass(frozen=True)
class DataSummary:
    """What the validation pass learned: sizes and label range, for the trainer and the history."""

    num_rows: int
    num_features: int
    label_min: float
    label_max: float
    # Partitions of the validated frame (the highest non-empty one + 1), read in the same pass,
    # so a trainer needs no job of its own to count them; None: not counted.
    partitions: int | None = None
    # Labels with a fractional part, counted in the same pass (class-index losses refuse them
    # without a job of their own when 0); None: not counted.
    non_integer_labels: int | None = None
    # Sparse features: the stored non-zeros of all rows (the cache's size), None: dense.
    nonzeros: int | None = None
    # Partitions holding at least one row (None: not counted, or more than 63 partitions).
    nonempty_partitions: int | None = None



def with_partition_id(prepared: DataFrame) -> DataFrame:
    """``prepared`` plus each row's partition id as a column. Spark 4.3's analyzer refuses the
    non-deterministic ``spark_partition_id()`` inside an aggregate function's arguments
    (AGGREGATE_FUNCTION_WITH_NONDETERMINISTIC_EXPRESSION); a projected column is fine."""
    return prepared.withColumn(PARTITION_ID, F.spark_partition_id())


MASKED_PARTITIONS = 63  # partitions the non-empty mask covers (a long's bits)


def nonempty_mask():
    """An aggregate over a ``with_partition_id`` frame: bit p set when partition p (below
    ``MASKED_PARTITIONS``) holds a row. Its bit count says how many partitions hold data, which
    a trainer uses to spread rows that sit in fewer partitions than task slots."""
    pid = F.col(PARTITION_ID)
    # 2.0 ** p is exact in a double for p < 63, so the cast gives bit p alone.
    return F.bit_or(F.when(pid < MASKED_PARTITIONS, F.pow(F.lit(2.0), pid).cast("long"))
                    .otherwise(F.lit(0).cast("long"))).alias("nonempty_mask")


def nonempty_partitions(row) -> int | None:
    """Partitions holding rows, from ``nonempty_mask``; None past ``MASKED_PARTITIONS``."""
    if row["last_partition"] >= MASKED_PARTITIONS:
        return None
    return bin(int(row["nonempty_mask"] or 0)).count("1")


def _field(df: DataFrame, name: str, role: str) -> T.StructField:
    if not isinstance(name, str):
        raise TypeError(f"{role} column must be a column name (str), received {name!r}")
    try:
        return df.schema[name]
    except (KeyError, Exception) as exc:  # pyspark raises its own PySparkKeyError
        if name in df.columns:
            raise
        raise ValueError(f"{role} column {name!r} not found; the DataFrame has columns "
                         f"{df.columns}") from exc


def features_expression(df: DataFrame, features_col: str | Sequence[str]):
    """An ``array<float>`` expression for a vector column, an array column, or numeric columns."""
    if isinstance(features_col, (list, tuple)):
        if not features_col:
            raise ValueError("features_col is an empty list; name at least one numeric column")
        fields = [_field(df, name, "features") for name in features_col]
        if not all(isinstance(f.dataType, NUMERIC_TYPES) for f in fields):
            # Vectors or arrays among them (e.g. a model with several inputs, see
            # sparkdownpour.inputs): every column's values, concatenated in order.
            return F.concat(*[features_expression(df, name) for name in features_col])
        return F.array(*[F.col(n).cast("float") for n in features_col])
    field = _field(df, features_col, "features")
    dtype = field.dataType
    if isinstance(dtype, VectorUDT):
        # vector_to_array throws on a null vector; keep it null so the caller can name it.
        column = F.col(features_col)
        return F.when(column.isNotNull(), vector_to_array(column, dtype="float32"))
    if isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, NUMERIC_TYPES):
        return F.col(features_col).cast(T.ArrayType(T.FloatType()))
    if isinstance(dtype, NUMERIC_TYPES):
        return F.array(F.col(features_col).cast("float"))
    if isinstance(dtype, T.StructType) and \
            [f.name for f in dtype.fields] == [f.name for f in VectorUDT.sqlType().fields]:
        raise TypeError(
            f"features column {features_col!r} has type {dtype.simpleString()}: a Spark ML vector "
            "read back without its type (ORC, for one, keeps only the struct); read the table "
            "with its vector schema, e.g. spark.read.schema(df.schema).orc(path)")
    raise TypeError(
        f"features column {features_col!r} has type {dtype.simpleString()}; expected a Spark ML "
        "vector, an array of numbers, or numeric columns (pass a list of names, or assemble them "
        "with pyspark.ml.feature.VectorAssembler)")


def label_expression(df: DataFrame, label_col: str):
    field = _field(df, label_col, "label")
    if not isinstance(field.dataType, NUMERIC_TYPES):
        hint = (" (index string labels with pyspark.ml.feature.StringIndexer first)"
                if isinstance(field.dataType, T.StringType) else "")
        raise TypeError(f"label column {label_col!r} has type {field.dataType.simpleString()}; "
                        f"labels must be integer or double{hint}")
    return F.col(label_col).cast("float")


def prepare(df: DataFrame, features_col: str | Sequence[str], label_col: str) -> DataFrame:
    """Project ``df`` to ``features: array<float>, label: float``, the replicas' input format
    (a sparse vector column: ``data.sparse.SPARSE_DDL``, read once to tell)."""
    if not isinstance(df, DataFrame):
        raise TypeError(f"fit expects a pyspark.sql.DataFrame, received {type(df).__name__}")
    from sparkdownpour.data import sparse  # sparse vectors stay sparse (data.sparse)

    if sparse.is_sparse_column(df, features_col):
        return sparse.sparse_frame(df, features_col, label_expression(df, label_col))
    return df.select(features_expression(df, features_col).alias(FEATURES),
                     label_expression(df, label_col).alias(LABEL))


def _describe_features(features_col) -> str:
    return f"features column {features_col!r}" if isinstance(features_col, str) else \
        f"features columns {list(features_col)}"


def validate(prepared: DataFrame, features_col, label_col: str) -> DataSummary:
    """One aggregation over the prepared frame; refuse empty, ragged, null or non-finite data.

    A frame read only from caches that passed before is not read again (``summary_memo``)."""
    from sparkdownpour.data import summary_memo

    key = summary_memo.cached_rows_key(prepared)
    summary = summary_memo.recall(key)
    if summary is None:
        summary = _validation_pass(prepared, features_col, label_col)
        summary_memo.remember(key, summary)
    return summary


def _validation_pass(prepared: DataFrame, features_col, label_col: str) -> DataSummary:
    from sparkdownpour.data import sparse

    if sparse.is_sparse_frame(prepared):
        return sparse.validate_sparse(prepared, _describe_features(features_col), label_col)
    feats, label = F.col(FEATURES), F.col(LABEL)
    bad_value = F.exists(feats, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    row = with_partition_id(prepared).agg(
        F.count(F.lit(1)).alias("n"),
        F.min(F.size(feats)).alias("dmin"), F.max(F.size(feats)).alias("dmax"),
        F.sum(feats.isNull().cast("long")).alias("null_rows"),
        F.sum(bad_value.cast("long")).alias("bad_rows"),
        F.sum((label.isNull() | F.isnan(label)).cast("long")).alias("bad_labels"),
        F.min(label).alias("lmin"), F.max(label).alias("lmax"),
        F.sum((label != F.floor(label)).cast("long")).alias("non_integer"),
        F.max(PARTITION_ID).alias("last_partition"), nonempty_mask(),
    ).first()
    what = _describe_features(features_col)
    if row["n"] == 0:
        raise ValueError("the DataFrame is empty: there is nothing to train on")
    if row["null_rows"]:
        raise ValueError(f"{what} is null in {row['null_rows']} of {row['n']} rows; drop or "
                         "impute them first (DataFrame.dropna, pyspark.ml.feature.Imputer)")
    if row["bad_rows"]:
        example = (prepared.filter(bad_value)
                   .select(F.filter(feats, lambda x: x.isNull() | F.isnan(x)
                                    | (F.abs(x) == float("inf"))).getItem(0).alias("v"))
                   .first()["v"])
        raise ValueError(f"{what} holds a null, NaN or infinite value ({example}) in "
                         f"{row['bad_rows']} of {row['n']} rows; drop or impute them first "
                         "(DataFrame.dropna, pyspark.ml.feature.Imputer)")
    if row["dmin"] != row["dmax"]:
        raise ValueError(f"{what} has rows of different lengths ({row['dmin']} to {row['dmax']}); "
                         "every row needs the same number of features")
    if row["dmin"] == 0:
        raise ValueError(f"{what} holds empty feature arrays; every row needs at least one feature")
    if row["bad_labels"]:
        raise ValueError(f"label column {label_col!r} is null or NaN in {row['bad_labels']} of "
                         f"{row['n']} rows; drop them first")
    return DataSummary(num_rows=int(row["n"]), num_features=int(row["dmin"]),
                       label_min=float(row["lmin"]), label_max=float(row["lmax"]),
                       partitions=int(row["last_partition"]) + 1,
                       non_integer_labels=int(row["non_integer"] or 0),
                       nonempty_partitions=nonempty_partitions(row))


# Keras losses (by name, as a string or a loss object's name) that compare every output with
# a label value of its own: with a one-number label column only a one-output model fits them.
PER_OUTPUT_LOSSES = (
    "categorical_crossentropy", "CategoricalCrossentropy", "binary_crossentropy",
    "BinaryCrossentropy", "mse", "mean_squared_error", "MeanSquaredError", "mae",
    "mean_absolute_error", "MeanAbsoluteError", "huber", "huber_loss", "Huber", "log_cosh",
    "LogCosh", "msle", "mean_squared_logarithmic_error", "MeanSquaredLogarithmicError", "mape",
    "mean_absolute_percentage_error", "MeanAbsolutePercentageError", "poisson", "Poisson",
    "kl_divergence", "kld", "KLDivergence", "hinge", "Hinge", "squared_hinge", "SquaredHinge",
    "categorical_hinge", "CategoricalHinge")


def check_labels_fit_loss(prepared: DataFrame, summary: DataSummary, label_col: str,
                          loss_name: str | None, output_units: int,
                          non_integer_labels: int | None = None) -> None:
    """Refuse labels that the loss cannot take: class indices out of range, non-0/1 binary labels.

    ``non_integer_labels``, when the caller already counted them, spares a Spark job when it
    is 0 (the job then only runs to find an example for the message).
    """
    # Imported here: the replica package imports this one.
    from sparkdownpour.keras_model import BINARY_LOSSES, SPARSE_LOSSES

    if loss_name in PER_OUTPUT_LOSSES and output_units > 1:
        # The label column is one number a row; these losses want one per output. Before,
        # the replicas' or evaluators' TensorFlow call failed on the label's shape.
        raise ValueError(
            f"label column {label_col!r} holds one number a row, but loss {loss_name!r} needs "
            f"one label value for each of the model's {output_units} outputs; for classes use "
            "loss='sparse_categorical_crossentropy' with integer class indices, otherwise give "
            "the model one output")
    if loss_name in SPARSE_LOSSES:
        low, high = 0, output_units - 1
        non_integer = None if non_integer_labels == 0 else \
            prepared.filter(F.col(LABEL) != F.floor(F.col(LABEL))).select(LABEL).first()
        if non_integer is not None:
            raise ValueError(f"label column {label_col!r} holds {non_integer[0]}, not a class "
                             f"index; loss {loss_name!r} needs integer labels in [{low}, {high}]")
    elif loss_name in BINARY_LOSSES:
        low, high = 0, 1
    else:
        return
    for value in (summary.label_min, summary.label_max):
        if not low <= value <= high:
            raise ValueError(
                f"label column {label_col!r} holds {value}, outside [{low}, {high}] for loss "
                f"{loss_name!r} with a model of {output_units} output unit(s); re-index the "
                "labels or widen the model's last layer")
