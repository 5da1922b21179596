"""Sandblaster on real local Spark and TensorFlow, against scipy's L-BFGS-B on the same numbers."""

import keras
import numpy as np
import pytest
import scipy.optimize

from sparkdownpour import Sandblaster, SandblasterConfig
from sparkdownpour import data as sdp_data
from sparkdownpour.examples import (
    arrays_to_frame,
    build_mlp,
    digits_arrays,
    logistic_objective,
)
from sparkdownpour.keras_model import spec_for
from sparkdownpour.lbfgs.blocks import numpy_blocks
from sparkdownpour.lbfgs.shard_server import ShardGroup
from sparkdownpour.lbfgs.stage import StageSpec, evaluate

L2 = 1e-2


def linear_model(inputs, outputs, activation):
    return lambda: keras.Sequential([keras.Input((inputs,)),
                                     keras.layers.Dense(outputs, activation=activation)])


def softmax_objective(x, y, classes, l2):
    x, onehot = x.astype(np.float64), np.eye(classes)[y.astype(int)]
    d = x.shape[1]

    def objective(params):
        w, b = params[:d * classes].reshape(d, classes), params[d * classes:]
        z = x @ w + b
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -np.mean(np.sum(onehot * log_p, axis=1)) + 0.5 * l2 * np.sum(w * w)
        residual = (np.exp(log_p) - onehot) / len(y)
        return value, np.concatenate([(x.T @ residual + l2 * w).ravel(), residual.sum(axis=0)])
    return objective


def scipy_minimum(objective, size):
    result = scipy.optimize.minimize(objective, np.zeros(size), jac=True, method="L-BFGS-B",
                                     options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
    return result.fun


def fit_binary(frame, **knobs):
    options = dict(loss="binary_crossentropy", l2=L2, tol=1e-12, gtol=1e-5, max_iter=200,
                   verbose=0)
    options.update(knobs)
    portions = options.pop("num_portions", None)
    resume = options.pop("resume", False)
    return Sandblaster(linear_model(12, 1, "sigmoid"), **options).fit(
        frame, "features", "label", num_portions=portions, resume=resume)


def test_logistic_regression_matches_scipy_lbfgsb(binary):
    frame, x, y = binary
    result = fit_binary(frame)
    expected = scipy_minimum(logistic_objective(x, y, L2), 13)
    info = result.history.info
    assert abs(info["objective"] - expected) <= 1e-6 * abs(expected), (info, expected)
    # The model on the driver carries the optimum: its objective, computed in numpy, agrees.
    kernel, bias = result.model.get_weights()
    ours = logistic_objective(x, y, L2)(np.append(kernel.ravel(), bias))[0]
    assert abs(ours - expected) <= 1e-6 * abs(expected)
    assert info["stop_reason"] in ("gtol", "tol"), (info, result.history.epochs[-3:])
    assert info["iterations"] == len(result.history)
    records = result.history.epochs
    assert set(records[0]) >= {"objective", "grad_norm", "step_size", "evaluations",
                               "wall_time_s"}
    # Non-increasing, but for approximate-Wolfe steps, which may rise by float32 rounding.
    slack = SandblasterConfig().f_noise
    assert all(b["objective"] <= a["objective"] * (1 + slack) for a, b in zip(records,
                                                                               records[1:]))


def test_softmax_regression_matches_scipy_lbfgsb(spark):
    x_train, y_train, _, _ = digits_arrays()
    x, y = x_train[:800], y_train[:800]
    frame = arrays_to_frame(spark, x, y, 2)
    result = Sandblaster(linear_model(64, 10, "softmax"), loss="sparse_categorical_crossentropy",
                         l2=L2, tol=1e-12, gtol=1e-8, max_iter=300, verbose=0).fit(
        frame, "features", "label")
    expected = scipy_minimum(softmax_objective(x, y, 10, L2), 650)
    assert abs(result.history.info["objective"] - expected) <= 1e-6 * abs(expected)
    # device="auto" on a machine without GPUs; a one-Dense model is evaluated in numpy
    assert result.history.info["devices"] == ["CPU:0 (numpy)"]


@pytest.mark.parametrize("shards", [1, 3])
def test_spark_stage_gradient_equals_numpy_for_random_parameters(spark, binary, shards):
    frame, x, y = binary
    blocks = numpy_blocks(sdp_data.prepare(frame, "features", "label"), 5).persist()
    spec = spec_for(linear_model(12, 1, "sigmoid"), 12, "binary_crossentropy")
    rng = np.random.default_rng(7)
    try:
        with ShardGroup(13, shards) as group:
            for version in range(3):
                params = rng.normal(scale=0.5, size=13)
                group.space.run([], puts={"p": params})
                stage = StageSpec(run_id=f"gradient-test-{shards}", model=spec,
                                  shard_urls=tuple(group.urls), token=group.token,
                                  request_timeout=30.0, point="p", version=version)
                # Depth 1 adds the 5 results on the driver; depth 2 in 3 groups on executors.
                loss_sum, grad_sum, rows, devices = evaluate(blocks, stage, 5,
                                                             depth=1 + version % 2)
                # The shards carry float32 on the wire: compare at the point executors used.
                value, grad = logistic_objective(x, y, 0.0)(params.astype(np.float32))
                assert rows == len(y) and devices == ("CPU:0",)
                assert loss_sum / rows == pytest.approx(value, rel=1e-6)
                np.testing.assert_allclose(grad_sum / rows, grad, rtol=1e-5,
                                           atol=1e-5 * np.abs(grad).max())
            # One result per portion is checked: a portion the driver expects but no task
            # reported is an error, not a smaller sum.
            with pytest.raises(RuntimeError, match=r"each of the 6 cached portions once; "
                                                   r"portions \[5\] were missing"):
                evaluate(blocks, stage, 6)
    finally:
        blocks.unpersist()


def test_empty_portions_are_cached_and_counted(spark, binary):
    """More portions than rows: the empty ones keep a placeholder row in the cache, so the
    evaluation's one-result-per-portion check sees every portion and adds nothing for them."""
    from sparkdownpour.lbfgs.blocks import cache_and_check

    frame, x, y = binary
    blocks = numpy_blocks(sdp_data.prepare(frame.limit(3), "features", "label"), 6)
    spec = spec_for(linear_model(12, 1, "sigmoid"), 12, "binary_crossentropy")
    try:
        stats = cache_and_check(blocks)
        assert (stats.rows, stats.portions, stats.min_cols, stats.max_cols) == (3, 6, 12, 12)
        with ShardGroup(13, 1) as group:
            group.space.run([], puts={"p": np.zeros(13)})
            stage = StageSpec(run_id="empty-portions-test", model=spec,
                              shard_urls=tuple(group.urls), token=group.token,
                              request_timeout=30.0, point="p")
            loss_sum, grad_sum, rows, _ = evaluate(blocks, stage, 6)
            assert rows == 3 and loss_sum == pytest.approx(3 * np.log(2.0))
            assert grad_sum.shape == (13,)
    finally:
        blocks.unpersist()


def test_a_resident_evaluator_without_rows_reports_an_empty_portion(binary):
    """One row over two resident portions: the empty portion's task still answers every
    evaluation (no rows, no gradient), so the board's count completes."""
    frame, x, y = binary
    result = fit_binary(frame.limit(1), num_portions=2, max_iter=3)
    info = result.history.info
    assert (info["evaluation"], info["partitions"], info["rows"]) == ("resident", 2, 1)
    assert info["evaluations"] >= 2 and np.isfinite(info["objective"])


def test_resident_evaluators_take_a_frame_whose_lineage_merged_partitions(spark, binary):
    """A ``coalesce`` in the user's frame stays in the cached blocks' lineage. Spark refuses a
    barrier stage over such a chain, and its scheduler then stopped the SparkContext; the
    blocks now reach the resident stage through a shuffle (data.regroup)."""
    frame, _, _ = binary
    merged = frame.coalesce(2)  # 3 partitions into 2, the slots: the blocks keep the chain
    resident = fit_binary(merged, max_iter=20).history.info
    stages = fit_binary(merged, max_iter=20, evaluation="stages").history.info
    assert (resident["evaluation"], resident["partitions"]) == ("resident", 2)
    assert resident["objective"] == pytest.approx(stages["objective"], rel=1e-6)
    assert not spark.sparkContext._jsc.sc().isStopped()


def test_far_more_partitions_than_slots_reach_the_portions_through_a_few_map_tasks(spark,
                                                                                     binary):
    """200 partitions (what any shuffle leaves) are merged before the shuffle into the
    portions, so its map stage runs 2 tasks (one per slot), not 200: Spark's optimizer would drop a bare
    coalesce below the repartition (CollapseRepartition)."""
    frame, x, y = binary
    scattered = frame.repartition(200)
    blocks = numpy_blocks(sdp_data.prepare(scattered, "features", "label"), 2)
    plan = blocks._jdf.queryExecution().optimizedPlan().toString()
    assert "Repartition 2, false" in plan and "Repartition 2, true" in plan, plan
    info = fit_binary(scattered, max_iter=20).history.info
    assert (info["rows"], info["partitions"]) == (len(y), 2)
    assert info["objective"] == pytest.approx(fit_binary(frame, max_iter=20).history.info[
        "objective"], rel=1e-6)


def test_result_does_not_depend_on_the_number_of_portions_or_shards(binary):
    frame, _, _ = binary
    # Resident evaluators hold one portion per task slot (2 here); more portions than slots,
    # or evaluation="stages", run a Spark stage per evaluation. (3, 2, True): two shards, each
    # in its own process.
    objectives, modes = [], []
    for portions, shards, own, evaluation in [(None, 1, False, "resident"), (1, 2, False, "resident"),
                                              (3, 2, True, "resident"), (16, 1, False, "stages"),
                                              (2, 1, False, "stages")]:
        info = fit_binary(frame, num_portions=portions, num_shards=shards, shard_processes=own,
                          evaluation=evaluation).history.info
        objectives.append(info["objective"])
        modes.append((info["evaluation"], info["partitions"]))
    assert modes == [("resident", 2), ("resident", 1), ("stages", 3), ("stages", 16),
                     ("stages", 2)]
    assert max(objectives) - min(objectives) <= 1e-6 * abs(min(objectives)), objectives


def test_max_iter_is_reported_as_the_stop_reason(binary):
    frame, _, _ = binary
    result = fit_binary(frame, max_iter=2)
    info = result.history.info
    assert (info["stop_reason"], info["iterations"], len(result.history)) == ("max_iter", 2, 2)
    assert info["evaluations"] >= 3 and "max_iter" in info["message"]


def test_an_mlp_trains_on_digits(spark):
    x_train, y_train, x_test, y_test = digits_arrays()
    frame = arrays_to_frame(spark, x_train, y_train, 4)
    result = Sandblaster(lambda: build_mlp(64, 32, 10, seed=0),
                         loss="sparse_categorical_crossentropy", l2=1e-4, max_iter=60,
                         verbose=0).fit(frame)
    accuracy = np.mean(np.argmax(result.model(x_test).numpy(), axis=1) == y_test)
    assert accuracy >= 0.93, (accuracy, result.history.info)


def test_bad_input_is_refused_naming_the_column(spark, binary):
    frame, _, _ = binary
    trainer = Sandblaster(linear_model(12, 1, "sigmoid"), loss="binary_crossentropy", verbose=0)
    with pytest.raises(ValueError, match="'nope' not found"):
        trainer.fit(frame, "nope", "label")
    as_text = frame.selectExpr("features", "cast(label as string) as label")
    with pytest.raises(TypeError, match="label column 'label' has type string"):
        trainer.fit(as_text, "features", "label")
    twos = frame.selectExpr("features", "label * 2 as label")
    with pytest.raises(ValueError, match=r"label column 'label' holds 2\.0, outside \[0, 1\]"):
        trainer.fit(twos, "features", "label")
    with pytest.raises(ValueError, match="takes 12 input features"):
        Sandblaster(linear_model(12, 1, "sigmoid"), verbose=0).fit(
            frame.selectExpr("slice(features, 1, 5) as features", "label"))
    with pytest.raises(ValueError, match="num_portions must be an integer >= 1"):
        trainer.fit(frame, num_portions=0)


@pytest.mark.parametrize("features_sql,label_sql,message", [
    ("if(id = 7, array(1.0, cast('NaN' as float)), array(1.0, 2.0))", "0.0",
     r"features column 'features' holds a null, NaN or infinite value \(nan\) in 1 of 50 rows"),
    ("if(id = 3, array(1.0), array(1.0, 2.0))", "0.0", "has rows of different lengths"),
    ("if(id = 5, null, array(1.0, 2.0))", "0.0", "is null in 1 of 50 rows"),
    ("array(1.0, 2.0)", "if(id = 9, null, 1.0)", "label column 'label' is null or NaN in 1 of"),
])
def test_dirty_data_is_refused_by_the_caching_pass_with_the_value(spark, features_sql,
                                                                   label_sql, message):
    frame = spark.range(50).selectExpr(f"{features_sql} as features", f"{label_sql} as label")
    with pytest.raises(ValueError, match=message):
        Sandblaster(linear_model(2, 1, "sigmoid"), verbose=0).fit(frame, num_portions=3)
    assert spark.sparkContext._jsc.getPersistentRDDs().isEmpty()  # nothing left cached


def test_layer_regularizers_are_part_of_the_objective(binary):
    """kernel_regularizer=L2(lam) is lam * |w|^2, the same objective as the l2 knob at 2 * lam."""
    frame, x, y = binary

    def regularized():
        return keras.Sequential([keras.Input((12,)), keras.layers.Dense(
            1, activation="sigmoid", kernel_regularizer=keras.regularizers.L2(L2 / 2))])

    result = Sandblaster(regularized, loss="binary_crossentropy", l2=0.0, tol=1e-12, gtol=1e-5,
                         max_iter=200, verbose=0).fit(frame, "features", "label",
                                                      num_portions=4)
    expected = scipy_minimum(logistic_objective(x, y, L2), 13)
    assert abs(result.history.info["objective"] - expected) <= 1e-6 * abs(expected)


def test_a_checkpointed_run_resumes_from_its_point_without_redoing_iterations(binary, tmp_path):
    frame, x, y = binary
    first = fit_binary(frame, max_iter=5, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    assert first.history.info["stop_reason"] == "max_iter"
    # After iterations 2 and 4, and at the end (5); kept: the newest 3.
    steps = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("ckpt-*.npz"))
    assert steps == [2, 4, 5]
    resumed = fit_binary(frame, max_iter=200, checkpoint_dir=str(tmp_path), resume=True)
    info = resumed.history.info
    assert info["resumed_from"]["iterations_done"] == 5
    assert resumed.history.epochs[0]["iteration"] == 6
    # It went on from the first run's point: never above where that one stopped.
    slack = 1 + SandblasterConfig().f_noise
    assert resumed.history.epochs[0]["objective"] <= first.history.final["objective"] * slack
    expected = scipy_minimum(logistic_objective(x, y, L2), 13)
    assert abs(info["objective"] - expected) <= 1e-6 * abs(expected)
    # Another objective (a different l2) finds no usable checkpoint and starts afresh.
    with pytest.warns(RuntimeWarning, match="different configuration"):
        other = fit_binary(frame, l2=0.5, max_iter=3, checkpoint_dir=str(tmp_path),
                           resume=True)
    assert "resumed_from" not in other.history.info
    assert other.history.epochs[0]["iteration"] == 1
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        fit_binary(frame, resume=True)
