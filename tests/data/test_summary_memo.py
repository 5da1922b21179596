"""A validation pass over rows read only from caches is not repeated; any other frame is."""

import numpy as np
from pyspark.sql import functions as F

from sparkdownpour import data
from sparkdownpour.data import summary_memo


def _jobs_run(spark, group, action) -> int:
    sc = spark.sparkContext
    sc.setJobGroup(group, "summary memo test")
    try:
        action()
    finally:
        # No group again (not an empty one): later tests count jobs run outside any group.
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            sc.setLocalProperty(key, None)
    return len(sc.statusTracker().getJobIdsForGroup(group))


def _frame(spark, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    return spark.createDataFrame(
        [(rng.normal(size=3).tolist(), float(rng.integers(0, 3))) for _ in range(rows)],
        "features array<float>, label double")


def test_a_cached_frame_is_validated_once_and_again_after_it_is_cached_anew(spark):
    frame = _frame(spark, 40, 0).cache()
    frame.count()
    first = data.validate(data.prepare(frame, "features", "label"), "features", "label")
    again = []
    jobs = _jobs_run(spark, "memo-hit", lambda: again.append(
        data.validate(data.prepare(frame, "features", "label"), "features", "label")))
    assert jobs == 0 and again[0] == first and first.num_rows == 40
    frame.unpersist()
    frame.cache()  # a new cache: its rows are read again
    assert _jobs_run(spark, "memo-recached", lambda: data.validate(
        data.prepare(frame, "features", "label"), "features", "label")) >= 1
    frame.unpersist()


def test_frames_whose_rows_may_change_are_validated_every_time(spark, tmp_path):
    path = str(tmp_path / "rows.parquet")
    _frame(spark, 30, 1).write.parquet(path)
    scanned = spark.read.parquet(path)
    sampled = _frame(spark, 30, 2).cache()
    sampled.count()
    random_rows = sampled.where(F.rand() > 0.3)  # not deterministic: no key
    for group, frame in (("memo-parquet", scanned), ("memo-random", random_rows)):
        assert summary_memo.cached_rows_key(data.prepare(frame, "features", "label")) is None
        for attempt in range(2):
            assert _jobs_run(spark, f"{group}-{attempt}", lambda frame=frame: data.validate(
                data.prepare(frame, "features", "label"), "features", "label")) >= 1
    # The file is rewritten with other rows: the next fit's pass sees them.
    _frame(spark, 50, 3).write.mode("overwrite").parquet(path)
    assert data.validate(data.prepare(spark.read.parquet(path), "features", "label"),
                         "features", "label").num_rows == 50
    sampled.unpersist()
