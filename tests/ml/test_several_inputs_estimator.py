"""A model with several inputs through the Spark ML estimators: ``featuresCols`` maps one column
to each input at fit time, the fitted model keeps that mapping (``featureInputs``) through save
and load, and ``transform`` feeds each column to its input as training did."""

import keras
import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import VectorAssembler

from sparkdownpour.ml import DownpourEstimator, DownpourModel, SandblasterEstimator

NUMBERS = ["a", "b", "c", "d"]


def two_input_model():
    """A (4,) numeric vector input and a scalar category id input (embedded)."""
    values = keras.Input((4,), name="values")
    category = keras.Input((), name="category", dtype="int32")
    embedded = keras.layers.Embedding(3, 2, embeddings_initializer=keras.initializers.RandomNormal(
        seed=1))(category)
    joined = keras.layers.Concatenate()([values, embedded])
    hidden = keras.layers.Dense(8, activation="relu",
                                kernel_initializer=keras.initializers.GlorotUniform(2))(joined)
    out = keras.layers.Dense(3, activation="softmax",
                             kernel_initializer=keras.initializers.GlorotUniform(3))(hidden)
    return keras.Model([values, category], out)


@pytest.fixture(scope="module")
def frame(spark):
    """Four numeric columns (assembled into the vector input) and an integer category column
    named unlike the model's inputs; the label depends on both."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4)).round(3)
    cat = rng.integers(0, 3, size=96)
    label = (cat + (x[:, 0] > 0)) % 3
    rows = [(*map(float, row), int(c), int(y)) for row, c, y in zip(x, cat, label)]
    return spark.createDataFrame(rows, NUMBERS + ["cat", "label"]).repartition(2).cache()


def keras_probabilities(model, rows):
    values = np.array([row.vec.toArray() for row in rows], np.float32)
    category = np.array([row.cat for row in rows], np.int32)
    return model([values, category], training=False).numpy()


def scored(model, frame):
    rows = model.transform(frame).orderBy("a", "b").collect()
    return rows, np.array([row.probability.toArray() for row in rows])


def test_a_two_input_model_trains_and_scores_through_the_estimator_in_a_pipeline(
        frame, tmp_path):
    estimator = DownpourEstimator(model=two_input_model, loss="sparse_categorical_crossentropy",
                                  featuresCols=["vec", "cat"], epochs=2, batchSize=16, seed=0)
    pipeline = Pipeline(stages=[VectorAssembler(inputCols=NUMBERS, outputCol="vec"), estimator])
    fitted = pipeline.fit(frame)
    stage = fitted.stages[-1]
    assert isinstance(stage, DownpourModel) and stage.getFeaturesCols() == ["vec", "cat"]
    # Mapped by position (the columns are not named as the inputs): the mapping is kept.
    assert stage.getFeatureInputs() == [
        {"input": "values", "column": "vec", "shape": [4], "dtype": "float32"},
        {"input": "category", "column": "cat", "shape": [], "dtype": "int32"}]
    assert stage.getNumFeatures() == 5 and len(stage.keras_model.inputs) == 2

    rows, probabilities = scored(fitted, frame)
    np.testing.assert_allclose(probabilities, keras_probabilities(stage.keras_model, rows),
                               rtol=1e-5, atol=1e-6)
    assert [row.prediction for row in rows] == list(probabilities.argmax(axis=1).astype(float))

    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    again = loaded.stages[-1]
    assert again.getFeatureInputs() == stage.getFeatureInputs()
    assert again.getFeaturesCols() == ["vec", "cat"]
    np.testing.assert_allclose(scored(loaded, frame)[1], probabilities, rtol=1e-6)


@pytest.fixture(scope="module")
def fitted(frame):
    """A fitted model whose columns are named as its inputs (mapped by name, in any order)."""
    named = VectorAssembler(inputCols=NUMBERS, outputCol="values").transform(frame) \
        .withColumnRenamed("cat", "category")
    model = SandblasterEstimator(model=two_input_model, loss="sparse_categorical_crossentropy",
                                 featuresCols=["category", "values"], maxIter=3).fit(named)
    return model, named


def test_sandblaster_maps_columns_by_name_and_transform_follows_featuresCols(fitted):
    model, named = fitted
    assert [(e["input"], e["column"]) for e in model.getFeatureInputs()] == \
        [("values", "values"), ("category", "category")]
    rows = model.transform(named).orderBy("a", "b").collect()
    probabilities = np.array([row.probability.toArray() for row in rows])
    expected = model.keras_model(
        [np.array([row["values"].toArray() for row in rows], np.float32),
         np.array([row.category for row in rows], np.int32)], training=False).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    # Other column names on the fitted model map by position, as at fit time.
    renamed = named.withColumnRenamed("values", "vals").withColumnRenamed("category", "ids")
    again = model.copy().setFeaturesCols(["vals", "ids"]).transform(renamed).orderBy("a", "b")
    np.testing.assert_allclose([row.probability.toArray() for row in again.collect()],
                               probabilities, rtol=1e-6)


def test_a_missing_or_unfitting_column_is_refused_before_any_job_naming_input_and_column(
        fitted):
    model, named = fitted
    with pytest.raises(ValueError, match=r"column 'category' for model input 'category' not "
                                         r"found; the DataFrame has columns"):
        model.transform(named.drop("category"))
    with pytest.raises(ValueError, match=r"column 'a' holds one number per row but model input "
                                         r"'values' takes shape \(4,\)"):
        model.copy().setFeaturesCols(["a", "category"]).transform(named)
    with pytest.raises(ValueError, match=r"2 inputs \['values', 'category'\] but features_col "
                                         r"names 1 columns"):
        model.copy().setFeaturesCols(["values"]).transform(named)


def test_a_several_input_model_without_featuresCols_is_refused_by_the_estimator(frame):
    estimator = DownpourEstimator(model=two_input_model, loss="sparse_categorical_crossentropy",
                                  featuresCol="vec")
    with pytest.raises(ValueError, match=r"2 inputs \['values', 'category'\]; set featuresCols"):
        estimator.fit(frame)
