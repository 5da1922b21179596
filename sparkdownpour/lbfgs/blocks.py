"""The data set as cached numpy blocks, checked in the same pass that caches it.

``fit`` needs the data parsed once, cached, and validated before the first evaluation. Doing the
validation as its own aggregation (as ``data.validate`` does) reads and parses the source twice;
here the pass that turns Arrow batches into ``(x, y)`` blocks also counts what would make them
unusable (null or ragged feature rows, NaN/Inf, bad labels) and the label range. Only when that
count is non-zero does the trainer run ``data.validate`` to name the column and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BLOCK_DDL = ("x binary, y binary, rows int, cols int, min_cols int, max_cols int, "
             "bad_rows long, bad_labels long, label_min double, label_max double, "
             "non_integer_labels long")
BLOCK_SCHEMA = pa.schema([
    ("x", pa.binary()), ("y", pa.binary()), ("rows", pa.int32()), ("cols", pa.int32()),
    ("min_cols", pa.int32()), ("max_cols", pa.int32()), ("bad_rows", pa.int64()),
    ("bad_labels", pa.int64()), ("label_min", pa.float64()), ("label_max", pa.float64()),
    ("non_integer_labels", pa.int64()),
])


@dataclass(frozen=True)
class BlockStats:
    """What the caching pass saw; ``merge`` adds two portions' stats."""

    rows: int
    min_cols: int
    max_cols: int
    bad_rows: int            # null feature lists, or a null/NaN/Inf value in one
    bad_labels: int          # null or NaN labels
    label_min: float
    label_max: float
    non_integer_labels: int

    def merge(self, other: "BlockStats") -> "BlockStats":
        return BlockStats(self.rows + other.rows, min(self.min_cols, other.min_cols),
                          max(self.max_cols, other.max_cols), self.bad_rows + other.bad_rows,
                          self.bad_labels + other.bad_labels,
                          min(self.label_min, other.label_min),
                          max(self.label_max, other.label_max),
                          self.non_integer_labels + other.non_integer_labels)

    @property
    def clean(self) -> bool:
        return (self.rows > 0 and self.bad_rows == 0 and self.bad_labels == 0
                and self.min_cols == self.max_cols > 0)


def _batch_stats(features: pa.ListArray, flat: pa.Array, values: np.ndarray,
                 labels: pa.Array) -> dict:
    lengths = pc.list_value_length(features).fill_null(-1).to_numpy(zero_copy_only=False)
    bad_values = ~np.isfinite(values)
    bad_rows = int(features.null_count)
    if flat.null_count or bad_values.any():
        row_of_value = np.repeat(np.arange(len(lengths)), np.maximum(lengths, 0))
        bad = np.zeros(len(lengths), bool)
        bad[row_of_value[bad_values | np.asarray(flat.is_null())]] = True
        bad_rows += int(bad.sum())
    y = labels.to_numpy(zero_copy_only=False).astype(np.float64)
    finite = y[np.isfinite(y)]
    return {"min_cols": int(lengths.min()), "max_cols": int(lengths.max()),
            "bad_rows": bad_rows, "bad_labels": int(len(y) - len(finite)),
            "label_min": float(finite.min()) if len(finite) else np.inf,
            "label_max": float(finite.max()) if len(finite) else -np.inf,
            "non_integer_labels": int(np.count_nonzero(finite != np.floor(finite)))}


def to_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: each ``features, label`` batch becomes one row of raw bytes
    and the batch's statistics."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        features, labels = batch.column(0), batch.column(1)
        flat = features.flatten()
        values = flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        stats = _batch_stats(features, flat, values, labels)
        y = labels.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        cols = stats["max_cols"] if stats["min_cols"] == stats["max_cols"] else 0
        yield pa.RecordBatch.from_pylist([{
            "x": values.tobytes() if cols else b"", "y": y.tobytes(), "rows": batch.num_rows,
            "cols": cols, **stats}], schema=BLOCK_SCHEMA)


def block_with_stats(row) -> tuple[np.ndarray, np.ndarray, BlockStats]:
    x = np.frombuffer(row.x, dtype=np.float32).reshape(row.rows, row.cols) if row.cols else None
    stats = BlockStats(row.rows, row.min_cols, row.max_cols, row.bad_rows, row.bad_labels,
                       row.label_min, row.label_max, row.non_integer_labels)
    return x, np.frombuffer(row.y, dtype=np.float32), stats


def numpy_blocks(prepared, portions: int):
    """The prepared ``features, label`` frame as an RDD of ``(x, y, BlockStats)`` blocks in
    ``portions`` partitions (not yet cached); no shuffle when it already has that many."""
    from sparkdownpour.data.sparse import is_sparse_frame
    from sparkdownpour.lbfgs.sparse_blocks import (SPARSE_BLOCK_DDL, sparse_block_with_stats,
                                                   to_sparse_blocks)

    if prepared.rdd.getNumPartitions() != portions:
        prepared = prepared.repartition(portions)
    if is_sparse_frame(prepared):  # CSR blocks: bytes follow the non-zeros (lbfgs.sparse_blocks)
        return prepared.mapInArrow(to_sparse_blocks, SPARSE_BLOCK_DDL).rdd \
            .map(sparse_block_with_stats)
    return prepared.mapInArrow(to_blocks, BLOCK_DDL).rdd.map(block_with_stats)


def _merge(a: BlockStats | None, b: BlockStats | None) -> BlockStats | None:
    return b if a is None else a if b is None else a.merge(b)


def cache_and_check(blocks) -> BlockStats | None:
    """Cache ``blocks`` and return the merged statistics (None: no rows), in one Spark job."""
    blocks.cache()
    return blocks.map(lambda block: block[2]).fold(None, _merge)
