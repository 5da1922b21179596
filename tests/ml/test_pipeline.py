"""The estimators inside real Spark ML pipelines: fit, transform, save, load, cross-validate."""

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

from sparkdownpour.examples import build_digits_mlp
from sparkdownpour.ml import DownpourEstimator, DownpourModel
from tests.ml.conftest import PIXELS


def vectors(frame, column):
    return np.stack([row[column].toArray() for row in frame.select(column).collect()])


def digits_pipeline(**params):
    estimator = DownpourEstimator(model=build_digits_mlp, loss="sparse_categorical_crossentropy",
                                  featuresCol="scaled", labelCol="label", **params)
    return Pipeline(stages=[VectorAssembler(inputCols=PIXELS, outputCol="raw"),
                            StandardScaler(inputCol="raw", outputCol="scaled"), estimator])


def test_pipeline_fits_transforms_saves_and_loads_with_identical_predictions(digit_columns,
                                                                              tmp_path):
    train, test = digit_columns
    fitted = digits_pipeline(epochs=8).fit(train)
    stage = fitted.stages[-1]
    assert isinstance(stage, DownpourModel) and len(stage.history) == 8
    predicted = fitted.transform(test).select("label", "prediction", "probability").cache()
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(predicted)
    assert accuracy >= 0.93, accuracy
    probabilities = vectors(predicted, "probability")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    labels = np.array([row.prediction for row in predicted.select("prediction").collect()])
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=1))

    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    again = loaded.transform(test).select("prediction", "probability")
    np.testing.assert_array_equal(vectors(again, "probability"), probabilities)
    assert loaded.stages[-1].history.epochs == stage.history.epochs
    assert loaded.stages[-1].getFeaturesCol() == "scaled"


def test_transform_equals_the_keras_model_on_the_driver(digit_columns):
    train, test = digit_columns
    fitted = digits_pipeline(epochs=2).fit(train)
    out = fitted.transform(test).select("scaled", "probability").collect()
    x = np.stack([row.scaled.toArray() for row in out]).astype(np.float32)
    expected = fitted.stages[-1].keras_model(x).numpy()
    np.testing.assert_allclose(np.stack([row.probability.toArray() for row in out]), expected,
                               rtol=1e-5, atol=1e-6)


def test_cross_validator_picks_the_better_learning_rate_and_refits(digit_columns):
    train, test = digit_columns
    pipeline = digits_pipeline(epochs=3)
    estimator = pipeline.getStages()[-1]
    grid = ParamGridBuilder().addGrid(estimator.learningRate, [1e-4, 0.05]).build()
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    search = CrossValidator(estimator=pipeline, estimatorParamMaps=grid, evaluator=evaluator,
                            numFolds=2, seed=7).fit(train)
    assert search.avgMetrics[1] > search.avgMetrics[0] + 0.2, search.avgMetrics
    best = search.bestModel.stages[-1]
    assert isinstance(best, DownpourModel)
    assert evaluator.evaluate(search.transform(test)) >= 0.85
    # The grid's copies never changed the estimator the user built.
    assert estimator.getLearningRate() == 0.05 and not estimator.isSet(estimator.learningRate)


def test_a_keras_model_instance_is_never_trained_in_place(digit_columns):
    train, _ = digit_columns
    model = build_digits_mlp()
    before = [w.copy() for w in model.get_weights()]
    estimator = DownpourEstimator(model=model, featuresCol="scaled", epochs=1)
    stages = [VectorAssembler(inputCols=PIXELS, outputCol="raw"),
              StandardScaler(inputCol="raw", outputCol="scaled"), estimator]
    first = Pipeline(stages=stages).fit(train).stages[-1].keras_model.get_weights()
    for kept, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(kept, now)
    assert any(not np.array_equal(a, b) for a, b in zip(before, first))
