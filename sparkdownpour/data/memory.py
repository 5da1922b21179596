"""Refuse a data set whose cached form would not fit, before the caching pass (issue 19).

A fit caches its data once (Downpour's cached frame, Sandblaster's numpy blocks). When that
does not fit the memory Spark gave its executors, the JVM dies with ``OutOfMemoryError`` and
takes the whole Spark application down with it. ``check_cache_fits`` estimates the cached size
first, with one or two small Spark jobs (a row count with the features per row, or, for sparse
data, a row count that reads no feature values and a sample of up to ``SAMPLE_ROWS`` rows), and
refuses with the estimate, the memory available and what to change. A trainer that validates
its data before caching it (Downpour) takes the estimate from the validation pass instead
(``estimate_from_summary``): no job of its own.

Estimated bytes per cached row (measured on Spark 4's columnar cache and the blocks):

- dense features: ``4 x num_features + 16`` (float32 values, array header, label);
- sparse features (``data.sparse``): ``8 x non-zeros + 72`` (int32 index + float32 value per
  non-zero; the struct, two array headers with null bitmaps, size and label per row).

Memory available for caching, per Spark's unified memory model: ``(heap - 300 MiB) x
spark.memory.fraction`` per executor; the heap is ``spark.driver.memory`` in local mode (the
driver JVM runs the tasks; its real maximum heap where the JVM can be asked) and
``spark.executor.memory`` times the executors otherwise. A running task also holds one Arrow
batch (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows) of its features; the task slots of
one executor together must fit its memory too.

``spark.sparkdownpour.cacheMemoryCheck=false`` (a Spark conf) turns the check off, e.g. where a
cluster manager grants more memory than the configuration says.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

__all__ = ["CacheEstimate", "CacheTooLargeError", "MemoryBudget", "check_cache_fits",
           "check_estimate_fits", "estimate_cache", "estimate_from_summary", "memory_budget",
           "parse_bytes"]

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 200
RESERVED = 300 * 2**20        # Spark's reserved system memory per JVM
CHECK_CONF = "spark.sparkdownpour.cacheMemoryCheck"
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30,
          "gb": 2**30, "t": 2**40, "tb": 2**40}


class CacheTooLargeError(RuntimeError):
    """The data set's cached form would not fit the memory Spark gave its executors."""


def parse_bytes(text: str, default_unit: str = "m") -> int:
    """A JVM memory string (``"1g"``, ``"512m"``, ``"2048"``) in bytes; plain numbers are MiB
    as in ``spark.executor.memory``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read the memory size {text!r} (expected e.g. '1g' or '512m')")
    unit = match.group(2).lower() or default_unit
    return int(float(match.group(1)) * _UNITS[unit])


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


@dataclass(frozen=True)
class CacheEstimate:
    rows: int
    bytes_per_row: float
    batch_bytes: float   # one Arrow batch of features, as a task holds it
    sparse: bool
    detail: str          # how the row size was found, for the message

    @property
    def total(self) -> float:
        return self.rows * self.bytes_per_row


@dataclass(frozen=True)
class MemoryBudget:
    per_executor: float  # bytes usable for caching and execution in one executor
    executors: int
    task_slots: int      # tasks one executor runs at once
    source: str          # which settings, for the message
    local: bool

    @property
    def total(self) -> float:
        return self.per_executor * self.executors


def memory_budget(spark) -> MemoryBudget:
    """What Spark gave the executors, from the session's configuration (and the JVM where it can
    be asked)."""
    conf = spark.conf
    master = conf.get("spark.master", "local[*]") or ""
    fraction = float(conf.get("spark.memory.fraction", "0.6"))
    local = master.startswith("local")
    if local:
        setting = conf.get("spark.driver.memory", "1g")
        heap = parse_bytes(setting)
        try:  # the real heap: spark.driver.memory set after the JVM started does nothing
            heap = int(spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory())
        except Exception:  # Spark Connect: no JVM to ask
            pass
        slots = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
        cores = slots.group(1) if slots else "1"
        task_slots = int(cores) if cores.isdigit() else 2
        executors, source = 1, f"spark.driver.memory={setting} (local mode)"
    else:
        setting = conf.get("spark.executor.memory", "1g")
        heap = parse_bytes(setting)
        executors = int(conf.get("spark.executor.instances", "0") or 0)
        if not executors:
            try:
                executors = max(1, spark.sparkContext._jsc.sc().getExecutorMemoryStatus()
                                .size() - 1)
            except Exception:
                executors = 1
        task_slots = max(1, int(conf.get("spark.executor.cores", "1"))
                         // max(1, int(conf.get("spark.task.cpus", "1"))))
        source = f"spark.executor.memory={setting} x {executors} executor(s)"
    usable = max(heap - RESERVED, heap // 4) * fraction
    return MemoryBudget(usable, executors, task_slots, source, local)


def estimate_cache(df, features_col, prepared, sparse: bool) -> CacheEstimate:
    """Rows (a count that reads no feature values) times bytes per cached row (a sample)."""
    from pyspark.ml.linalg import SparseVector
    from pyspark.sql import functions as F

    from sparkdownpour.data.columns import FEATURES
    from sparkdownpour.replica_count import merged_for_slots

    # A frame of far more partitions than task slots is read by a few tasks (a job of 200
    # tiny tasks took about 1 s here): same rows.
    df, prepared = merged_for_slots(df)[0], merged_for_slots(prepared)[0]
    first = None
    if sparse:
        rows = df.count()
    else:  # one job: the row count and the features per row together
        counted = prepared.agg(F.count(F.lit(1)).alias("n"),
                               F.max(F.size(FEATURES)).alias("d")).first()
        rows, first = int(counted["n"]), counted["d"]
    if sparse:
        sample = [r[0] for r in df.select(features_col).where(F.col(features_col).isNotNull())
                  .limit(SAMPLE_ROWS).collect()]
        nnz = [len(v.indices) if isinstance(v, SparseVector) else v.size for v in sample]
        return _estimate(df.sparkSession, rows, sample[0].size if sample else 0,
                         nonzeros_per_row=sum(nnz) / max(len(nnz), 1),
                         sampled=f" (from {len(sample)} rows)")
    return _estimate(df.sparkSession, rows, max(int(first), 0) if first is not None else 0)


def estimate_from_summary(summary, spark) -> CacheEstimate:
    """The same estimate from a validation pass's ``DataSummary`` (rows, features and, for
    sparse data, non-zeros), for a trainer that validates before it caches: no job of its own."""
    mean = None if summary.nonzeros is None else summary.nonzeros / max(summary.num_rows, 1)
    return _estimate(spark, summary.num_rows, summary.num_features, nonzeros_per_row=mean)


def _estimate(spark, rows: int, features: int, nonzeros_per_row: float | None = None,
              sampled: str = "") -> CacheEstimate:
    """The cached bytes per row (the module's formulas) and one Arrow batch's features."""
    batch_rows = min(rows, int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch",
                                              "10000")))
    if nonzeros_per_row is not None:
        mean = nonzeros_per_row
        return CacheEstimate(rows, 8 * mean + 72, batch_rows * (12 * mean + 32), True,
                             f"{mean:.1f} non-zeros per row on average of {features} "
                             f"features{sampled}")
    # In the JVM a dense vector row is its doubles plus the float array made from them.
    return CacheEstimate(rows, 4 * features + 16, batch_rows * 12 * features, False,
                         f"{features} dense features per row")


def check_enabled(spark) -> bool:
    return str(spark.conf.get(CHECK_CONF, "true")).lower() != "false"


def check_cache_fits(df, features_col, prepared, *, budget: MemoryBudget | None = None) -> None:
    """Raise ``CacheTooLargeError`` (a ``RuntimeError``: the environment is too small) before
    caching a data set that would not fit; log the estimate otherwise."""
    from sparkdownpour.data.sparse import is_sparse_frame

    if not check_enabled(df.sparkSession):
        return
    check_estimate_fits(estimate_cache(df, features_col, prepared, is_sparse_frame(prepared)),
                        features_col, df.sparkSession, budget=budget)


def check_estimate_fits(estimate: CacheEstimate, features_col, spark, *,
                        budget: MemoryBudget | None = None) -> None:
    """``check_cache_fits`` for an estimate at hand (``estimate_from_summary``)."""
    if not check_enabled(spark):
        return
    budget = budget or memory_budget(spark)
    logger.info("cached data estimate: %s (%d rows x %.0f bytes); memory for it: %s (%s)",
                _human(estimate.total), estimate.rows, estimate.bytes_per_row,
                _human(budget.total), budget.source)
    per_task = budget.per_executor / max(budget.task_slots, 1)
    if estimate.total <= budget.total and estimate.batch_bytes <= per_task:
        return
    if estimate.total > budget.total:
        what = (f"the cached data would take about {_human(estimate.total)} ({estimate.rows} "
                f"rows x {_human(estimate.bytes_per_row)}: {estimate.detail}), but the "
                f"executors have about {_human(budget.total)} for it ({budget.source}, "
                f"(heap - 300 MiB) x spark.memory.fraction)")
    else:
        what = (f"one Arrow batch of features would take about {_human(estimate.batch_bytes)} "
                f"per task ({estimate.detail}), but a task has about {_human(per_task)} "
                f"({budget.source}, {budget.task_slots} task(s) at once per executor)")
    memory_conf = "spark.driver.memory (local mode: set it before the session starts)" \
        if budget.local else "spark.executor.memory or the number of executors"
    fixes = [f"raise {memory_conf}"]
    if not estimate.sparse:
        fixes.append("keep wide features sparse (a Spark ML SparseVector column of at least "
                     "1024 features travels sparse) or use fewer features (e.g. HashingTF's "
                     "numFeatures)")
        fixes.append("lower spark.sql.execution.arrow.maxRecordsPerBatch")
    fixes.append("fit on a sample (DataFrame.sample)")
    raise CacheTooLargeError(f"refusing to cache features column {features_col!r}: {what}. To fit it, "
                      + "; ".join(fixes) + f"; or set {CHECK_CONF}=false to try anyway.")

