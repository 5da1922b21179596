"""fit(log_dir=...) TensorBoard scalars read back with tensorboard's loader; fit(mlflow=True)
against a real local MLflow file store; run ids in the Spark job descriptions."""


import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from sparkdownpour import Downpour, Sandblaster
from sparkdownpour.examples import arrays_to_frame, build_digits_mlp
from sparkdownpour.spark_jobs import describe, job_group


def scalars(log_dir):
    """{tag: [(step, value), ...]} from the event files TensorFlow's tf.summary wrote."""
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def test_downpour_writes_tensorboard_scalars_and_logs_to_mlflow(digits, tmp_path, monkeypatch):
    frame, (x_test, y_test) = digits
    try:
        import mlflow
    except ImportError:
        mlflow = None
    if mlflow is not None:  # a real local store; MLflow 3 wants this opt-in for files
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((tmp_path / "mlruns").as_uri())
    result = Downpour(build_digits_mlp, epochs=2, verbose=0).fit(
        frame, validation_data=(x_test, y_test), log_dir=tmp_path / "tb",
        mlflow=mlflow is not None)
    history = result.history
    found = scalars(tmp_path / "tb")
    for tag in ("loss", "val_accuracy", "updates", "staleness_mean", "wall_time_s"):
        assert [step for step, _ in found[tag]] == [1, 2], tag
        assert [v for _, v in found[tag]] == pytest.approx(history[tag], rel=1e-6), tag
    assert "epoch" not in found and "diverging_replicas" not in found
    assert not any("Tracking" in repr(v) for v in vars(history).values())  # result keeps no writer
    if mlflow is None:
        pytest.skip("mlflow is not installed (pip install 'sparkdownpour[mlflow]'): "
                    "TensorBoard part checked, MLflow part skipped")
    run = mlflow.search_runs(output_format="list")[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm"] == "downpour" and run.data.params["epochs"] == "2"
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2]
    assert [m.value for m in losses] == pytest.approx(history["loss"])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == \
        ["model/model.keras"]


def test_mlflow_asked_for_but_missing_is_a_clear_error_before_any_job(digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` sees when absent
    with pytest.raises(RuntimeError, match=r"pip install 'sparkdownpour\[mlflow\]'"):
        Downpour(build_digits_mlp, epochs=1, verbose=0).fit(digits[0], mlflow=True)
    with pytest.raises(TypeError, match="log_dir must be a path"):
        Downpour(build_digits_mlp, epochs=1, verbose=0).fit(digits[0], log_dir=3)


def test_sandblaster_writes_objective_and_grad_norm_per_iteration(spark, tmp_path):
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x @ rng.normal(size=5) > 0).astype(np.float32)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, activation="sigmoid")])
    result = Sandblaster(model, loss="binary_crossentropy", max_iter=4, l2=1e-2,
                         verbose=0).fit(arrays_to_frame(spark, x, y, 2), num_portions=2,
                                        log_dir=str(tmp_path / "tb"))
    history = result.history
    found = scalars(tmp_path / "tb")
    steps = list(range(1, len(history) + 1))
    assert [s for s, _ in found["objective"]] == steps and len(steps) >= 2
    assert [v for _, v in found["objective"]] == pytest.approx(history["objective"], rel=1e-6)
    assert [v for _, v in found["grad_norm"]] == pytest.approx(history["grad_norm"], rel=1e-6)
    # Its dashboard server ran on the driver for the fit, behind a one-time link.
    assert history.info["dashboard"].startswith(history.info["dashboard_server"] + "/login?code=")


def test_job_descriptions_and_tags_name_the_run(spark):
    sc = spark.sparkContext
    run = "0123456789abcdef"
    text = describe("downpour", run, "epoch 2/5 (4 replicas)")
    assert text == "sparkdownpour downpour run 01234567: epoch 2/5 (4 replicas)"
    with job_group(spark, text, run_id=run) as tag:
        assert tag.startswith("sparkdownpour-01234567-") and tag in sc.getJobTags()
        assert sc.getLocalProperty("spark.job.description") == text
        spark.range(10).count()
    assert tag not in sc.getJobTags()
    assert sc.getLocalProperty("spark.job.description") is None


