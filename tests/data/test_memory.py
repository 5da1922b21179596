"""A data set whose cached form would not fit is refused before caching; Spark survives."""

import pytest
from pyspark.sql import functions as F

from sparkdownpour import Sandblaster, data
from sparkdownpour.data.memory import (
    CacheTooLargeError,
    MemoryBudget,
    check_cache_fits,
    memory_budget,
    parse_bytes,
)


def test_parse_bytes_reads_jvm_memory_strings():
    assert parse_bytes("1g") == 2**30
    assert parse_bytes("512m") == 512 * 2**20
    assert parse_bytes("2048") == 2048 * 2**20  # plain numbers are MiB, as Spark reads them
    assert parse_bytes("1.5g") == int(1.5 * 2**30)
    with pytest.raises(ValueError, match="'lots'"):
        parse_bytes("lots")


def test_local_budget_comes_from_the_driver_heap(spark):
    budget = memory_budget(spark)
    assert budget.local and budget.executors == 1 and budget.task_slots == 2
    assert 0 < budget.per_executor < 64 * 2**30
    assert "spark.driver.memory" in budget.source


def wide_dense(spark, rows=5000, width=1 << 18):
    """The issue's shape: 5000 rows of 2^18 dense features (1 MiB each), never materialised."""
    return spark.range(rows).select(F.array_repeat(F.lit(0.5), width).alias("features"),
                                    (F.col("id") % 2).cast("double").alias("label"))


def test_an_oversized_dense_data_set_is_refused_and_spark_survives(spark):
    frame = wide_dense(spark)
    with pytest.raises(CacheTooLargeError) as caught:
        Sandblaster(lambda: None, loss="binary_crossentropy", verbose=0).fit(frame)
    message = str(caught.value)
    assert "'features'" in message and "5000 rows" in message and "GiB" in message
    assert "spark.driver.memory" in message and "DataFrame.sample" in message
    assert spark.range(10).count() == 10  # the application is alive


def test_the_budget_decides_and_the_check_can_be_turned_off(spark):
    frame = wide_dense(spark, rows=50, width=64)
    prepared = data.prepare(frame, "features", "label")
    check_cache_fits(frame, "features", prepared)  # 50 x 272 bytes: fine
    tiny = MemoryBudget(per_executor=1000, executors=1, task_slots=1, source="test", local=False)
    with pytest.raises(CacheTooLargeError, match="spark.executor.memory"):
        check_cache_fits(frame, "features", prepared, budget=tiny)
    spark.conf.set("spark.sparkdownpour.cacheMemoryCheck", "false")
    try:
        check_cache_fits(frame, "features", prepared, budget=tiny)
    finally:
        spark.conf.unset("spark.sparkdownpour.cacheMemoryCheck")


def test_hashed_text_at_2_to_the_18_fits_with_default_memory(spark):
    from pyspark.ml.feature import HashingTF, Tokenizer

    docs = spark.range(5000).select(
        F.concat_ws(" ", F.lit("w"), (F.col("id") % 97).cast("string"),
                    (F.col("id") % 13).cast("string")).alias("text"),
        (F.col("id") % 2).cast("double").alias("label"))
    frame = HashingTF(inputCol="words", outputCol="features").transform(
        Tokenizer(inputCol="text", outputCol="words").transform(docs))
    prepared = data.prepare(frame, "features", "label")
    check_cache_fits(frame, "features", prepared)  # 5000 x ~100 bytes, not 5000 x 1 MiB


def test_downpour_sizes_the_cache_in_its_validation_pass_and_refuses_before_caching(spark):
    from sparkdownpour import Downpour

    frame = wide_dense(spark, rows=2000)  # 2 GiB as float32: over local mode's default heap
    with pytest.raises(CacheTooLargeError) as caught:
        Downpour(lambda: None, loss="binary_crossentropy", verbose=0).fit(frame)
    assert "2000 rows" in str(caught.value) and "262144 dense features" in str(caught.value)
    assert spark.range(10).count() == 10  # the application is alive


def test_the_validation_pass_estimates_what_the_estimate_job_does(spark):
    from pyspark.ml.feature import HashingTF, Tokenizer

    from sparkdownpour.data.memory import estimate_cache, estimate_from_summary

    dense = wide_dense(spark, rows=300, width=64)
    docs = spark.range(400).select(
        F.concat_ws(" ", F.lit("w"), (F.col("id") % 97).cast("string")).alias("text"),
        (F.col("id") % 2).cast("double").alias("label"))
    hashed = HashingTF(inputCol="words", outputCol="features").transform(
        Tokenizer(inputCol="text", outputCol="words").transform(docs))
    for frame, sparse in ((dense, False), (hashed, True)):
        prepared = data.prepare(frame, "features", "label")
        summary = data.validate(prepared, "features", "label")
        from_pass = estimate_from_summary(summary, spark)
        from_job = estimate_cache(frame, "features", prepared, sparse)
        assert (from_pass.rows, from_pass.sparse) == (from_job.rows, sparse)
        assert from_pass.bytes_per_row == pytest.approx(from_job.bytes_per_row)
        assert from_pass.batch_bytes == pytest.approx(from_job.batch_bytes)
