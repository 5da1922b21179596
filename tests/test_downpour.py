"""Downpour end to end on real local Spark, real TensorFlow, real HTTP on 127.0.0.1."""

import threading

import numpy as np
import pytest

from sparkdownpour import Downpour
from sparkdownpour.examples import build_digits_bn_mlp, build_digits_mlp


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x).numpy(), axis=-1) == y))


def expected_updates(frame, batch_size, n_push=1):
    sizes = frame.rdd.glom().map(len).collect()
    batches = [-(-size // batch_size) for size in sizes if size]
    return sum(-(-b // n_push) for b in batches)


def test_replicas_for_slots_merges_only_far_more_partitions_than_slots():
    from sparkdownpour.replica_count import replicas_for_slots

    assert replicas_for_slots(4, 2) == 4 and replicas_for_slots(3, 2) == 3
    assert replicas_for_slots(5, 2) == 4 and replicas_for_slots(8, 2) == 4
    assert replicas_for_slots(200, 2) == 4 and replicas_for_slots(200, 64) == 128
    assert replicas_for_slots(128, 64) == 128 and replicas_for_slots(1, 1) == 1


def test_digits_local2_four_partitions_reaches_095(digits):
    frame, (x_test, y_test) = digits
    result = Downpour(build_digits_mlp, epochs=10, verbose=0).fit(
        frame, "features", "label", validation_data=(x_test, y_test))
    assert accuracy(result.model, x_test, y_test) >= 0.95
    history = result.history
    assert len(history) == 10 and history.info["partitions"] == 4
    assert history.info["probe_s"] is None  # local executors: no reachability probe needed
    # One push per mini-batch, none lost: the server applied exactly that many updates, and
    # each epoch's record counts that epoch's alone (the run's so far are the "_total"s).
    assert history["updates"] == [expected_updates(frame, 32)] * 10
    assert history.final["updates_total"] == 10 * expected_updates(frame, 32)
    assert history["loss"][-1] < history["loss"][0]
    assert history.final["staleness_max"] >= history.final["staleness_mean"] >= 0
    assert history.final["staleness_max_total"] == max(history["staleness_max"])
    assert history.final["staleness_mean_total"] == pytest.approx(
        sum(history["staleness_mean"]) / 10)  # equal epochs: the mean of the epochs' means
    assert history.final["val_accuracy"] == pytest.approx(accuracy(result.model, x_test, y_test))
    # What share of the replicas' task time went to computing gradients: a real fraction.
    assert all(0.0 < share <= 1.0 for share in history["compute_share"])
    assert history.info["replicas_chosen"] == "4 replicas for 4 partitions on 2 task slots"


@pytest.mark.parametrize("layout", ["one partition", "rows in one of four"])
def test_rows_in_fewer_partitions_than_slots_are_spread_over_every_slot(spark, digits, layout):
    from pyspark.sql import functions as F

    frame, _ = digits
    crowded = frame.coalesce(1) if layout == "one partition" else \
        frame.repartition(4, F.lit(0))  # a skewed shuffle: three partitions left empty
    persisted = spark.sparkContext._jsc.getPersistentRDDs().size()
    history = Downpour(build_digits_mlp, epochs=1, verbose=0).fit(crowded).history
    # The spread frame's cache is released with the fit, as any fit's is.
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == persisted
    given = 1 if layout == "one partition" else 4
    assert history.info["replicas_chosen"] == (
        f"2 replicas for {given} partitions on 2 task slots (rows in 1: spread by a shuffle)")
    assert history["replicas"] == [2] and history["examples"] == [history.info["rows"]]
    assert history["updates"] == [history["steps"][0]]  # every mini-batch once


def test_replica_plans():
    from sparkdownpour.replica_count import plan_replicas

    assert plan_replicas(200, None, 10_000, 2, 32) == ("merge", 4)
    assert plan_replicas(1, 1, 10_000, 2, 32) == ("spread", 2)
    assert plan_replicas(1, 1, 100, 2, 32) == ("keep", 1)  # too few rows to be worth it
    assert plan_replicas(4, 4, 10_000, 2, 32) == ("keep", 4)
    assert plan_replicas(3, 2, 10_000, 4, 32) == ("spread", 4)


def test_far_more_partitions_than_task_slots_train_as_a_few_replicas(digits):
    frame, (x_test, y_test) = digits
    scattered = frame.repartition(200)  # what a shuffle leaves by default
    result = Downpour(build_digits_mlp, epochs=3, verbose=0).fit(
        scattered, validation_data=(x_test, y_test))
    history = result.history
    # local[2]: two task slots, so two replicas each; no shuffle, every row still trained on.
    assert history.info["partitions"] == 4 and history["replicas"] == [4, 4, 4]
    assert history.info["replicas_chosen"] == "4 replicas for 200 partitions on 2 task slots"
    assert sum(history["examples"]) == 3 * history.info["rows"]
    # 3 epochs of Adagrad: learning, not yet converged (10 epochs reach 0.95 above).
    assert history["loss"][-1] < history["loss"][0] and accuracy(result.model, x_test, y_test) >= 0.7


def test_keras_model_instance_is_trained_in_place_with_n_fetch_n_push(digits):
    frame, (x_test, y_test) = digits
    model = build_digits_mlp(seed=3)
    before = accuracy(model, x_test, y_test)
    # 4 epochs: after 2, asynchronous noise on a loaded machine once left it at 0.64.
    epochs = 4
    result = Downpour(model, epochs=epochs, n_fetch=3, n_push=2, learning_rate=0.1,
                      verbose=0).fit(frame)
    assert result.model is model
    assert accuracy(model, x_test, y_test) > max(before + 0.3, 0.7)
    assert result.history.final["updates_total"] == epochs * expected_updates(frame, 32, n_push=2)


def test_warm_start_runs_one_replica_first(digits):
    frame, _ = digits
    result = Downpour(build_digits_mlp, epochs=1, warmstart_steps=7, verbose=0).fit(frame)
    # The warm start's 7 updates count in the run's total, not in epoch 1's.
    assert result.history.final["updates"] == expected_updates(frame, 32)
    assert result.history.final["updates_total"] == 7 + expected_updates(frame, 32)


def test_stop_when_ends_training_early(digits):
    frame, (x_test, y_test) = digits
    result = Downpour(build_digits_mlp, epochs=20, verbose=0).fit(
        frame, validation_data=(x_test, y_test), stop_when=lambda r: r["epoch"] == 2)
    assert len(result.history) == 2


def test_progress_bar_shows_epochs_and_updates(digits, capsys):
    frame, _ = digits
    result = Downpour(build_digits_mlp, epochs=1, verbose=1).fit(frame)
    captured = capsys.readouterr()
    err = captured.out + captured.err  # tqdm.write prints the dashboard link above the bar
    assert "epoch 1/1" in err and "upd" in err and "stale=" in err
    link = result.history.info["dashboard"]
    assert f"Downpour run {result.history.info['run_id'][:8]}: dashboard {link}" in err


def test_failure_in_a_replica_stops_the_server_and_raises(digits, spark):
    frame, _ = digits

    def broken_builder():  # builds fine on the driver, fails on executors
        if _in_executor():
            raise RuntimeError("replica cannot build its model")
        # Not a plain Dense chain: a Dense chain ships as JSON and its builder never runs there.
        return build_digits_bn_mlp()

    with pytest.raises(Exception, match="replica cannot build its model"):
        Downpour(broken_builder, epochs=1, verbose=0).fit(frame)
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
    # The master model server's thread is gone: fit shut it down on the way out.
    assert not [t for t in threading.enumerate() if t.name.startswith("sparkdownpour-server")]


def _in_executor():
    from pyspark import TaskContext

    return TaskContext.get() is not None
