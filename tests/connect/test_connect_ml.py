"""The estimators in a Spark Connect session: a Pipeline's fit, transform (the model in the
UDF's closure, and from a file beyond the closure limit), save and load; CrossValidator."""

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import VectorAssembler

from sparkdownpour.examples import build_digits_mlp, digits_arrays
from sparkdownpour.ml import DownpourEstimator, DownpourModel

PIXELS = [f"p{i}" for i in range(64)]


@pytest.fixture(scope="module")
def digit_columns(connect):
    x_train, y_train, x_test, y_test = digits_arrays()

    def frame(x, y, partitions):
        rows = [tuple(float(v) for v in features) + (int(label),) for features, label in zip(x, y)]
        return connect.createDataFrame(rows, PIXELS + ["label"]).repartition(partitions)

    return frame(x_train, y_train, 4).cache(), frame(x_test, y_test, 2).cache()


def pipeline(**params):
    estimator = DownpourEstimator(model=build_digits_mlp, featuresCol="pixels", labelCol="label",
                                  **params)
    return Pipeline(stages=[VectorAssembler(inputCols=PIXELS, outputCol="pixels"), estimator])


def probabilities(frame):
    return np.stack([row.probability.toArray() for row in frame.select("probability").collect()])


def test_pipeline_fits_transforms_saves_and_loads(connect, digit_columns, tmp_path, monkeypatch):
    train, test = digit_columns
    fitted = pipeline(epochs=5).fit(train)
    stage = fitted.stages[-1]
    assert isinstance(stage, DownpourModel) and len(stage.history) == 5
    predicted = fitted.transform(test).select("label", "prediction", "probability").cache()
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(predicted)
    assert accuracy >= 0.9, accuracy
    expected = probabilities(predicted)

    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    np.testing.assert_array_equal(probabilities(loaded.transform(test)), expected)
    assert loaded.stages[-1].history.epochs == stage.history.epochs

    # Over the closure limit the executors read the model from a file the driver wrote once.
    from sparkdownpour.ml import payload

    monkeypatch.setattr(payload, "CLOSURE_LIMIT_BYTES", 0)
    from_file = PipelineModel.load(str(tmp_path / "pipeline"))
    np.testing.assert_array_equal(probabilities(from_file.transform(test)), expected)
    assert isinstance(from_file.stages[-1]._source, payload.FromFile)


def test_cross_validator_picks_the_better_learning_rate_and_refits(connect, digit_columns):
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    train, test = digit_columns
    search_space = pipeline(epochs=3)
    estimator = search_space.getStages()[-1]
    grid = ParamGridBuilder().addGrid(estimator.learningRate, [1e-4, 0.05]).build()
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    search = CrossValidator(estimator=search_space, estimatorParamMaps=grid, evaluator=evaluator,
                            numFolds=2, seed=7).fit(train)
    assert search.avgMetrics[1] > search.avgMetrics[0] + 0.2, search.avgMetrics
    assert isinstance(search.bestModel.stages[-1], DownpourModel)
    assert evaluator.evaluate(search.transform(test)) >= 0.85
