"""Sandblaster in a Spark Connect session: the cached blocks are a DataFrame and every
evaluation a ``mapInArrow`` stage, so it matches scipy's L-BFGS-B as in a classic session;
and ``SandblasterEstimator``'s fit and transform."""

import keras
import numpy as np
import pytest
import scipy.optimize

from sparkdownpour import Sandblaster
from sparkdownpour.examples import arrays_to_frame, logistic_objective
from tests.lbfgs.binary_data import binary_arrays

L2 = 1e-2


def logistic_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])


@pytest.fixture(scope="module")
def binary(connect):
    x, y = binary_arrays(3, 1500, 6, 0.2)
    return arrays_to_frame(connect, x, y, 2), x, y


def test_sandblaster_matches_scipy(binary):
    frame, x, y = binary
    result = Sandblaster(logistic_model, loss="binary_crossentropy", l2=L2, tol=1e-12,
                         gtol=1e-5, max_iter=200, verbose=0).fit(frame, "features", "label",
                                                                 num_portions=3)
    expected = scipy.optimize.minimize(logistic_objective(x, y, L2), np.zeros(7), jac=True,
                                       method="L-BFGS-B",
                                       options={"ftol": 1e-15, "gtol": 1e-10}).fun
    info = result.history.info
    assert abs(info["objective"] - expected) <= 1e-6 * abs(expected), (info, expected)
    assert info["partitions"] == 3 and info["rows"] == len(y)
    assert info["devices"] == ["CPU:0 (numpy)"]  # a one-Dense model: lbfgs.linear
    kernel, bias = result.model.get_weights()
    ours = logistic_objective(x, y, L2)(np.append(kernel.ravel(), bias))[0]
    assert abs(ours - expected) <= 1e-6 * abs(expected)


def test_sandblaster_estimator_fits_and_transforms(binary):
    from pyspark.ml.functions import array_to_vector

    from sparkdownpour.ml import SandblasterEstimator, SandblasterModel

    frame, x, y = binary
    vectors = frame.select(array_to_vector("features").alias("features"), "label")
    fitted = SandblasterEstimator(model=logistic_model, l2=1e-3, maxIter=20).fit(vectors)
    assert isinstance(fitted, SandblasterModel) and fitted.getTask() == "binary"
    rows = fitted.transform(vectors).select("features", "label", "prediction").collect()
    features = np.stack([row.features.toArray() for row in rows]).astype(np.float32)
    p = fitted.keras_model(features).numpy()[:, 0]
    np.testing.assert_array_equal([row.prediction for row in rows], (p > 0.5).astype(float))
    assert np.mean(np.array([row.prediction for row in rows]) ==
                   np.array([row.label for row in rows])) >= 0.9
