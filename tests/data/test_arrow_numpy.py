"""Arrow <-> numpy on executors without pandas: the same values as pyarrow's own conversions."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from sparkdownpour.data.arrow_numpy import numeric_values, row_batch
from sparkdownpour.replica.spec import STATS_SCHEMA


@pytest.mark.parametrize("kind", [pa.float32(), pa.float64(), pa.int32(), pa.int64()])
def test_numeric_values_are_the_arrays_values_slices_included(kind):
    array = pa.array(np.arange(10) * 1.5 if pa.types.is_floating(kind) else np.arange(10), kind)
    for part in (array, array.slice(3, 4), array.slice(9)):
        got = numeric_values(part)
        np.testing.assert_array_equal(got, part.to_numpy())
        assert got.dtype == part.to_numpy().dtype


def test_arrays_with_nulls_or_booleans_come_as_to_numpy_gives_them():
    with_null = pa.array([1.0, None, 3.0])
    np.testing.assert_array_equal(numeric_values(with_null), [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(numeric_values(pa.array([True, False])), [True, False])


def test_a_list_columns_flattened_values_honour_the_batch_slice():
    column = pa.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], pa.list_(pa.float32()))
    np.testing.assert_array_equal(numeric_values(column.slice(1, 2).flatten()), [2, 3, 4, 5])


def test_row_batch_equals_pyarrows_own_for_the_replica_statistics_row():
    row = {field.name: (f"text-{i}" if pa.types.is_string(field.type) else i + 0.5
                        if pa.types.is_floating(field.type) else i)
           for i, field in enumerate(STATS_SCHEMA)}
    row["device_note"], row["push_period"] = None, None  # nulls of both kinds
    assert row_batch(row, STATS_SCHEMA).equals(pa.RecordBatch.from_pylist([row], STATS_SCHEMA))
    assert row_batch({"partition": 3}, STATS_SCHEMA).column(0).to_pylist() == [3]


def test_row_batch_refuses_a_type_it_cannot_build():
    with pytest.raises(TypeError, match="list"):
        row_batch({"x": [1]}, pa.schema([("x", pa.list_(pa.int64()))]))


FRESH_WORKER = """
import sys
import pyarrow as pa
from sparkdownpour.data.batches import mini_batches
from sparkdownpour.data.arrow_numpy import row_batch
from sparkdownpour.replica.spec import STATS_SCHEMA
batches = list(pa.ipc.open_stream(sys.stdin.buffer.read()))
total = sum(len(y) for _, y in mini_batches(batches, 4, 3))
row_batch({"partition": 0, "examples": total, "device": "cpu"}, STATS_SCHEMA)
print(total, "pandas" in sys.modules)
"""


def test_a_replicas_reading_and_reporting_import_no_pandas():
    """What a numpy replica's worker does with Arrow (its mini-batches and its statistics
    row) in a fresh interpreter: pyarrow's own conversions would import pandas there."""
    features = pa.array([[float(i)] * 4 for i in range(10)], pa.list_(pa.float32()))
    batch = pa.RecordBatch.from_arrays([features, pa.array(np.arange(10.0))],
                                       ["features", "label"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
        writer.write_batch(batch.slice(2, 5))
    out = subprocess.run([sys.executable, "-c", FRESH_WORKER], input=sink.getvalue().to_pybytes(),
                         capture_output=True, timeout=120, check=True)
    assert out.stdout.decode().split() == ["15", "False"]
