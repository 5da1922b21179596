"""Unfitted estimators save and load like any Spark ML stage: alone, in a Pipeline, in a
CrossValidator. The model travels as .keras bytes; nothing is pickled."""

import os

import keras
import numpy as np
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

from sparkdownpour.examples import build_digits_mlp
from sparkdownpour.ml import DownpourEstimator, SandblasterEstimator
from tests.ml.test_pipeline import digits_pipeline


def test_an_unfitted_pipeline_saves_loads_and_trains_like_the_original(digit_columns, tmp_path):
    train, test = digit_columns
    pipeline = digits_pipeline(epochs=4, learningRate=0.05,
                               options={"warmstart_steps": 0, "max_staleness": 8})
    pipeline.write().overwrite().save(str(tmp_path / "unfitted"))
    loaded = Pipeline.load(str(tmp_path / "unfitted"))
    original, again = pipeline.getStages()[-1], loaded.getStages()[-1]
    assert isinstance(again, DownpourEstimator) and again.uid == original.uid
    for name in ("epochs", "learningRate", "featuresCol", "loss", "options"):
        assert again.getOrDefault(name) == original.getOrDefault(name), name
    # The builder was saved as the model it builds (seeded: the same initial weights).
    assert isinstance(again.model, keras.Model)
    for saved, built in zip(again.model.get_weights(), build_digits_mlp().get_weights()):
        np.testing.assert_array_equal(saved, built)
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    assert evaluator.evaluate(loaded.fit(train).transform(test)) >= 0.85


def test_an_unfitted_cross_validator_keeps_its_grid_over_our_params(digit_columns, tmp_path):
    pipeline = digits_pipeline(epochs=1)
    estimator = pipeline.getStages()[-1]
    grid = ParamGridBuilder().addGrid(estimator.learningRate, [1e-3, 0.05]) \
        .addGrid(estimator.epochs, [1, 2]).build()
    search = CrossValidator(estimator=pipeline, estimatorParamMaps=grid, numFolds=2, seed=3,
                            evaluator=MulticlassClassificationEvaluator(metricName="accuracy"))
    search.write().overwrite().save(str(tmp_path / "cv"))
    loaded = CrossValidator.load(str(tmp_path / "cv"))
    got = [{p.name: v for p, v in m.items()} for m in loaded.getEstimatorParamMaps()]
    assert got == [{p.name: v for p, v in m.items()} for m in grid]
    assert isinstance(loaded.getEstimator().getStages()[-1], DownpourEstimator)


def test_a_keras_model_instance_is_saved_with_its_weights_and_sandblaster_too(spark, tmp_path):
    model = build_digits_mlp(seed=5)
    model.set_weights([w + 1.0 for w in model.get_weights()])
    estimator = SandblasterEstimator(model=model, loss="sparse_categorical_crossentropy",
                                     maxIter=7, l2=0.01, featuresCol="f")
    estimator.save(str(tmp_path / "sandblaster"))
    again = SandblasterEstimator.load(str(tmp_path / "sandblaster"))
    assert (again.getMaxIter(), again.getL2(), again.getFeaturesCol()) == (7, 0.01, "f")
    for saved, given in zip(again.model.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(saved, given)
    with pytest.raises(ValueError, match="DownpourModel, not a sparkdownpour estimator"):
        DownpourEstimator.load(str(_model_dir(tmp_path)))


def _model_dir(tmp_path):
    """A saved fitted-model directory is not an estimator: make one without training."""
    from sparkdownpour.ml import DownpourModel
    from sparkdownpour.ml.predict import keras_to_bytes

    path = tmp_path / "model"
    DownpourModel(keras_to_bytes(build_digits_mlp())).save(str(path))
    return path


def test_what_cannot_be_saved_or_loaded_is_refused_by_name(spark, tmp_path):
    python_loss = DownpourEstimator(model=build_digits_mlp,
                                    loss=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match="Param loss .* no JSON form"):
        python_loss.save(str(tmp_path / "loss"))
    estimator = DownpourEstimator(model=build_digits_mlp, epochs=2)
    estimator.save(str(tmp_path / "est"))
    keras_dir = tmp_path / "est" / "keras"
    for name in os.listdir(keras_dir):  # replace the bytes: the SHA-256 no longer matches
        if name.endswith(".parquet"):
            os.remove(keras_dir / name)
    spark.createDataFrame([(bytearray(b"not a model"),)], "keras binary").coalesce(1) \
        .write.mode("append").parquet(str(keras_dir))
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        DownpourEstimator.load(str(tmp_path / "est"))
