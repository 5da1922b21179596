"""Sparse vector columns kept sparse, from the DataFrame to the model (issue 19).

Spark ML's feature transformers (``HashingTF`` with 2^18 features by default,
``CountVectorizer``, ``OneHotEncoder``, ``FeatureHasher``) produce ``SparseVector`` rows. Turning
them into a dense ``array<float>`` in the JVM (``vector_to_array``) makes every row cost
``4 x num_features`` bytes, 1 MiB at 2^18 features, and kills the executor long before the data
is large. So a sparse vector column travels differently:

1. ``is_sparse_column`` decides once per ``fit``: a Spark ML vector column whose first non-null
   row is a ``SparseVector`` of at least ``SPARSE_MIN_FEATURES`` dimensions. Dense vectors,
   arrays and numeric columns keep the dense path.
2. ``sparse_frame`` reads the vector's own Arrow form (the ``VectorUDT`` struct: type, size,
   indices, values) with ``mapInArrow`` and writes ``features: struct<size int, indices
   array<int>, values array<float>>, label float``: 8 bytes per non-zero plus a few per row.
   Nothing is ever densified in the JVM; dense rows of a mixed column keep their non-zeros only.
   This is the frame Downpour caches and Sandblaster cuts into blocks.
3. ``csr_from_arrow`` turns one Arrow batch of that struct into a ``CSR`` matrix (numpy
   ``indptr`` / ``indices`` / ``values``), which the mini-batches and Sandblaster's blocks carry,
   and ``CSR.to_tf`` hands the model a ``tf.SparseTensor`` (a first ``Dense`` layer computes a
   sparse-dense product; see ``replica.sparse_gradient`` for layers that cannot take one).

Memory per row is proportional to its non-zeros, not to the dimension.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from sparkdownpour.data.arrow_numpy import array_of, filled, flags, list_array, numeric_values
from sparkdownpour.data.names import FEATURES, LABEL

__all__ = ["CSR", "SPARSE_DDL", "SPARSE_MIN_FEATURES", "concat_rows", "csr_from_arrow",
           "is_sparse_column", "is_sparse_frame", "sparse_frame", "validate_sparse",
           "vectors_to_sparse"]

SPARSE_MIN_FEATURES = 1024  # below this a dense row costs at most 4 KiB: the dense path is faster
SPARSE_DDL = f"{FEATURES} struct<size: int, indices: array<int>, values: array<float>>, {LABEL} float"
SPARSE_TYPE = pa.struct([("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                         ("values", pa.list_(pa.float32()))])
SPARSE_SCHEMA = pa.schema([(FEATURES, SPARSE_TYPE), (LABEL, pa.float32())])


class CSR:
    """A compressed-sparse-row float32 matrix: row ``i`` holds ``values[indptr[i]:indptr[i+1]]``
    at columns ``indices[indptr[i]:indptr[i+1]]`` (ascending within a row).

    Just enough of a matrix for the mini-batch code: ``len``, row slices and row selections
    (``x[a:b]``, ``x[order]``), ``concat_rows``, ``to_dense`` and ``to_tf``.
    """

    __slots__ = ("indptr", "indices", "values", "num_features")

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray,
                 num_features: int) -> None:
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int32)
        self.values = np.asarray(values, dtype=np.float32)
        self.num_features = int(num_features)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.num_features

    @property
    def nnz(self) -> int:
        return len(self.values)

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, key) -> CSR:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                stop = max(start, stop)
                lo, hi = self.indptr[start], self.indptr[stop]
                return CSR(self.indptr[start:stop + 1] - lo, self.indices[lo:hi],
                           self.values[lo:hi], self.num_features)
            key = np.arange(start, stop, step)
        rows = np.asarray(key, dtype=np.int64)
        starts, lengths = self.indptr[rows], np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        # Entry k of the selection comes from starts[row] + (k - indptr[row]).
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return CSR(indptr, self.indices[take], self.values[take], self.num_features)

    def row_ids(self) -> np.ndarray:
        """The row of every stored entry."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    def to_dense(self) -> np.ndarray:
        """The (rows, num_features) float32 matrix: ``rows x num_features x 4`` bytes."""
        dense = np.zeros(self.shape, np.float32)
        dense[self.row_ids(), self.indices] = self.values
        return dense

    def to_tf(self):
        """A ``tf.SparseTensor`` in canonical (row-major) order."""
        import tensorflow as tf

        coords = np.stack([self.row_ids(), self.indices.astype(np.int64)], axis=1)
        return tf.SparseTensor(coords, self.values, (len(self), self.num_features))

    def __repr__(self) -> str:
        return f"CSR(shape={self.shape}, nnz={self.nnz})"


def concat_rows(parts: Sequence) -> CSR | np.ndarray:
    """Stack row blocks: numpy arrays with ``np.concatenate``, ``CSR`` blocks as one CSR."""
    if not isinstance(parts[0], CSR):
        return np.concatenate(parts)
    offsets = np.cumsum([0] + [p.indptr[-1] for p in parts[:-1]])
    indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + o
                                                     for p, o in zip(parts, offsets)])
    return CSR(indptr, np.concatenate([p.indices for p in parts]),
               np.concatenate([p.values for p in parts]), parts[0].num_features)


# -- columns ---------------------------------------------------------------------------------


def is_sparse_column(df, features_col) -> bool:
    """True for a vector column whose first non-null row is a ``SparseVector`` of at least
    ``SPARSE_MIN_FEATURES`` dimensions (one small Spark job reads that row)."""
    from pyspark.ml.linalg import SparseVector, VectorUDT
    from pyspark.sql import functions as F

    if not isinstance(features_col, str) or features_col not in df.columns or \
            not isinstance(df.schema[features_col].dataType, VectorUDT):
        return False
    attrs = df.schema[features_col].metadata.get("ml_attr", {})
    size = attrs.get("num_attrs") if isinstance(attrs, dict) else None
    if isinstance(size, int) and size < SPARSE_MIN_FEATURES:
        return False  # known small from ML attributes: spare the job
    first = df.select(features_col).where(F.col(features_col).isNotNull()).first()
    vector = first[0] if first is not None else None
    return isinstance(vector, SparseVector) and vector.size >= SPARSE_MIN_FEATURES


def is_sparse_frame(prepared) -> bool:
    """Whether ``prepared`` (from ``data.prepare``) holds sparse features."""
    from pyspark.sql import types as T

    return isinstance(prepared.schema[FEATURES].dataType, T.StructType)


def sparse_frame(df, features_col: str, label):
    """``features`` (sparse struct) and ``label`` (float) from a vector column; lazy."""
    from pyspark.sql import functions as F

    return df.select(F.col(features_col).alias(FEATURES), label.alias(LABEL)) \
        .mapInArrow(vectors_to_sparse, SPARSE_DDL)


def _vector_entries(column: pa.StructArray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
    """From a ``VectorUDT`` struct column: (row of each entry, column, value, size per row).

    Sparse rows (type 0) give their stored entries; dense rows (type 1) give every position.
    """
    # (arrow_numpy throughout: pyarrow's own conversions import pandas in the worker)
    kind = filled(column.field("type"), 0)
    values_list = column.field("values")
    lengths = filled(values_list.value_lengths(), 0)
    if column.null_count:  # a null vector's children may hold garbage: count nothing for it
        lengths = np.where(flags(column.is_valid()), lengths, 0)
        values_list = values_list.filter(column.is_valid())
        indices_list = column.field("indices").filter(column.is_valid())
    else:
        indices_list = column.field("indices")
    values = numeric_values(values_list.flatten()).astype(np.float32)
    rows = np.repeat(np.arange(len(column)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    cols = np.arange(len(values), dtype=np.int64) - np.repeat(starts, lengths)  # dense: position
    sparse_entry = kind[rows] == 0
    if sparse_entry.any():
        cols[sparse_entry] = numeric_values(indices_list.flatten())
    size = np.where(kind == 1, lengths, filled(column.field("size"), 0))  # dense: no size
    return rows, cols, values, size.astype(np.int32)


def vectors_to_sparse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: ``features`` (VectorUDT struct), ``label`` -> ``SPARSE_DDL``.

    Explicit zeros are dropped; NaN and infinities are kept so that validation sees them.
    A null vector stays null.
    """
    for batch in batches:
        column = batch.column(0)
        rows, cols, values, size = _vector_entries(column)
        keep = values != 0
        rows, cols, values = rows[keep], cols[keep], values[keep]
        offsets = np.zeros(len(column) + 1, np.int32)
        np.cumsum(np.bincount(rows, minlength=len(column)), out=offsets[1:])
        nulls = None if column.null_count == 0 else \
            array_of(~flags(column.is_valid()), pa.bool_())
        features = pa.StructArray.from_arrays(
            [array_of(size, pa.int32()), list_array(offsets, array_of(cols, pa.int32())),
             list_array(offsets, array_of(values, pa.float32()))],
            fields=list(SPARSE_TYPE), mask=nulls)
        label = batch.column(1).cast(pa.float32())
        yield pa.RecordBatch.from_arrays([features, label], schema=SPARSE_SCHEMA)


def csr_from_arrow(column: pa.StructArray, num_features: int) -> CSR:
    """One Arrow batch of the sparse ``features`` struct as a CSR matrix (no per-row Python).

    Rows were validated on the driver (no nulls, one size); a slice's offsets are honoured."""
    indices_list, values_list = column.field("indices"), column.field("values")  # sliced
    offsets = numeric_values(values_list.offsets).astype(np.int64)
    indptr = offsets - offsets[0]
    indices = numeric_values(indices_list.flatten())  # arrow_numpy: no pandas in the worker
    values = numeric_values(values_list.flatten())
    return CSR(indptr, indices, values, num_features)


def validate_sparse(prepared, what: str, label_col: str):
    """``data.validate`` for a sparse frame: one aggregation; refuse empty, null, non-finite
    or out-of-range data, and vectors of different sizes."""
    from pyspark.sql import functions as F

    from sparkdownpour.data.columns import (
        PARTITION_ID,
        DataSummary,
        nonempty_mask,
        nonempty_partitions,
        with_partition_id,
    )

    feats, label = F.col(FEATURES), F.col(LABEL)
    values, indices, size = feats.getField("values"), feats.getField("indices"), \
        feats.getField("size")
    bad_value = F.exists(values, lambda v: F.isnan(v) | (F.abs(v) == float("inf")))
    row = with_partition_id(prepared).agg(
        F.count(F.lit(1)).alias("n"), F.min(size).alias("dmin"), F.max(size).alias("dmax"),
        F.sum(feats.isNull().cast("long")).alias("null_rows"),
        F.sum(bad_value.cast("long")).alias("bad_rows"),
        F.sum(F.exists(indices, lambda i: (i < 0) | (i >= size)).cast("long")).alias("bad_index"),
        F.sum((label.isNull() | F.isnan(label)).cast("long")).alias("bad_labels"),
        F.min(label).alias("lmin"), F.max(label).alias("lmax"),
        F.sum((label != F.floor(label)).cast("long")).alias("non_integer"),
        F.sum(F.size(values).cast("long")).alias("nnz"),
        F.max(PARTITION_ID).alias("last_partition"), nonempty_mask(),
    ).first()
    n = row["n"]
    if n == 0:
        raise ValueError("the DataFrame is empty: there is nothing to train on")
    if row["null_rows"]:
        raise ValueError(f"{what} is null in {row['null_rows']} of {n} rows; drop or "
                         "impute them first (DataFrame.dropna, pyspark.ml.feature.Imputer)")
    if row["bad_rows"]:
        raise ValueError(f"{what} holds a NaN or infinite value in {row['bad_rows']} of {n} "
                         "rows; drop or repair them first")
    if row["bad_index"]:
        raise ValueError(f"{what} holds an index outside its vector size in {row['bad_index']} "
                         f"of {n} rows")
    if row["dmin"] != row["dmax"]:
        raise ValueError(f"{what} has vectors of different sizes ({row['dmin']} to "
                         f"{row['dmax']}); every row needs the same number of features")
    if not row["dmin"]:
        raise ValueError(f"{what} holds empty vectors; every row needs at least one feature")
    if row["bad_labels"]:
        raise ValueError(f"label column {label_col!r} is null or NaN in {row['bad_labels']} of "
                         f"{n} rows; drop them first")
    return DataSummary(num_rows=int(n), num_features=int(row["dmin"]),
                       label_min=float(row["lmin"]), label_max=float(row["lmax"]),
                       partitions=int(row["last_partition"]) + 1,
                       non_integer_labels=int(row["non_integer"] or 0),
                       nonzeros=int(row["nnz"] or 0),
                       nonempty_partitions=nonempty_partitions(row))


# -- scoring (ml.predict) ----------------------------------------------------------------------


def csr_from_vectors(column: pa.StructArray, num_features: int, features_col: str
                     ) -> tuple[CSR, np.ndarray]:
    """``(x, valid)`` for scoring: a ``VectorUDT`` struct column's non-null rows as CSR, and
    which rows they are (a null vector gets a null prediction)."""
    valid = np.ones(len(column), bool) if column.null_count == 0 else flags(column.is_valid())
    rows, cols, values, size = _vector_entries(column)
    wrong = np.flatnonzero(valid & (size != num_features))
    if len(wrong):
        raise ValueError(f"features column {features_col!r} has a vector of size "
                         f"{int(size[wrong[0]])}; the model was trained on {num_features} "
                         "features per row")
    keep = values != 0
    renumber = np.cumsum(valid) - 1  # row -> row among the valid ones
    rows, cols, values = renumber[rows[keep]], cols[keep], values[keep]
    indptr = np.zeros(int(valid.sum()) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(indptr) - 1), out=indptr[1:])
    return CSR(indptr, cols, values, num_features), valid


def model_input(x):
    """What a Keras model is called with: a ``tf.SparseTensor`` for CSR rows, else ``x``."""
    return x.to_tf() if isinstance(x, CSR) else x
