"""Batch prediction: ``DownpourModel.transform`` vs MLlib's MultilayerPerceptronClassificationModel.

Same generated rows (default 1,000,000 x 64, a Spark ML vector column, cached), same network
shape (64-128-10, sigmoid hidden layer in MLlib's, relu in ours, softmax out), local[2], in one
process run. Both write prediction and probability for every row to Spark's ``noop`` sink, so
nothing is collected. *cold* is each model's first pass (our Python workers start and import
TensorFlow; MLlib's JVM code is not yet JIT-compiled), *warm* the second. Prints a table, then
one summary line last.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def timed_pass(frame) -> float:
    started = time.perf_counter()
    frame.select("prediction", "probability").write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def ours(spark, inputs: int, hidden: int, classes: int):
    import keras

    from sparkdownpour.ml import DownpourModel
    from sparkdownpour.ml.predict import keras_to_bytes

    network = keras.Sequential([keras.Input((inputs,)),
                                keras.layers.Dense(hidden, activation="relu"),
                                keras.layers.Dense(classes, activation="softmax")])
    model = DownpourModel(keras_to_bytes(network))
    model._set(task="multiclass", outputActivation="none", numFeatures=inputs)
    return model


def mllib(frame, inputs: int, hidden: int, classes: int):
    from pyspark.ml.classification import MultilayerPerceptronClassifier

    sample = frame.limit(2000).withColumn("label", (frame.id % classes).cast("double"))
    return MultilayerPerceptronClassifier(layers=[inputs, hidden, classes], maxIter=1,
                                          featuresCol="features", seed=0).fit(sample)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=4)
    args = p.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from sparkdownpour.session import get_or_create_session

    spark = get_or_create_session("sparkdownpour-bench-transform")
    spark.sparkContext.setLogLevel("ERROR")
    inputs, hidden, classes = 64, 128, 10
    frame = (spark.range(args.rows, numPartitions=args.partitions)
             .withColumn("features", array_to_vector(F.array(*[F.rand(seed=i)
                                                               for i in range(inputs)])))
             .cache())
    frame.count()
    candidates = {"sparkdownpour": ours(spark, inputs, hidden, classes),
                  "mllib": mllib(frame, inputs, hidden, classes)}
    seconds = {}
    for name, model in candidates.items():
        out = model.transform(frame)
        seconds[name] = (timed_pass(out), timed_pass(out))
    print(f"{'model':<14} {'cold s':>8} {'warm s':>8} {'warm rows/s':>12}")
    for name, (cold, warm) in seconds.items():
        print(f"{name:<14} {cold:8.2f} {warm:8.2f} {args.rows / warm:12,.0f}")
    ratio_warm = seconds["sparkdownpour"][1] / seconds["mllib"][1]
    ratio_cold = seconds["sparkdownpour"][0] / seconds["mllib"][0]
    print(f"summary: {args.rows} rows x {inputs} features, transform time vs MLlib MLP: "
          f"warm {ratio_warm:.2f}x, cold {ratio_cold:.2f}x (lower is faster)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
