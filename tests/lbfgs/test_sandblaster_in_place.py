"""Sandblaster over a frame Spark holds cached already: read in place, checked once per cache.

The resident evaluators parse such a frame's rows themselves instead of reading a second,
numpy-block copy of it from Spark's cache; its check is remembered for the next fit of the same
cache (``data.summary_memo``). Results must not change, nothing may stay cached, and dirty
data must still be refused with the value.
"""

import numpy as np
import pytest

from sparkdownpour import Sandblaster
from sparkdownpour.callbacks import LambdaCallback
from sparkdownpour.examples import arrays_to_frame, logistic_objective
from tests.lbfgs.test_sandblaster import fit_binary, linear_model


def persisted(spark) -> int:
    return spark.sparkContext._jsc.getPersistentRDDs().size()


def test_a_cached_frame_is_read_in_place_and_checked_once_per_cache(spark, binary, tmp_path):
    frame, _, _ = binary
    frame.write.parquet(str(tmp_path / "binary"))
    frame = spark.read.parquet(str(tmp_path / "binary"))  # a scan: its files could change
    reference = fit_binary(frame, max_iter=30).history.info  # so its blocks are cached
    assert (reference["read_in_place"], reference["data_check"]) == (False, "ran")
    cached = frame.cache()
    cached.count()
    before = persisted(spark)
    during = []
    watch = LambdaCallback(on_epoch_end=lambda step, record: during.append(persisted(spark)))
    first = Sandblaster(linear_model(12, 1, "sigmoid"), loss="binary_crossentropy", l2=1e-2,
                        tol=1e-12, gtol=1e-5, max_iter=30, verbose=0
                        ).fit(cached, callbacks=[watch]).history.info
    assert (first["read_in_place"], first["data_check"], first["evaluation"]) == (
        True, "ran", "resident")
    assert during and set(during) == {before}  # no second copy of the rows while it ran
    assert first["objective"] == pytest.approx(reference["objective"], rel=1e-6)
    assert first["rows"] == reference["rows"] and first["partitions"] == 2

    again = fit_binary(cached, max_iter=30).history.info
    assert again["data_check"] == "remembered"
    assert again["objective"] == pytest.approx(first["objective"], rel=1e-6)
    # Cached anew (its rows could differ): checked again.
    cached.unpersist()
    recached = frame.cache()
    assert fit_binary(recached, max_iter=5).history.info["data_check"] == "ran"
    recached.unpersist()
    assert persisted(spark) == before - 1


@pytest.mark.parametrize("features_sql,label_sql,message", [
    ("if(id = 7, array(1.0, cast('NaN' as float)), array(1.0, 2.0))", "0.0",
     r"features column 'features' holds a null, NaN or infinite value \(nan\) in 1 of 50 rows"),
    ("array(1.0, 2.0)", "if(id = 9, null, 1.0)", "label column 'label' is null or NaN in 1 of"),
])
def test_dirty_cached_data_is_refused_with_the_value_and_not_remembered(spark, features_sql,
                                                                        label_sql, message):
    frame = spark.range(50).selectExpr(f"{features_sql} as features",
                                       f"{label_sql} as label").cache()
    try:
        for _ in range(2):  # a refused frame is checked (and refused) again, not remembered
            with pytest.raises(ValueError, match=message):
                Sandblaster(linear_model(2, 1, "sigmoid"), verbose=0).fit(frame)
    finally:
        frame.unpersist()


def test_a_cached_frame_already_in_one_partition_per_slot_is_read_as_it_is(spark):
    """Two partitions for two task slots: the resident stage reads the cached partitions
    themselves, each whole; the objective is that of the numpy data."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(np.float32)
    frame = arrays_to_frame(spark, x, y, 2).cache()
    try:
        result = Sandblaster(linear_model(5, 1, "sigmoid"), loss="binary_crossentropy",
                             l2=1e-2, tol=1e-12, gtol=1e-6, max_iter=50, verbose=0).fit(frame)
        info = result.history.info
        assert (info["read_in_place"], info["partitions"], info["rows"]) == (True, 2, 400)
        kernel, bias = result.model.get_weights()
        value, _ = logistic_objective(x, y, 1e-2)(np.append(kernel.ravel(), bias))
        assert info["objective"] == pytest.approx(value, rel=1e-5)
    finally:
        frame.unpersist()


def test_a_cached_frame_with_an_empty_partition_is_spread_over_the_evaluators(spark, binary):
    """Two partitions for two slots, every row in one of them (a shuffle on a constant key):
    the check counts the partitions holding rows, so the rows are spread over both
    evaluators by one shuffle; every row is still counted once."""
    from pyspark.sql import functions as F

    frame, x, y = binary
    skewed = frame.repartition(2, F.lit(0)).cache()
    try:
        info = fit_binary(skewed, max_iter=30).history.info
        reference = fit_binary(frame, max_iter=30).history.info
        assert (info["read_in_place"], info["partitions"], info["rows"]) == (True, 2, len(y))
        assert info["objective"] == pytest.approx(reference["objective"], rel=1e-6)
    finally:
        skewed.unpersist()
