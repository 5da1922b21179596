"""Bad input is refused before any training job, naming the column, the value and the fix."""

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors

from sparkdownpour import Downpour
from sparkdownpour.examples import build_mlp


def small_model():
    return build_mlp(inputs=3, hidden=4, outputs=3)


def fit(df, features="features", label="label", **kwargs):
    return Downpour(small_model, epochs=1, verbose=0, **kwargs).fit(df, features, label)


def frame(spark, rows, schema="features array<double>, label double"):
    return spark.createDataFrame(rows, schema)


GOOD = [([0.0, 1.0, 2.0], 0.0), ([1.0, 1.0, 1.0], 2.0)]


@pytest.mark.parametrize("rows,schema,features,label,error,fragments", [
    ([], "features array<double>, label double", "features", "label", ValueError,
     ["DataFrame is empty"]),
    ([([0.0, float("nan"), 2.0], 0.0)] + GOOD, None, "features", "label", ValueError,
     ["features column 'features'", "NaN or infinite value (nan)", "1 of 3 rows", "Imputer"]),
    ([([0.0, float("inf"), 2.0], 0.0)] + GOOD, None, "features", "label", ValueError,
     ["(inf)"]),
    ([([0.0, 1.0], 0.0)] + GOOD, None, "features", "label", ValueError,
     ["different lengths (2 to 3)"]),
    ([([0.0, 1.0, 2.0], 3.0)] + GOOD, None, "features", "label", ValueError,
     ["label column 'label' holds 3.0, outside [0, 2]", "sparse_categorical_crossentropy",
      "3 output unit(s)"]),
    ([([0.0, 1.0, 2.0], -1.0)] + GOOD, None, "features", "label", ValueError,
     ["holds -1.0, outside [0, 2]"]),
    ([([0.0, 1.0, 2.0], 1.5)] + GOOD, None, "features", "label", ValueError,
     ["holds 1.5, not a class index"]),
    ([([0.0, 1.0, 2.0], None)] + GOOD, None, "features", "label", ValueError,
     ["label column 'label' is null or NaN in 1 of 3 rows"]),
    (GOOD, None, "pixels", "label", ValueError,
     ["features column 'pixels' not found", "['features', 'label']"]),
    (GOOD, None, "features", "target", ValueError, ["label column 'target' not found"]),
    ([("a", 0.0)], "features string, label double", "features", "label", TypeError,
     ["features column 'features' has type string", "VectorAssembler"]),
    ([([0.0, 1.0, 2.0], "cat")], "features array<double>, label string", "features", "label",
     TypeError, ["label column 'label' has type string", "StringIndexer"]),
    (GOOD, None, [], "label", ValueError, ["features_col is an empty list"]),
])
def test_refused_with_message(spark, rows, schema, features, label, error, fragments):
    df = frame(spark, rows, schema or "features array<double>, label double")
    with pytest.raises(error) as info:
        fit(df, features, label)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("trainer", ["downpour", "sandblaster"])
@pytest.mark.parametrize("loss", ["categorical_crossentropy", "mse", "binary_crossentropy"])
def test_a_loss_wanting_a_label_per_output_with_one_label_a_row(spark, trainer, loss):
    """A 3-output model with a loss that compares every output with its own label value: the
    label column gives one number a row. Refused before training, naming the fix (before, a
    TensorFlow shape error came back from a Python worker)."""
    from sparkdownpour import Sandblaster

    df = frame(spark, GOOD)
    cls, knobs = (Downpour, {"epochs": 1}) if trainer == "downpour" else (Sandblaster,
                                                                          {"max_iter": 2})
    with pytest.raises(ValueError) as info:
        cls(small_model, loss=loss, verbose=0, **knobs).fit(df)
    for fragment in ["label column 'label' holds one number a row", f"loss {loss!r}",
                     "model's 3 outputs", "sparse_categorical_crossentropy"]:
        assert fragment in str(info.value)


def test_wrong_number_of_features_for_the_model(spark):
    df = frame(spark, [([0.0, 1.0, 2.0, 3.0], 0.0)], "features array<double>, label double")
    with pytest.raises(ValueError, match=r"model takes 3 input features but features column "
                                         r"'features' holds 4 per row"):
        fit(df)


def test_null_feature_row_is_refused(spark):
    df = frame(spark, [(None, 0.0)] + GOOD)
    with pytest.raises(ValueError, match=r"features column 'features' is null in 1 of 3 rows"):
        fit(df)


def test_null_vector_row_is_refused_by_name_not_by_a_spark_stack_trace(spark):
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    df = frame(spark, [(None, 0.0)] + GOOD)
    df = df.withColumn("features", F.when(F.col("features").isNotNull(),
                                          array_to_vector("features")))
    with pytest.raises(ValueError, match=r"features column 'features' is null in 1 of 3 rows"):
        fit(df)


def test_list_of_numeric_columns_with_a_string_among_them(spark):
    df = spark.createDataFrame([(1.0, "x", 0.0)], "a double, b string, label double")
    with pytest.raises(TypeError, match=r"features column 'b' has type string"):
        fit(df, ["a", "b"])


def test_non_dataframe_is_refused():
    with pytest.raises(TypeError, match=r"expects a pyspark.sql.DataFrame, received ndarray"):
        fit(np.zeros((3, 3)))


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1, received 0"),
    ({"epochs": 2.5}, TypeError, "epochs must be an integer, received 2.5"),
    ({"learning_rate": -1.0}, ValueError, "learning_rate must be a finite number > 0, received -1.0"),
    ({"optimizer": "rmsprop"}, ValueError, "unknown optimizer 'rmsprop'"),
    ({"n_fetch": 0}, ValueError, "n_fetch must be >= 1, received 0"),
    ({"num_shards": 0}, ValueError, "num_shards must be >= 1, received 0"),
    ({"max_staleness": -1}, ValueError, "max_staleness must be >= 0, received -1"),
    ({"compression": "gzip"}, ValueError, "one of fp16, bf16, topk, received 'gzip'"),
    ({"mode": "easgd", "warmstart_steps": 5}, ValueError, "use warmstart_steps=0 with easgd"),
    ({"no_such_knob": 1}, TypeError, "no_such_knob"),
])
def test_bad_knobs_are_refused_at_construction(kwargs, error, fragment):
    with pytest.raises(error) as info:
        Downpour(small_model, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("kind", ["vector", "array", "columns", "single"])
def test_every_feature_layout_trains(spark, kind):
    rows = [([0.1 * i, 1.0, -0.5 * i], i % 3) for i in range(30)]
    if kind == "vector":
        df = spark.createDataFrame([(Vectors.dense(f), float(y)) for f, y in rows],
                                   ["features", "label"])
        features = "features"
    elif kind == "array":
        df = spark.createDataFrame(rows, "features array<float>, label int")
        features = "features"
    elif kind == "columns":
        df = spark.createDataFrame([(f[0], f[1], int(f[2]), y) for f, y in rows],
                                   "a double, b float, c int, label long")
        features = ["a", "b", "c"]
    else:
        df = spark.createDataFrame([(f[0], y) for f, y in rows], "x double, label long")
        result = Downpour(lambda: build_mlp(1, 4, 3), epochs=1, verbose=0).fit(df, "x")
        assert result.history.final["examples"] == 30
        return
    result = fit(df, features)
    assert result.history.final["examples"] == 30
    assert result.history.info["features"] == 3


def test_unknown_loss_is_refused_on_the_driver(spark):
    with pytest.raises(ValueError, match=r"unknown Keras loss 'crossentropy_of_doom'"):
        fit(frame(spark, GOOD), loss="crossentropy_of_doom")
