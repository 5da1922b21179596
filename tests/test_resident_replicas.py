"""Resident replicas (``resident=True``): every epoch in one barrier stage whose tasks keep
their partitions, with the same mini-batches and exactly-once updates as a job per epoch."""

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from sparkdownpour import Downpour, DownpourConfig
from sparkdownpour.callbacks import LambdaCallback
from sparkdownpour.data.columns import PARTITION_ID
from sparkdownpour.data.regroup import barrier_safe, murmur3_int, task_keys
from sparkdownpour.examples import build_digits_mlp
from sparkdownpour.replica.resident import split_by_partition


def test_the_task_keys_hash_like_spark_and_give_every_task_its_partitions(spark):
    keys = spark.range(-40, 400).select(F.col("id").cast("int").alias("k"))
    rows = keys.select("k", F.hash("k").alias("h")).collect()
    assert [murmur3_int(r.k) for r in rows] == [r.h for r in rows]
    for tasks in (2, 3, 7):
        spread = (spark.createDataFrame([(k,) for k in task_keys(tasks)], "k int")
                  .repartition(tasks, F.col("k"))
                  .select(F.spark_partition_id().alias("task"), "k").collect())
        assert sorted(r.task for r in spread) == list(range(tasks))


def test_a_lineage_that_merged_partitions_is_not_barrier_safe(spark):
    frame = spark.range(0, 100, numPartitions=4).cache()
    assert barrier_safe(frame)
    assert not barrier_safe(frame.coalesce(2))  # Spark refuses a barrier stage over it
    assert not barrier_safe(frame.union(frame))
    assert barrier_safe(frame.coalesce(2).repartition(2))  # a shuffle ends the chain
    frame.unpersist()


def test_a_tasks_rows_split_back_into_their_partitions_in_order():
    def batch(ids, values):
        return pa.RecordBatch.from_pydict({PARTITION_ID: pa.array(ids, pa.int32()),
                                           "v": values})

    # Partition 1's rows straddle two Arrow batches; an empty batch is skipped.
    held = split_by_partition(iter([batch([0, 0, 1, 1], [1, 2, 3, 4]), batch([], []),
                                    batch([1, 1, 1, 3], [5, 6, 7, 8])]), max_records=3)
    assert sorted(held) == [0, 1, 3]
    assert [b.num_rows for b in held[1]] == [3, 2]  # counted from the partition's start
    assert [b.column("v").to_pylist() for b in held[1]] == [[3, 4, 5], [6, 7]]
    assert held[0][0].column("v").to_pylist() == [1, 2]
    assert all(b.schema.names == ["v"] for parts in held.values() for b in parts)


def jobs_so_far(spark):
    return max(spark.sparkContext.statusTracker().getJobIdsForGroup(None) or [0])


@pytest.mark.slow
def test_more_partitions_than_slots_train_in_one_stage_each_batch_applied_once(spark, digits):
    frame, (x_test, y_test) = digits  # 4 partitions on local[2]: 2 tasks of 2 partitions
    jobs = []  # Spark jobs started by the end of each epoch
    # num_replicas=4: the frame's 4 partitions kept (by default they merge into one per slot).
    result = Downpour(build_digits_mlp, epochs=8, verbose=0, resident=True,
                      num_replicas=4).fit(
        frame, validation_data=(x_test, y_test), callbacks=[LambdaCallback(
            on_epoch_end=lambda epoch, logs: jobs.append(jobs_so_far(spark)))])
    history = result.history
    assert history.info["epoch_jobs"] == ("one resident Spark stage: 4 partitions in 2 tasks "
                                          "on 2 task slots")
    # No Spark job started after the first epoch's (a job per epoch would start 7 more).
    assert len(jobs) == 8 and jobs[-1] == jobs[0]
    # Every partition's 12 mini-batches once an epoch, as with a job per epoch.
    assert list(history["steps"]) == [48] * 8 and list(history["updates"]) == [48] * 8
    assert history.final["updates_total"] == 8 * 48 and sum(history["skipped_steps"]) == 0
    assert all(sorted(devices) == ["0", "1", "2", "3"] for devices in history["devices"])
    # Partitions 0 and 2 (and 1 and 3) were held by one task, in one Python worker.
    devices = history.final["devices"]
    assert devices["0"]["pid"] == devices["2"]["pid"] and devices["1"]["pid"] == devices["3"]["pid"]
    assert all(0 < share <= 1 for share in history["compute_share"])
    accuracy = float(np.mean(np.argmax(result.model(x_test).numpy(), -1) == y_test))
    # Measured here, 12 runs (resident or not): 0.931-0.956 after 6 epochs (a bar of 0.93
    # failed once), 0.953-0.969 after 8.
    assert accuracy >= 0.94
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []


@pytest.mark.slow
def test_stop_when_ends_the_resident_stage_and_the_model_is_the_one_scored(spark, digits):
    frame, (x_test, y_test) = digits
    two = frame.coalesce(2)  # as many partitions as slots: no shuffle before the stage
    result = Downpour(build_digits_mlp, epochs=20, verbose=0, resident=True).fit(
        two, validation_data=(x_test, y_test), stop_when=lambda record: record["epoch"] >= 2)
    history = result.history
    assert len(history) == 2 and "2 partitions in 2 tasks" in history.info["epoch_jobs"]
    accuracy = float(np.mean(np.argmax(result.model(x_test).numpy(), -1) == y_test))
    assert accuracy == pytest.approx(history["val_accuracy"][-1])
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []


def test_resident_is_for_async_replicas_only():
    with pytest.raises(ValueError, match="resident=True .* mode='sync'"):
        DownpourConfig(resident=True, mode="sync")
    with pytest.raises(TypeError, match="resident must be True or False"):
        DownpourConfig(resident="yes")


@pytest.mark.slow
def test_a_resident_fit_resumes_from_its_checkpoint(spark, digits, tmp_path):
    frame, (x_test, y_test) = digits
    # As many partitions as slots, after a shuffle: the stage starts right on the cached
    # partitions (no shuffle of its own, data.regroup).
    two = frame.repartition(2)
    knobs = {"verbose": 0, "resident": True, "checkpoint_dir": str(tmp_path)}
    Downpour(build_digits_mlp, epochs=2, **knobs).fit(two)
    result = Downpour(build_digits_mlp, epochs=4, **knobs).fit(
        two, validation_data=(x_test, y_test), resume=True)
    history = result.history
    assert history.info["resumed_from"]["epochs_done"] == 2
    assert "2 partitions in 2 tasks" in history.info["epoch_jobs"]
    batches = sum(-(-rows // 32) for rows in two.groupBy(F.spark_partition_id()).count()
                  .toPandas()["count"])
    assert list(history["epoch"]) == [3, 4] and list(history["updates"]) == [batches] * 2
    assert history.final["updates_total"] == 4 * batches
    assert history.final["val_accuracy"] >= 0.93
