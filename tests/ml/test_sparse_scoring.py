"""transform() scores a wide sparse vector column without densifying it in the JVM."""

import keras
import numpy as np

from sparkdownpour.ml.models import SandblasterModel
from sparkdownpour.ml.predict import keras_to_bytes

D = 1 << 18


def test_sparse_vectors_are_scored_as_the_dense_model_would(spark):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])  # logits, as saved
    kernel = np.random.default_rng(0).normal(size=(D, 1)).astype(np.float32)
    model.set_weights([kernel, np.array([0.1], np.float32)])
    rows = [(Vectors.sparse(D, [1, 5000], [1.0, -2.0]),), (None,),
            (Vectors.sparse(D, [D - 1], [0.5]),)]
    schema = T.StructType([T.StructField("features", VectorUDT())])
    frame = spark.createDataFrame(rows, schema).repartition(1)
    fitted = SandblasterModel(keras_to_bytes(model))
    fitted._set(task="binary", outputActivation="sigmoid", numFeatures=D, featuresCol="features")
    out = fitted.transform(frame).collect()
    scored = [r for r in out if r["features"] is not None]
    assert len(scored) == 2
    for row in scored:  # each row against its own vector (repartition may reorder rows)
        v = row["features"]
        p = 1 / (1 + np.exp(-(float(kernel[v.indices, 0] @ v.values) + 0.1)))
        assert row["prediction"] == float(p > 0.5)
        np.testing.assert_allclose(row["probability"][1], p, rtol=1e-5)
    assert [r["prediction"] for r in out if r["features"] is None] == [None]
