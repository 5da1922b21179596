"""The data set as cached numpy blocks, checked in the same pass that caches it.

``fit`` needs the data parsed once, cached, and validated before the first evaluation. Doing the
validation as its own aggregation (as ``data.validate`` does) reads and parses the source twice;
here the pass that turns Arrow batches into block rows (raw float32 bytes of ``x`` and ``y``)
also counts what would make them unusable (null or ragged feature rows, NaN/Inf, bad labels) and
the label range, as columns beside the bytes. The blocks stay a DataFrame (``mapInArrow``,
``persist``), so a Spark Connect session caches and reads them as a classic one does; one
aggregation over the statistics columns both fills the cache and checks the data. Only when
that count is non-zero does the trainer run ``data.validate`` to name the column and the value.

A frame whose rows already live in Spark's cache is not cached a second time as blocks
(``check_without_caching``): the same statistics come from a pass that sends back only them,
and the resident evaluators parse the cached rows themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkdownpour.data.arrow_numpy import filled, flags, numeric_values, row_batch

BLOCK_DDL = ("x binary, y binary, rows int, cols int, min_cols int, max_cols int, "
             "bad_rows long, bad_labels long, label_min double, label_max double, "
             "non_integer_labels long, portion int")
BLOCK_SCHEMA = pa.schema([
    ("x", pa.binary()), ("y", pa.binary()), ("rows", pa.int32()), ("cols", pa.int32()),
    ("min_cols", pa.int32()), ("max_cols", pa.int32()), ("bad_rows", pa.int64()),
    ("bad_labels", pa.int64()), ("label_min", pa.float64()), ("label_max", pa.float64()),
    ("non_integer_labels", pa.int64()), ("portion", pa.int32()),
])


@dataclass(frozen=True)
class BlockStats:
    """What the caching pass saw, summed over every block; ``portions``: the partitions of
    the cached blocks, each of which has at least one row (``portion_rows``)."""

    rows: int
    min_cols: int
    max_cols: int
    bad_rows: int            # null feature lists, or a null/NaN/Inf value in one
    bad_labels: int          # null or NaN labels
    label_min: float
    label_max: float
    non_integer_labels: int
    portions: int = 0
    nonempty: int = 0        # partitions (of the frame the pass read) holding rows

    @property
    def clean(self) -> bool:
        return (self.rows > 0 and self.bad_rows == 0 and self.bad_labels == 0
                and self.min_cols == self.max_cols > 0)


def _batch_stats(features: pa.ListArray, flat: pa.Array, values: np.ndarray,
                 labels: pa.Array) -> dict:
    lengths = filled(pc.list_value_length(features), -1)
    bad_values = ~np.isfinite(values)
    bad_rows = int(features.null_count)
    if flat.null_count or bad_values.any():
        row_of_value = np.repeat(np.arange(len(lengths)), np.maximum(lengths, 0))
        bad = np.zeros(len(lengths), bool)
        bad[row_of_value[bad_values | flags(flat.is_null())]] = True
        bad_rows += int(bad.sum())
    y = numeric_values(labels).astype(np.float64)  # nulls: NaN
    finite = y[np.isfinite(y)]
    return {"min_cols": int(lengths.min()), "max_cols": int(lengths.max()),
            "bad_rows": bad_rows, "bad_labels": int(len(y) - len(finite)),
            "label_min": float(finite.min()) if len(finite) else np.inf,
            "label_max": float(finite.max()) if len(finite) else -np.inf,
            "non_integer_labels": int(np.count_nonzero(finite != np.floor(finite)))}


def portion_rows(blocks: Iterator[dict], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Each block (a dict of ``schema``'s fields) as a one-row batch whose ``portion`` is the
    task's partition id. A portion without data yields one placeholder instead (``rows`` 0,
    no bytes, null statistics, which SQL's min and max skip), so that the cached blocks name
    every partition, the empty ones included, and evaluations can account for each."""
    from pyspark import TaskContext

    portion = TaskContext.get().partitionId()
    empty = True
    for block in blocks:
        empty = False
        yield row_batch({**block, "portion": portion}, schema)  # no pandas (arrow_numpy)
    if empty:
        yield row_batch({"rows": 0, "cols": 0, "bad_rows": 0, "bad_labels": 0,
                         "non_integer_labels": 0, "portion": portion}, schema)


def to_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: each ``features, label`` batch becomes one row of raw bytes
    and the batch's statistics (``portion_rows``)."""
    return portion_rows(dense_block_fields(batches), BLOCK_SCHEMA)


def dense_block_fields(batches: Iterator[pa.RecordBatch]) -> Iterator[dict]:
    for batch in batches:
        if batch.num_rows == 0:
            continue
        features, labels = batch.column(0), batch.column(1)
        flat = features.flatten()
        values = numeric_values(flat).astype(np.float32, copy=False)
        stats = _batch_stats(features, flat, values, labels)
        y = numeric_values(labels).astype(np.float32, copy=False)  # nulls: NaN
        cols = stats["max_cols"] if stats["min_cols"] == stats["max_cols"] else 0
        yield {"x": values.tobytes() if cols else b"", "y": y.tobytes(),
               "rows": batch.num_rows, "cols": cols, **stats}


def dense_block(row: dict) -> tuple[np.ndarray | None, np.ndarray]:
    """``(x, y)`` of a block row (``BLOCK_SCHEMA``'s fields by name; the binary ones as
    buffers); ``x`` is None for a ragged block."""
    x = np.frombuffer(row["x"], dtype=np.float32).reshape(row["rows"], row["cols"]) \
        if row["cols"] else None
    return x, np.frombuffer(row["y"], dtype=np.float32)


def read_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple]:
    """``(x, y)`` for every block row of a ``mapInArrow`` input of dense or sparse blocks
    (``lbfgs.sparse_blocks``: ``x`` is then a ``CSR``), as views of the Arrow buffers; an
    empty portion's placeholder is skipped."""
    from sparkdownpour.lbfgs.sparse_blocks import sparse_block

    for batch in batches:
        names = batch.schema.names
        decode = sparse_block if "indptr" in names else dense_block
        columns = [batch.column(i) for i in range(batch.num_columns)]
        binary = [pa.types.is_binary(c.type) for c in columns]
        rows = batch.column(names.index("rows"))
        for i in range(batch.num_rows):
            if not rows[i].as_py():
                continue
            yield decode({name: column[i].as_buffer() if is_binary else column[i].as_py()
                          for name, column, is_binary in zip(names, columns, binary)})


def numpy_blocks(prepared, portions: int):
    """The prepared ``features, label`` frame as a DataFrame of blocks in ``portions``
    partitions: one row per Arrow batch, its arrays as raw bytes plus its statistics
    (``BLOCK_DDL``, or ``SPARSE_BLOCK_DDL`` for sparse features). Not yet cached; no shuffle
    when the frame already has ``portions`` partitions (``in_portions``). Every partition
    has at least one row (``portion_rows``), so ``cache_and_check`` counts them exactly."""
    return block_rows(in_portions(prepared, portions)[0])


def block_rows(frame):
    """``frame``'s ``features, label`` batches as block rows, partition by partition."""
    from sparkdownpour.data.sparse import is_sparse_frame
    from sparkdownpour.lbfgs.sparse_blocks import SPARSE_BLOCK_DDL, to_sparse_blocks

    if is_sparse_frame(frame):  # CSR blocks: bytes follow the non-zeros (lbfgs.sparse_blocks)
        return frame.mapInArrow(to_sparse_blocks, SPARSE_BLOCK_DDL)
    return frame.mapInArrow(to_blocks, BLOCK_DDL)


def in_portions(prepared, portions: int, nonempty: int | None = None):
    """``(frame, shuffled)``: ``prepared`` in ``portions`` partitions, and whether that took a
    shuffle (none when it has them already, every one holding rows: its plan tells, and
    ``nonempty``, the partitions a pass found rows in, or one small job)."""
    from sparkdownpour.replica_count import merged_for_slots
    from sparkdownpour.session import num_partitions, planned_partitions

    # The plan's count is free in a classic session; the job (which also leaves out trailing
    # empty partitions) runs only where the plan already has ``portions`` or cannot say.
    planned = planned_partitions(prepared)
    if planned == portions and nonempty is not None:
        if nonempty == portions:
            return prepared, False
    elif (planned is None or planned == portions) and num_partitions(prepared) == portions:
        return prepared, False
    # Far more partitions than task slots feed the shuffle through a few map tasks
    # (200 partitions: 1.6 s instead of about 1 s).
    merged, before = merged_for_slots(prepared)
    if before is not None:
        # Spark's optimizer drops a coalesce right below a repartition (CollapseRepartition)
        # and the shuffle would read all 200 partitions again; a filter it cannot
        # evaluate ahead of time (partition ids are never negative) keeps the merge.
        from pyspark.sql import functions as F

        merged = merged.where(F.spark_partition_id() >= 0)
    return merged.repartition(portions), True


def parsed_rows(batches: Iterator[pa.RecordBatch], sparse: bool) -> Iterator[tuple]:
    """``(x, y)`` for every non-empty ``features, label`` batch, as ``read_blocks`` gives them
    for block rows (the resident evaluators of a frame read in place). The frame passed its
    check already, so dense rows are only reshaped (no statistics again; ``x`` a view of the
    Arrow buffer where its values are float32)."""
    from sparkdownpour.lbfgs.sparse_blocks import sparse_block, sparse_block_fields

    if sparse:  # the CSR arrays are built beside their checks (lbfgs.sparse_blocks)
        for block in sparse_block_fields(batches):
            yield sparse_block(block)
        return
    for batch in batches:
        if batch.num_rows == 0:
            continue
        values = numeric_values(batch.column(0).flatten())
        labels = numeric_values(batch.column(1))
        yield (values.astype(np.float32, copy=False).reshape(batch.num_rows, -1),
               labels.astype(np.float32, copy=False))


def cache_and_check(blocks) -> BlockStats | None:
    """Cache ``blocks`` (a DataFrame from ``numpy_blocks``) and return the merged statistics
    and the number of portions (None: no rows): one aggregation, whose Spark job also fills
    the cache."""
    blocks.persist()
    return merged_stats(blocks)


def check_without_caching(prepared, portions: int) -> BlockStats | None:
    """The statistics ``cache_and_check`` would find, for a frame whose rows stay in Spark's
    cache anyway (``data.summary_memo.cached_rows_key``): the batches are parsed where they
    lie, in the frame's own partitions (merged when far more than the task slots), and only
    the statistics columns leave the Python workers, not the bytes. ``portions`` is reported
    as the number the evaluators will read the frame in."""
    import functools
    from dataclasses import replace

    from sparkdownpour.data.sparse import is_sparse_frame
    from sparkdownpour.replica_count import merged_for_slots

    function = functools.partial(block_statistics, sparse=is_sparse_frame(prepared))
    stats = merged_stats(merged_for_slots(prepared)[0].mapInArrow(function, STATS_DDL))
    return None if stats is None else replace(stats, portions=portions)


STATS_DDL = ("rows int, min_cols int, max_cols int, bad_rows long, bad_labels long, "
             "label_min double, label_max double, non_integer_labels long, portion int")
STATS_COLUMNS = [column.split()[0] for column in STATS_DDL.split(", ")]


def block_statistics(batches: Iterator[pa.RecordBatch], sparse: bool
                     ) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: the statistics columns of the blocks ``to_blocks`` (or
    ``to_sparse_blocks``) would make, without their bytes."""
    from sparkdownpour.lbfgs.sparse_blocks import to_sparse_blocks

    for batch in (to_sparse_blocks if sparse else to_blocks)(batches):
        yield batch.select(STATS_COLUMNS)


def merged_stats(blocks) -> BlockStats | None:
    """One aggregation over the statistics columns of ``blocks`` (None: no rows)."""
    from pyspark.sql import functions as F

    row = blocks.agg(
        F.count(F.lit(1)).alias("blocks"), F.sum("rows").alias("rows"),
        F.min("min_cols").alias("min_cols"), F.max("max_cols").alias("max_cols"),
        F.sum("bad_rows").alias("bad_rows"), F.sum("bad_labels").alias("bad_labels"),
        F.min("label_min").alias("label_min"), F.max("label_max").alias("label_max"),
        F.sum("non_integer_labels").alias("non_integer_labels"),
        F.max("portion").alias("last"), F.count_distinct("portion").alias("portions"),
        F.count_distinct(F.when(F.col("rows") > 0, F.col("portion"))).alias("nonempty")
    ).first()
    if not row["rows"]:
        return None
    if row["portions"] != row["last"] + 1:
        raise RuntimeError(f"the cached blocks name {row['portions']} portions but the last is "
                           f"number {row['last']}; every portion should have a row "
                           "(lbfgs.blocks.portion_rows). Please report this")
    return BlockStats(int(row["rows"]), int(row["min_cols"]), int(row["max_cols"]),
                      int(row["bad_rows"]), int(row["bad_labels"]), float(row["label_min"]),
                      float(row["label_max"]), int(row["non_integer_labels"]),
                      int(row["portions"]), int(row["nonempty"]))
