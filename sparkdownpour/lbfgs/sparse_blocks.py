"""Sandblaster's cached blocks for sparse features: CSR bytes, checked in the caching pass.

The sparse twin of ``lbfgs.blocks.to_blocks``: each Arrow batch of the sparse ``features``
struct (``data.sparse``) becomes one row holding the CSR matrix's three arrays as raw bytes
(``indptr`` int64, ``indices`` int32, ``values`` float32) and the labels, plus the same
statistics the dense blocks report. A cached block therefore costs 8 bytes per non-zero and
12 per row, whatever the dimension.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from sparkdownpour.data.arrow_numpy import filled, flags, numeric_values
from sparkdownpour.data.sparse import CSR

__all__ = ["SPARSE_BLOCK_DDL", "sparse_block", "to_sparse_blocks"]

SPARSE_BLOCK_DDL = ("indptr binary, indices binary, values binary, y binary, rows int, "
                    "cols int, min_cols int, max_cols int, bad_rows long, bad_labels long, "
                    "label_min double, label_max double, non_integer_labels long, portion int")
SPARSE_BLOCK_SCHEMA = pa.schema([
    ("indptr", pa.binary()), ("indices", pa.binary()), ("values", pa.binary()),
    ("y", pa.binary()), ("rows", pa.int32()), ("cols", pa.int32()), ("min_cols", pa.int32()),
    ("max_cols", pa.int32()), ("bad_rows", pa.int64()), ("bad_labels", pa.int64()),
    ("label_min", pa.float64()), ("label_max", pa.float64()), ("non_integer_labels", pa.int64()),
    ("portion", pa.int32()),
])


def to_sparse_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: each sparse ``features, label`` batch becomes one block row
    (``lbfgs.blocks.portion_rows``: an empty portion yields a placeholder)."""
    from sparkdownpour.lbfgs.blocks import portion_rows

    return portion_rows(sparse_block_fields(batches), SPARSE_BLOCK_SCHEMA)


def sparse_block_fields(batches: Iterator[pa.RecordBatch]) -> Iterator[dict]:
    for batch in batches:
        if batch.num_rows == 0:
            continue
        features, labels = batch.column(0), batch.column(1)
        n = batch.num_rows
        # arrow_numpy throughout: pyarrow's own conversions would import pandas here
        valid = np.ones(n, bool) if features.null_count == 0 else flags(features.is_valid())
        size = np.where(valid, filled(features.field("size"), -1), -1)
        lengths = np.where(valid, filled(features.field("values").value_lengths(), 0), 0)
        present = features.filter(features.is_valid()) if features.null_count else features
        indices = numeric_values(present.field("indices").flatten())
        values = numeric_values(present.field("values").flatten())
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        row_of = np.repeat(np.arange(n), lengths)
        bad = ~valid
        wrong = ~np.isfinite(values) | (indices < 0) | (indices >= size[row_of])
        if wrong.any():
            bad[row_of[wrong]] = True
        y = numeric_values(labels).astype(np.float32)  # nulls: NaN
        finite = y[np.isfinite(y)].astype(np.float64)
        sizes = size[valid]
        cols = int(sizes.max()) if len(sizes) and sizes.min() == sizes.max() else 0
        yield {
            "indptr": indptr.tobytes(), "indices": indices.astype("<i4").tobytes(),
            "values": values.astype("<f4").tobytes(), "y": y.tobytes(), "rows": n,
            "cols": cols, "min_cols": int(size.min()), "max_cols": int(size.max()),
            "bad_rows": int(bad.sum()), "bad_labels": int(len(y) - len(finite)),
            "label_min": float(finite.min()) if len(finite) else np.inf,
            "label_max": float(finite.max()) if len(finite) else -np.inf,
            "non_integer_labels": int(np.count_nonzero(finite != np.floor(finite))),
        }


def sparse_block(row: dict):
    """``(CSR x, y)`` of a block row (``SPARSE_BLOCK_SCHEMA``'s fields by name; the binary ones
    as buffers); ``x`` is None for a ragged block."""
    x = CSR(np.frombuffer(row["indptr"], "<i8"), np.frombuffer(row["indices"], "<i4"),
            np.frombuffer(row["values"], "<f4"), row["cols"]) if row["cols"] else None
    return x, np.frombuffer(row["y"], dtype=np.float32)
