"""Arrow <-> numpy on executors without pandas: the same values as pyarrow's own conversions."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from sparkdownpour.data.arrow_numpy import filled, flags, numeric_values, row_batch
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
    with pytest.raises(TypeError, match="timestamp"):
        row_batch({"x": 1}, pa.schema([("x", pa.timestamp("s"))]))


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


def test_row_batch_builds_binary_and_list_fields_as_sandblasters_rows_need():
    schema = pa.schema([("portions", pa.list_(pa.int32())), ("loss", pa.float64()),
                        ("grad", pa.binary()), ("devices", pa.list_(pa.string()))])
    for row in ({"portions": [1, 2], "loss": 1.5, "grad": b"\x00\x01", "devices": ["cpu", "gpu"]},
                {"portions": [], "loss": None, "grad": b"", "devices": None}, {}):
        got = row_batch(row, schema)
        got.validate(full=True)
        assert got.equals(pa.RecordBatch.from_pylist([row], schema)), row


@pytest.mark.parametrize("array, fill, expected", [
    (pa.array([3, None, 5], pa.int32()), -1, [3, -1, 5]),
    (pa.array([3, None, 5], pa.int32()).slice(1), 0, [0, 5]),
    (pa.array([1.5, None], pa.float64()), 0.0, [1.5, 0.0]),
    (pa.array([7, 8], pa.int64()), -1, [7, 8]),
])
def test_filled_replaces_nulls_as_fill_null_does(array, fill, expected):
    got = filled(array, fill)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, array.fill_null(fill).to_numpy())


def test_flags_of_a_sliced_boolean_array():
    np.testing.assert_array_equal(flags(pa.array([True, False, True, True]).slice(1, 2)),
                                  [False, True])
