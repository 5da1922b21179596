"""Params, refusals and the column semantics of the fitted models, on real Spark and TF."""

import keras
import numpy as np
import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkdownpour.examples import arrays_to_frame
from sparkdownpour.ml import DownpourEstimator, SandblasterEstimator, SandblasterModel


def dense(inputs, outputs, activation):
    return lambda: keras.Sequential([keras.Input((inputs,)),
                                     keras.layers.Dense(outputs, activation=activation)])


def features_and_labels(rows):
    return (np.array([row.features for row in rows], dtype=np.float32),
            np.array([row.label for row in rows]))


@pytest.fixture(scope="module")
def binary(spark):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -2.0, 0.5]) > 0).astype(np.float32)
    return arrays_to_frame(spark, x, y, 2), x, y


def test_params_have_spark_names_defaults_and_getters():
    estimator = DownpourEstimator(model=dense(3, 2, "softmax"), epochs=4, nFetch=2,
                                  learningRate=0.1)
    assert (estimator.getEpochs(), estimator.getNFetch(), estimator.getNPush()) == (4, 2, "auto")
    assert estimator.getLearningRate() == 0.1 and estimator.getBatchSize() == 32
    assert estimator.getFeaturesCol() == "features" and estimator.getOptimizer() == "adagrad"
    blaster = SandblasterEstimator(model=dense(3, 1, "sigmoid"), maxIter=7, l2=0.1)
    assert (blaster.getMaxIter(), blaster.getL2(), blaster.getTol()) == (7, 0.1, 1e-6)
    assert blaster.getLoss() == "binary_crossentropy" and blaster.getHistorySize() == 10
    assert not estimator.getShardProcesses()
    for stage in (DownpourEstimator(model=dense(3, 2, "softmax"), shardProcesses=True),
                  SandblasterEstimator(model=dense(3, 1, "sigmoid"), shardProcesses=True)):
        assert stage.getShardProcesses() and stage._config().shard_processes is True


@pytest.mark.parametrize("params,error,match", [
    ({"epoch": 3}, TypeError, r"no Param\(s\) \['epoch'\]"),
    ({"epochs": 0}, ValueError, "epochs must be an integer >= 1, received 0"),
    ({"epochs": "ten"}, TypeError, "ten"),
    ({"learningRate": -0.5}, ValueError, "learning_rate is the Param learningRate"),
    ({"optimizer": "rmsprop"}, ValueError, "rmsprop"),
    ({"options": {"clip_norm": -1.0}}, ValueError, "clip_norm must be a finite number > 0"),
    ({"options": {"epochs": 3}}, ValueError, r"options sets \['epochs'\].*set the Params"),
    ({"options": {"shuffle": True}}, ValueError, r"unknown key\(s\) \['shuffle'\]"),
    ({"loss": 3}, TypeError, "loss must be a Keras loss name"),
    ({"shardProcesses": "yes"}, TypeError, "shardProcesses"),
    ({"options": {"shard_processes": True}}, ValueError, r"\['shard_processes'\].*set the Par"),
])
def test_bad_param_values_are_refused_when_set(params, error, match):
    with pytest.raises(error, match=match):
        DownpourEstimator(model=dense(3, 2, "softmax"), **params)


def test_bad_sandblaster_values_are_refused_when_set():
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0, received -1.0"):
        SandblasterEstimator(model=dense(3, 1, "sigmoid"), l2=-1.0)
    with pytest.raises(ValueError, match="history_size must be <= 100"):
        SandblasterEstimator(model=dense(3, 1, "sigmoid"), historySize=500)


def test_copy_with_extra_params_leaves_the_original_alone():
    estimator = DownpourEstimator(model=dense(3, 2, "softmax"), epochs=4)
    copied = estimator.copy({estimator.epochs: 9})
    assert (estimator.getEpochs(), copied.getEpochs()) == (4, 9)
    assert copied.model is estimator.model and copied.uid == estimator.uid


def test_sandblaster_binary_model_predicts_and_saves(binary, tmp_path):
    frame, _, _ = binary
    fitted = SandblasterEstimator(model=dense(3, 1, "sigmoid"), l2=1e-3, maxIter=50,
                                  logDir=str(tmp_path / "tb")).fit(frame)
    assert any((tmp_path / "tb").rglob("events.out.tfevents.*"))  # logDir reached the fit
    assert isinstance(fitted, SandblasterModel) and fitted.getTask() == "binary"
    assert fitted.history.info["stop_reason"] in ("gtol", "tol", "precision")
    rows = fitted.transform(frame).collect()  # row order: the frame's, not the arrays'
    x, y = features_and_labels(rows)
    p = fitted.keras_model(x).numpy()[:, 0]
    probability = np.stack([row.probability.toArray() for row in rows])
    np.testing.assert_allclose(probability[:, 1], p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probability.sum(axis=1), 1.0, atol=1e-9)
    prediction = np.array([row.prediction for row in rows])
    np.testing.assert_array_equal(prediction, (p > 0.5).astype(float))
    assert np.mean(prediction == y) >= 0.95
    fitted.write().save(str(tmp_path / "model"))
    loaded = SandblasterModel.load(str(tmp_path / "model"))
    assert loaded.uid == fitted.uid and loaded.getNumFeatures() == 3
    assert "dashboard" in fitted.history.info and "dashboard" not in loaded.history.info
    assert loaded.history.info["stop_reason"] == fitted.history.info["stop_reason"]
    np.testing.assert_array_equal(loaded.keras_model(x).numpy()[:, 0], p)


def test_logits_model_gets_probabilities_and_regression_gets_no_probability(spark, binary):
    frame, _, _ = binary
    logits = DownpourEstimator(model=dense(3, 2, None), epochs=2,
                               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fitted = logits.fit(frame)
    assert fitted.getOutputActivation() == "softmax"
    rows = fitted.transform(frame).collect()
    x, _ = features_and_labels(rows)
    z = fitted.keras_model(x).numpy()
    expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.stack([r.probability.toArray() for r in rows]), expected,
                               rtol=1e-5, atol=1e-7)
    regression = DownpourEstimator(model=dense(3, 1, None), loss="mse", epochs=1).fit(frame)
    out = regression.transform(frame)
    assert "probability" not in out.columns and regression.getTask() == "regression"
    rows = out.collect()
    x, _ = features_and_labels(rows)
    np.testing.assert_allclose([r.prediction for r in rows],
                               regression.keras_model(x).numpy()[:, 0], rtol=1e-5, atol=1e-6)


def test_transform_handles_nulls_vectors_and_refuses_bad_columns(spark, binary):
    frame, _, _ = binary
    fitted = SandblasterEstimator(model=dense(3, 1, "sigmoid"), maxIter=3).fit(frame)
    df = spark.createDataFrame([(Vectors.dense([0.5, -1.0, 2.0]),), (None,),
                                (Vectors.sparse(3, {1: 4.0}),)],
                               T.StructType([T.StructField("v", VectorUDT())]))
    rows = fitted.setFeaturesCol("v").transform(df).collect()
    assert rows[1].prediction is None and rows[1].probability is None
    assert rows[0].prediction in (0.0, 1.0) and rows[2].probability.size == 2
    with pytest.raises(ValueError, match="features column 'nope' not found"):
        fitted.setFeaturesCol("nope").transform(df)
    short = spark.createDataFrame([([1.0, 2.0],)], "v array<double>")
    with pytest.raises(Exception, match="has a row of 2 values; the model was trained on 3"):
        fitted.setFeaturesCol("v").transform(short).collect()
    with pytest.raises(ValueError, match="output column 'v' already exists"):
        fitted.setPredictionCol("v").transform(df)
    only = fitted.setPredictionCol("label_hat").setProbabilityCol("").transform(df)
    assert "label_hat" in only.columns and "probability" not in only.columns
    assert only.filter(F.col("label_hat").isNull()).count() == 1


def test_a_multi_unit_sigmoid_model_is_refused_before_training(binary):
    frame, _, _ = binary
    with pytest.raises(ValueError, match="multi-label"):
        SandblasterEstimator(model=dense(3, 2, "sigmoid")).fit(frame)


def test_param_defaults_are_the_config_defaults_and_every_rule_is_documented():
    from sparkdownpour import DownpourConfig, SandblasterConfig, optimizers

    for stage, config in ((DownpourEstimator(model=dense(3, 2, "softmax")), DownpourConfig()),
                          (SandblasterEstimator(model=dense(3, 1, "sigmoid")),
                           SandblasterConfig())):
        for param, knob in stage._param_to_knob.items():
            assert stage.getOrDefault(param) == getattr(config, knob), param
    doc = DownpourEstimator.optimizer.doc
    assert all(name in doc for name in optimizers.RULES), doc


def test_a_classic_session_ships_the_model_without_a_broadcast(spark, binary, monkeypatch):
    """In the UDF's closure up to ml.payload's limit, from a file beyond it, as under Spark
    Connect: the same predictions either way, and unpersist() makes the next transform ship
    the model again."""
    from sparkdownpour.ml import payload
    from sparkdownpour.ml.models import KerasPredictionModel
    from sparkdownpour.ml.predict import keras_to_bytes

    frame, _, _ = binary
    model = KerasPredictionModel(keras_to_bytes(dense(3, 2, "softmax")()))
    model._set(task="multiclass", numFeatures=3)
    in_closure = [r.prediction for r in model.transform(frame).select("prediction").collect()]
    assert isinstance(model._source, payload.InClosure)
    assert model.unpersist() is model and model._source is None
    monkeypatch.setattr(payload, "CLOSURE_LIMIT_BYTES", 0)
    from_file = [r.prediction for r in model.transform(frame).select("prediction").collect()]
    assert isinstance(model._source, payload.FromFile)
    assert from_file == in_closure and len(in_closure) == 400
