"""Arrow to numpy and back on executors, without importing pandas.

pyarrow's ``Array.to_numpy`` (``np.asarray`` too) and ``pa.array`` import pandas where it is
installed (pyarrow's pandas shim checks every input for pandas objects). A numpy replica's
worker needs nothing of pandas, and paid its import on its first mini-batch: 0.2 s of an idle
core, more beside a second cold worker, in every cold fit. DLPack and ``Array.from_buffers``
reach the same memory without the shim.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["numeric_values", "row_batch"]

_DTYPES = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32,
           pa.int64(): np.int64, pa.float32(): np.float32, pa.float64(): np.float64}


def numeric_values(array: pa.Array) -> np.ndarray:
    """The values of a numeric Arrow array without nulls (read-only, no copy, slices honoured);
    anything else (nulls, booleans, other types) as ``to_numpy`` gives it."""
    if array.null_count == 0 and array.type in _DTYPES:
        try:
            return np.from_dlpack(array)
        except (BufferError, TypeError, ValueError):  # a pyarrow without DLPack for this array
            pass
    return array.to_numpy(zero_copy_only=False)


def row_batch(row: dict[str, Any], schema: pa.Schema) -> pa.RecordBatch:
    """A one-row RecordBatch of ``schema`` (integer, floating point and string fields) from
    plain Python values; a missing or None value is a null."""
    return pa.RecordBatch.from_arrays([_one_value(row.get(field.name), field.type)
                                       for field in schema], schema=schema)


def _one_value(value: Any, kind: pa.DataType) -> pa.Array:
    valid = None if value is not None else pa.py_buffer(b"\x00")  # bit 0 clear: a null
    if kind in _DTYPES:
        data = np.array([0 if value is None else value], dtype=_DTYPES[kind]).tobytes()
        return pa.Array.from_buffers(kind, 1, [valid, pa.py_buffer(data)],
                                     null_count=int(value is None))
    if pa.types.is_string(kind):
        text = b"" if value is None else str(value).encode()
        offsets = np.array([0, len(text)], dtype=np.int32).tobytes()
        return pa.Array.from_buffers(kind, 1, [valid, pa.py_buffer(offsets), pa.py_buffer(text)],
                                     null_count=int(value is None))
    raise TypeError(f"row_batch: no conversion for a field of type {kind}")
