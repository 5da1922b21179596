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

__all__ = ["array_of", "filled", "flags", "list_array", "numeric_values", "row_batch"]

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


def filled(array: pa.Array, fill) -> np.ndarray:
    """A numeric array's values with its nulls replaced by ``fill`` (``fill_null`` would make
    a pyarrow scalar of ``fill``, which imports pandas too)."""
    if array.null_count == 0:
        return numeric_values(array)
    if array.type not in _DTYPES:
        return array.fill_null(fill).to_numpy(zero_copy_only=False)
    dtype = np.dtype(_DTYPES[array.type])
    raw = np.frombuffer(array.buffers()[1], dtype, count=len(array),
                        offset=array.offset * dtype.itemsize)
    return np.where(flags(array.is_valid()), raw, np.asarray(fill).astype(dtype))


def flags(array: pa.Array) -> np.ndarray:
    """A boolean Arrow array (e.g. ``is_valid()``, no nulls) as a numpy bool vector."""
    return numeric_values(array.cast(pa.int8())).astype(bool)


def array_of(values: np.ndarray, kind: pa.DataType, nulls: np.ndarray | None = None) -> pa.Array:
    """A numpy vector as an Arrow array of the numeric ``kind`` (or ``pa.bool_()``); ``nulls``
    (a bool mask) marks null entries."""
    valid, null_count = _validity(nulls)
    if kind == pa.bool_():
        bits = np.packbits(np.asarray(values, bool), bitorder="little")
        return pa.Array.from_buffers(kind, len(values), [valid, pa.py_buffer(bits)],
                                     null_count=null_count)
    data = np.ascontiguousarray(values, dtype=_DTYPES[kind])
    return pa.Array.from_buffers(kind, len(data), [valid, pa.py_buffer(data)],
                                 null_count=null_count)


def list_array(offsets: np.ndarray, items: pa.Array, nulls: np.ndarray | None = None,
               kind: pa.DataType | None = None) -> pa.ListArray:
    """Lists of ``items`` cut at the int32 ``offsets`` (one more than the lists); ``nulls``
    marks null lists; ``kind`` defaults to ``pa.list_(items.type)``."""
    valid, null_count = _validity(nulls)
    offsets = np.ascontiguousarray(offsets, np.int32)
    return pa.Array.from_buffers(kind or pa.list_(items.type), len(offsets) - 1,
                                 [valid, pa.py_buffer(offsets)], null_count=null_count,
                                 children=[items])


def _validity(nulls: np.ndarray | None) -> tuple[pa.Buffer | None, int]:
    """Arrow's validity bitmap (None when nothing is null) and the null count."""
    if nulls is None or not nulls.any():
        return None, 0
    return pa.py_buffer(np.packbits(~nulls, bitorder="little")), int(nulls.sum())


def row_batch(row: dict[str, Any], schema: pa.Schema) -> pa.RecordBatch:
    """A one-row RecordBatch of ``schema`` from plain Python values: integer, floating point,
    string and binary fields, and lists of those; a missing or None value is a null."""
    return pa.RecordBatch.from_arrays([_column([row.get(field.name)], field.type)
                                       for field in schema], schema=schema)


def _column(values: list, kind: pa.DataType) -> pa.Array:
    """``values`` (Python scalars or lists, None for a null) as an Arrow array of ``kind``."""
    nulls = np.array([v is None for v in values], bool)
    if kind in _DTYPES:
        return array_of(np.array([0 if v is None else v for v in values], _DTYPES[kind]), kind,
                        nulls)
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        parts = [b"" if v is None else v if isinstance(v, bytes) else str(v).encode()
                 for v in values]
        offsets = np.zeros(len(parts) + 1, np.int32)
        np.cumsum([len(part) for part in parts], out=offsets[1:])
        valid, null_count = _validity(nulls)
        return pa.Array.from_buffers(kind, len(values), [valid, pa.py_buffer(offsets.tobytes()),
                                                         pa.py_buffer(b"".join(parts))],
                                     null_count=null_count)
    if pa.types.is_list(kind):
        items = [item for v in values if v is not None for item in v]
        offsets = np.zeros(len(values) + 1, np.int32)
        np.cumsum([0 if v is None else len(v) for v in values], out=offsets[1:])
        return list_array(offsets, _column(items, kind.value_type), nulls, kind)
    raise TypeError(f"row_batch: no conversion for a field of type {kind}")
