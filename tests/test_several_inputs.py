"""Models with several inputs (``sparkdownpour.inputs``): columns mapped to inputs by name or
position, refused mismatches before training, Downpour and Sandblaster training them."""

import keras
import numpy as np
import pandas as pd
import pytest
from pyspark.ml.linalg import Vectors

from sparkdownpour import Downpour, Sandblaster
from sparkdownpour.examples import digits_arrays
from sparkdownpour.inputs import InputSlot, flat_model

pytestmark = pytest.mark.timeout(600)


def two_input_model(seed=0):
    """The digits' top half as a (32,) input, the bottom half as a (4, 8) image strip."""
    top = keras.Input((32,), name="top")
    bottom = keras.Input((4, 8), name="bottom")
    joined = keras.layers.Concatenate()([top, keras.layers.Flatten()(bottom)])
    hidden = keras.layers.Dense(64, activation="relu",
                                kernel_initializer=keras.initializers.GlorotUniform(seed))(joined)
    out = keras.layers.Dense(10, activation="softmax",
                             kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(hidden)
    return keras.Model([top, bottom], out)


@pytest.fixture(scope="module")
def halves(spark):
    """Digits with the top half as an array column, the bottom half as a vector column."""
    x_train, y_train, x_test, y_test = digits_arrays()
    rows = [(x[:32].tolist(), Vectors.dense(x[32:].tolist()), int(label), float(x[0]))
            for x, label in zip(x_train, y_train)]
    frame = spark.createDataFrame(rows, ["top", "bottom", "label", "one"]).repartition(4)
    return frame, (x_test, y_test)


def predict(model, x):
    return np.argmax(model([x[:, :32], x[:, 32:].reshape(-1, 4, 8)], training=False).numpy(),
                     axis=-1)


def test_the_flat_wrapper_feeds_each_input_its_slice_and_shares_the_variables():
    model = two_input_model()
    slots = (InputSlot("top", "top", (32,), "float32"),
             InputSlot("bottom", "bottom", (4, 8), "float32"))
    flat = flat_model(model, slots)
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32)
    np.testing.assert_allclose(flat(x).numpy(),
                               model([x[:, :32], x[:, 32:].reshape(-1, 4, 8)]).numpy(), rtol=1e-6)
    assert [v.path for v in flat.trainable_variables] == \
        [v.path for v in model.trainable_variables]


def test_downpour_maps_columns_to_inputs_by_name_and_trains(halves):
    frame, (x_test, y_test) = halves
    model = two_input_model()
    # Listed in the other order than the model's inputs: mapped by name.
    result = Downpour(model, epochs=5, verbose=0).fit(frame, features_col=["bottom", "top"])
    assert result.model is model  # the user's model, trained in place
    assert np.mean(predict(model, x_test) == y_test) >= 0.9


def test_sandblaster_trains_a_two_input_model(halves):
    frame, (x_test, y_test) = halves
    result = Sandblaster(two_input_model, loss="sparse_categorical_crossentropy", max_iter=8,
                         l2=1e-3, verbose=0).fit(frame, features_col=["top", "bottom"])
    objectives = result.history["objective"]
    assert objectives[-1] < objectives[0]
    assert len(result.model.inputs) == 2
    assert np.mean(predict(result.model, x_test) == y_test) >= 0.7


@pytest.mark.parametrize("columns,error,message", [
    ("top", ValueError, r"2 inputs \['top', 'bottom'\]; pass features_col as a list"),
    (["top"], ValueError, r"2 inputs .* names 1 columns"),
    (["top", "nope"], ValueError, r"features column 'nope' not found"),
    (["bottom", "one"], ValueError, r"column 'one' holds one number per row but model input "
                                    r"'bottom' takes shape \(4, 8\)"),
    # Names that are not all the inputs' map by position: 'label' would feed 'bottom'.
    (["bottom", "label"], ValueError, r"column 'label' holds one number per row but model "
                                      r"input 'bottom'"),
])
def test_mismatches_are_refused_before_training_naming_input_and_column(halves, columns, error,
                                                                       message):
    frame, _ = halves
    with pytest.raises(error, match=message):
        Downpour(two_input_model, epochs=1, verbose=0).fit(frame, features_col=columns)


def test_a_column_of_the_wrong_width_is_refused(spark):
    frame = spark.createDataFrame(pd.DataFrame({
        "top": [np.zeros(31, np.float32)] * 4, "bottom": [np.zeros(32, np.float32)] * 4,
        "label": [0, 1, 2, 3]}))
    with pytest.raises(ValueError, match=r"column 'top' holds 31 values per row but model input "
                                         r"'top' takes shape \(32,\) \(32 values\)"):
        Downpour(two_input_model, epochs=1, verbose=0).fit(frame, features_col=["top", "bottom"])


def test_a_scalar_integer_input_takes_a_number_column_as_ids():
    values = keras.Input((3,), name="values")
    category = keras.Input((), name="category", dtype="int32")
    embedded = keras.layers.Embedding(5, 2)(category)
    model = keras.Model([values, category],
                        keras.layers.Dense(1)(keras.layers.Concatenate()([values, embedded])))
    flat = flat_model(model, (InputSlot("values", "v", (3,), "float32"),
                              InputSlot("category", "c", (), "int32")))
    x = np.array([[1, 2, 3, 4.0], [0, 0, 0, 2.0]], np.float32)
    np.testing.assert_allclose(flat(x).numpy(),
                               model([x[:, :3], x[:, 3].astype("int32")]).numpy(), rtol=1e-6)
