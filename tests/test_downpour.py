"""Downpour end to end on real local Spark, real TensorFlow, real HTTP on 127.0.0.1."""

import threading

import numpy as np
import pytest

from sparkdownpour import Downpour
from sparkdownpour.examples import build_digits_bn_mlp, build_digits_mlp


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x).numpy(), axis=-1) == y))


def expected_updates(frame, batch_size, n_push=1, replicas=2):
    """Pushes an epoch makes: ``frame`` as the fit trains it, merged without a shuffle into
    ``replicas`` partitions (by default one per task slot of the local[2] session)."""
    sizes = frame.coalesce(replicas).rdd.glom().map(len).collect()
    batches = [-(-size // batch_size) for size in sizes if size]
    return sum(-(-b // n_push) for b in batches)


def test_replicas_for_slots_merges_partitions_beyond_the_slots():
    from sparkdownpour.replica_count import replicas_for_slots

    assert replicas_for_slots(2, 2) == 2 and replicas_for_slots(1, 2) == 1
    assert replicas_for_slots(3, 2) == 2 and replicas_for_slots(4, 2) == 2
    assert replicas_for_slots(200, 2) == 2 and replicas_for_slots(200, 64) == 64
    assert replicas_for_slots(63, 64) == 63 and replicas_for_slots(1, 1) == 1


def test_digits_local2_four_partitions_train_as_one_replica_per_slot_to_095(digits):
    frame, (x_test, y_test) = digits
    # 12 epochs: after 10 the held-out accuracy of two asynchronous replicas spread 0.950-0.964
    # over 18 fits (at the threshold twice), after 12 0.958-0.967 over 12.
    epochs = 12
    result = Downpour(build_digits_mlp, epochs=epochs, verbose=0).fit(
        frame, "features", "label", validation_data=(x_test, y_test))
    assert accuracy(result.model, x_test, y_test) >= 0.95
    history = result.history
    assert len(history) == epochs and history.info["partitions"] == 2
    assert history.info["probe_s"] is None  # local executors: no reachability probe needed
    # One push per mini-batch, none lost: the server applied exactly that many updates, and
    # each epoch's record counts that epoch's alone (the run's so far are the "_total"s).
    assert history["updates"] == [expected_updates(frame, 32)] * epochs
    assert history.final["updates_total"] == epochs * expected_updates(frame, 32)
    assert history["loss"][-1] < history["loss"][0]
    assert history.final["staleness_max"] >= history.final["staleness_mean"] >= 0
    assert history.final["staleness_max_total"] == max(history["staleness_max"])
    assert history.final["staleness_mean_total"] == pytest.approx(
        sum(history["staleness_mean"]) / epochs)  # equal epochs: the mean of the epochs' means
    assert history.final["val_accuracy"] == pytest.approx(accuracy(result.model, x_test, y_test))
    # What share of the replicas' task time went to computing gradients: a real fraction.
    assert all(0.0 < share <= 1.0 for share in history["compute_share"])
    # Two task slots: the frame's 4 partitions merged (no shuffle) into 2 replicas, one wave.
    assert history.info["replicas_chosen"] == "2 replicas for 4 partitions on 2 task slots"
    assert history["replicas"] == [2] * epochs
    assert history["examples"] == [history.info["rows"]] * epochs


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

    assert plan_replicas(200, None, 10_000, 2, 32) == ("merge", 2)
    assert plan_replicas(4, 4, 10_000, 2, 32) == ("merge", 2)
    assert plan_replicas(1, 1, 10_000, 2, 32) == ("spread", 2)
    assert plan_replicas(1, 1, 100, 2, 32) == ("keep", 1)  # too few rows to be worth it
    assert plan_replicas(2, 2, 10_000, 2, 32) == ("keep", 2)
    assert plan_replicas(3, 2, 10_000, 4, 32) == ("spread", 4)
    # num_replicas: the frame's own count is kept as it is; any other is a repartition.
    assert plan_replicas(4, 4, 10_000, 2, 32, wanted=4) == ("keep", 4)
    assert plan_replicas(200, None, 10_000, 2, 32, wanted=4) == ("spread", 4)


def test_num_replicas_keeps_a_frame_already_in_that_many_partitions(digits):
    from sparkdownpour.replica_count import requested_replicas

    frame, _ = digits  # 4 partitions
    assert requested_replicas(frame, 4) is frame  # no shuffle: the user's layout, as it is
    three = requested_replicas(frame, 3)
    assert three.rdd.getNumPartitions() == 3
    assert "Repartition 3, true" in three._jdf.queryExecution().optimizedPlan().toString()


def test_far_more_partitions_than_task_slots_train_as_one_replica_per_slot(digits):
    frame, (x_test, y_test) = digits
    scattered = frame.repartition(200)  # what a shuffle leaves by default
    result = Downpour(build_digits_mlp, epochs=3, verbose=0).fit(
        scattered, validation_data=(x_test, y_test))
    history = result.history
    # local[2]: two task slots, so two replicas; no shuffle, every row still trained on.
    assert history.info["partitions"] == 2 and history["replicas"] == [2, 2, 2]
    assert history.info["replicas_chosen"] == "2 replicas for 200 partitions on 2 task slots"
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
