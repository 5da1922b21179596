"""Sparse vector columns stay sparse: CSR batches, the Arrow conversion, the cached bytes."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from sparkdownpour.data import mini_batches
from sparkdownpour.data.sparse import (
    CSR,
    SPARSE_MIN_FEATURES,
    concat_rows,
    csr_from_arrow,
    vectors_to_sparse,
)


def random_csr(rows, d, density, seed=0):
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((rows, d)) < density, rng.normal(size=(rows, d)), 0)
    dense = dense.astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum((dense != 0).sum(1))])
    cols = np.concatenate([np.flatnonzero(r) for r in dense]) if rows else np.zeros(0)
    return CSR(indptr, cols, dense[dense != 0], d), dense


def test_csr_slices_selections_and_concatenation_match_the_dense_matrix():
    x, dense = random_csr(20, 7, 0.3)
    np.testing.assert_array_equal(x.to_dense(), dense)
    np.testing.assert_array_equal(x[3:11].to_dense(), dense[3:11])
    np.testing.assert_array_equal(x[15:].to_dense(), dense[15:])
    np.testing.assert_array_equal(x[5:5].to_dense(), dense[5:5])
    order = np.random.default_rng(1).permutation(20)
    np.testing.assert_array_equal(x[order].to_dense(), dense[order])
    np.testing.assert_array_equal(concat_rows([x[:4], x[4:9], x[9:]]).to_dense(), dense)
    assert len(x[2:6]) == 4 and x.shape == (20, 7)


def test_csr_to_tf_is_the_same_matrix():
    import tensorflow as tf

    x, dense = random_csr(6, 9, 0.4)
    np.testing.assert_array_equal(tf.sparse.to_dense(x.to_tf()).numpy(), dense)


def sparse_struct(rows, d):
    """The prepared sparse ``features`` struct for a list of {col: value} rows."""
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    indices = pa.array([c for r in rows for c in sorted(r)], pa.int32())
    values = pa.array([r[c] for r in rows for c in sorted(r)], pa.float32())
    return pa.StructArray.from_arrays(
        [pa.array([d] * len(rows), pa.int32()), pa.ListArray.from_arrays(pa.array(offsets), indices),
         pa.ListArray.from_arrays(pa.array(offsets), values)], names=["size", "indices", "values"])


def test_mini_batches_of_sparse_arrow_batches_are_csr_aligned_with_labels():
    d = 1 << 18
    rows = [{i * 1000 % d: float(i), (7 * i) % d: 1.0} for i in range(1, 41)]
    struct = sparse_struct(rows, d)
    batch = pa.RecordBatch.from_arrays([struct, pa.array(np.arange(1, 41), pa.float32())],
                                       ["features", "label"])
    batches = [batch.slice(0, 13), batch.slice(13, 20), batch.slice(33)]  # offsets honoured
    out = list(mini_batches(batches, d, 8, np.random.default_rng(0)))
    assert all(isinstance(x, CSR) and x.num_features == d for x, _ in out)
    assert sorted(np.concatenate([y for _, y in out])) == list(range(1, 41))
    for x, y in out:
        for row, label in zip(range(len(y)), y):
            lo, hi = x.indptr[row], x.indptr[row + 1]
            i = int(label)
            assert dict(zip(x.indices[lo:hi].tolist(), x.values[lo:hi].tolist())) == \
                {i * 1000 % d: float(i), (7 * i) % d: 1.0}


def vector_udt_batch():
    """A batch as mapInArrow hands a VectorUDT column over: sparse, dense and null rows."""
    struct_type = pa.struct([("type", pa.int8()), ("size", pa.int32()),
                             ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float64()))])
    rows = [{"type": 0, "size": 5000, "indices": [3, 4999], "values": [1.5, -2.0]},
            {"type": 1, "size": None, "indices": None, "values": [0.0, 2.0, 0.0, 3.0]},
            None,
            {"type": 0, "size": 5000, "indices": [7, 8], "values": [0.0, float("nan")]}]
    return pa.RecordBatch.from_arrays([pa.array(rows, struct_type),
                                       pa.array([1.0, 0.0, 1.0, 0.0], pa.float64())],
                                      ["features", "label"])


def test_vectors_to_sparse_keeps_non_zeros_nan_and_nulls():
    (out,) = list(vectors_to_sparse([vector_udt_batch()]))
    rows = out.column(0).to_pylist()
    assert rows[0] == {"size": 5000, "indices": [3, 4999], "values": [1.5, -2.0]}
    assert rows[1] == {"size": 4, "indices": [1, 3], "values": [2.0, 3.0]}
    assert rows[2] is None
    assert rows[3]["indices"] == [8] and np.isnan(rows[3]["values"][0])
    assert out.column(1).type == pa.float32()


def test_csr_from_arrow_reads_the_prepared_struct():
    struct = sparse_struct([{1: 1.0}, {}, {0: 2.0, 3: 4.0}], 4)
    x = csr_from_arrow(struct, 4)
    np.testing.assert_array_equal(x.to_dense(), [[0, 1, 0, 0], [0, 0, 0, 0], [2, 0, 0, 4]])


# -- on Spark -----------------------------------------------------------------------------


def sparse_frame(spark, rows, d, nnz, partitions=2, seed=0):
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(seed)
    data = []
    for i in range(rows):
        cols = np.sort(rng.choice(d, nnz, replace=False))
        data.append((Vectors.sparse(d, cols.tolist(), rng.normal(size=nnz).tolist()),
                     float(i % 2)))
    return spark.createDataFrame(data, ["features", "label"]).repartition(partitions)


def test_prepare_keeps_a_sparse_vector_column_sparse_and_validates_it(spark):
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import types as T

    from sparkdownpour import data

    d = 1 << 18
    prepared = data.prepare(sparse_frame(spark, 30, d, 5), "features", "label")
    assert isinstance(prepared.schema["features"].dataType, T.StructType)
    summary = data.validate(prepared, "features", "label")
    assert (summary.num_rows, summary.num_features) == (30, d)
    # Small or dense vectors keep the dense array<float> path.
    small = spark.createDataFrame([(Vectors.sparse(SPARSE_MIN_FEATURES - 1, [1], [1.0]), 1.0)],
                                  ["features", "label"])
    dense = spark.createDataFrame([(Vectors.dense([1.0] * 2000), 1.0)], ["features", "label"])
    for frame in (small, dense):
        assert isinstance(data.prepare(frame, "features", "label").schema["features"].dataType,
                          T.ArrayType)


def test_sparse_validation_names_the_problem(spark):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    from sparkdownpour import data

    schema = T.StructType([T.StructField("features", VectorUDT()),
                           T.StructField("label", T.DoubleType())])

    def check(rows, match):
        frame = spark.createDataFrame(rows, schema)
        with pytest.raises(ValueError, match=match):
            data.validate(data.prepare(frame, "features", "label"), "features", "label")

    ok = Vectors.sparse(4096, [1], [1.0])
    check([(ok, 1.0), (Vectors.sparse(4096, [2], [float("nan")]), 0.0)], "NaN or infinite")
    check([(ok, 1.0), (Vectors.sparse(5000, [2], [1.0]), 0.0)], "different sizes")
    check([(ok, 1.0), (None, 0.0)], "null in 1 of 2 rows")
    check([(ok, float("nan"))], "label column 'label' is null or NaN")


def rdd_storage_bytes(spark, rdd_id=None):
    infos = spark.sparkContext._jsc.sc().getRDDStorageInfo()
    return {info.id(): info.memSize() + info.diskSize() for info in infos}


def test_a_2_to_the_20_dimensional_data_set_caches_about_its_non_zeros(spark):
    """Downpour's cached frame and Sandblaster's cached blocks: bytes follow the non-zeros
    (a dense copy of these 400 rows would be 1.6 GB)."""
    from sparkdownpour import data
    from sparkdownpour.lbfgs.blocks import cache_and_check, numpy_blocks, read_blocks

    rows, d, nnz = 400, 1 << 20, 20
    prepared = data.prepare(sparse_frame(spark, rows, d, nnz), "features", "label")
    need = rows * nnz * 8 + rows * 4  # indices + float32 values, float32 labels
    cached = prepared.cache()
    try:
        assert cached.count() == rows
        before = rdd_storage_bytes(spark)
        assert before, "nothing cached"
        frame_bytes = sum(before.values())
        # Spark's columnar cache adds a constant per row (two array headers with null
        # bitmaps, the struct, the size): about 70 bytes here.
        assert frame_bytes <= need + rows * 96 + 4096, (frame_bytes, need)
    finally:
        cached.unpersist(blocking=True)
    blocks = numpy_blocks(prepared, 4)
    try:
        stats = cache_and_check(blocks)
        assert stats.clean and stats.rows == rows and stats.max_cols == d
        assert stats.portions == 4
        block_bytes = sum(rdd_storage_bytes(spark).values())  # the blocks are all that is cached
        # CSR: int64 indptr per row, then the cached row's overhead per portion.
        assert block_bytes <= need + rows * 8 + 4 * 2048, (block_bytes, need)
        x, y = next(read_blocks(blocks.limit(1).toArrow().to_batches()))
        assert isinstance(x, CSR) and x.num_features == d and x.nnz == len(y) * nnz
    finally:
        blocks.unpersist()


FRESH_WORKER = """
import sys
import pyarrow as pa
from sparkdownpour.data.sparse import csr_from_arrow, csr_from_vectors, vectors_to_sparse
batch, to_score = list(pa.ipc.open_stream(sys.stdin.buffer.read()))
(out,) = list(vectors_to_sparse([batch]))
out.validate(full=True)
prepared = csr_from_arrow(out.column(0).slice(0, 2), 5000)
scored, valid = csr_from_vectors(to_score.column(0), 5000, "features")
print(int(prepared.indptr[-1]), int(scored.indptr[-1]), valid.tolist(), "pandas" in sys.modules)
"""


def test_a_sparse_replicas_conversions_import_no_pandas():
    """Preparing VectorUDT rows (the caching pass), reading them as CSR (every epoch) and
    scoring them run in executors' Python workers: pyarrow's own conversions would import
    pandas there (0.25 s of every cold worker)."""
    batch = vector_udt_batch()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
        writer.write_batch(batch.take([0, 2, 3]))  # the vectors of size 5000, and the null
    out = subprocess.run([sys.executable, "-c", FRESH_WORKER], input=sink.getvalue().to_pybytes(),
                         capture_output=True, timeout=120, check=True)
    # 2 + 2 non-zeros prepared (rows 0 and 1); scored: rows 0 and 3 (its NaN kept, its zero
    # dropped), row 2 null
    assert out.stdout.decode().split() == ["4", "3", "[True,", "False,", "True]", "False"]
