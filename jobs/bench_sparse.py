"""Sparse features: Sandblaster and Downpour vs Spark MLlib's LogisticRegression, in one run.

Two generated data sets, each split 80/20 into training and held-out rows:

- *hashed text*: documents of Zipf-distributed words from a 20,000-word vocabulary, where 600
  of the 3,000 most frequent words lean positive or negative; ``Tokenizer`` then ``HashingTF`` at
  its default 2^18 features.
- *one-hot*: six categorical columns of 400 levels each (each level has a hidden effect),
  ``OneHotEncoder`` then ``VectorAssembler``: 2,400 sparse features.

On each, the same logistic regression (mean log-loss + l2/2 |w|^2) is fitted by MLlib
(``standardization=False``), Sandblaster (L-BFGS over CSR blocks) and Downpour (Adagrad, sparse
pushes), with Spark's default memory settings. Reported: wall time of ``fit`` (the caching pass
included) and held-out accuracy. Every fit of the process is *cold* for its method only once
(Python workers start and import TensorFlow on Sandblaster's first fit), so the table shows the
second data set warm. Prints a table, then one summary line last.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def text_frame(spark, docs: int, seed: int, partitions: int):
    rng = np.random.default_rng(seed)
    vocab = 20000
    effect = np.zeros(vocab)
    lean = rng.choice(3000, 600, replace=False)  # among the frequent words: they show up
    effect[lean] = rng.normal(size=600) * 1.5
    lengths = rng.integers(20, 60, size=docs)
    rows = []
    for n in lengths:
        words = (rng.zipf(1.1, size=n) - 1) % vocab
        score = effect[words].sum() / np.sqrt(n)
        label = float(rng.random() < 1 / (1 + np.exp(-3 * score)))
        rows.append((" ".join(f"w{w}" for w in words), label))
    return spark.createDataFrame(rows, ["text", "label"]).repartition(partitions)


def onehot_frame(spark, rows: int, seed: int, partitions: int):
    rng = np.random.default_rng(seed)
    columns, levels = 6, 400
    effects = rng.normal(size=(columns, levels))
    codes = rng.integers(0, levels, size=(rows, columns))
    score = effects[np.arange(columns), codes].sum(axis=1) / np.sqrt(columns)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-3 * score))).astype(float)
    data = [tuple(float(c) for c in code) + (float(y),) for code, y in zip(codes, labels)]
    names = [f"c{i}" for i in range(columns)]
    return spark.createDataFrame(data, names + ["label"]).repartition(partitions), names


def featurize_text(frame):
    from pyspark.ml.feature import HashingTF, Tokenizer

    words = Tokenizer(inputCol="text", outputCol="words").transform(frame)
    return HashingTF(inputCol="words", outputCol="features").transform(words) \
        .select("features", "label")


def featurize_onehot(frame, names):
    from pyspark.ml.feature import OneHotEncoder, VectorAssembler

    encoded = OneHotEncoder(inputCols=names, outputCols=[f"{n}_v" for n in names],
                            dropLast=False).fit(frame).transform(frame)
    return VectorAssembler(inputCols=[f"{n}_v" for n in names], outputCol="features") \
        .transform(encoded).select("features", "label")


def held_out(frame):
    """The held-out rows as (CSR, labels) on the driver."""
    from sparkdownpour import data
    from sparkdownpour.data.sparse import csr_from_arrow

    prepared = data.prepare(frame, "features", "label")
    table = prepared.toArrow().combine_chunks()
    column = table.column("features").combine_chunks()
    size = column.field("size")[0].as_py()
    return csr_from_arrow(column, size), table.column("label").to_numpy().astype(np.float32)


def keras_accuracy(model, x, y) -> float:
    p = model(x.to_tf(), training=False).numpy()[:, 0]
    return float(np.mean((p > 0.5) == (y > 0.5)))


def logistic(features: int):
    def build():
        import keras

        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((features,)),
                                 keras.layers.Dense(1, activation="sigmoid")])
    return build


def run_all(name, train, test, features, args) -> list[dict]:
    from pyspark.ml.classification import LogisticRegression

    from sparkdownpour import Downpour, Sandblaster

    x_test, y_test = held_out(test)
    results = []
    started = time.perf_counter()
    mllib = LogisticRegression(maxIter=args.max_iter, regParam=args.l2, elasticNetParam=0.0,
                               standardization=False, tol=1e-6).fit(train)
    seconds = time.perf_counter() - started
    predictions = mllib.transform(test).select("prediction", "label").toPandas()
    results.append({"data": name, "method": "MLlib LogisticRegression", "seconds": seconds,
                    "accuracy": float(np.mean(predictions.prediction == predictions.label))})
    started = time.perf_counter()
    fitted = Sandblaster(logistic(features), loss="binary_crossentropy", l2=args.l2,
                         max_iter=args.max_iter, tol=1e-6, verbose=0,
                         evaluation=args.evaluation).fit(train, num_portions=args.portions)
    results.append({"data": name, "method": "Sandblaster L-BFGS",
                    "seconds": time.perf_counter() - started,
                    "accuracy": keras_accuracy(fitted.model, x_test, y_test),
                    "iterations": fitted.history.info["iterations"]})
    started = time.perf_counter()
    fitted = Downpour(logistic(features), loss="binary_crossentropy", optimizer="adagrad",
                      learning_rate=args.learning_rate, batch_size=64, epochs=args.epochs,
                      verbose=0).fit(train)
    results.append({"data": name, "method": f"Downpour Adagrad ({args.epochs} epochs)",
                    "seconds": time.perf_counter() - started,
                    "accuracy": keras_accuracy(fitted.model, x_test, y_test)})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000, help="hashed-text documents")
    parser.add_argument("--rows", type=int, default=50000, help="one-hot rows")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluation", choices=("resident", "stages"), default="resident",
                        help="Sandblaster's evaluation mode (its default: resident)")
    parser.add_argument("--portions", type=int, default=None,
                        help="Sandblaster's num_portions (default: its own choice)")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("bench_sparse")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", str(args.partitions)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    try:
        text = featurize_text(text_frame(spark, args.docs, args.seed, args.partitions))
        train, test = text.randomSplit([0.8, 0.2], seed=args.seed)
        results += run_all("hashed text 2^18", train.cache(), test.cache(), 1 << 18, args)
        frame, names = onehot_frame(spark, args.rows, args.seed + 1, args.partitions)
        onehot = featurize_onehot(frame, names)
        train, test = onehot.randomSplit([0.8, 0.2], seed=args.seed)
        results += run_all("one-hot 6x400", train.cache(), test.cache(), 2400, args)
    finally:
        spark.stop()
    print(f"{'data':<18} {'method':<28} {'wall s':>8} {'vs MLlib':>9} {'accuracy':>9}")
    for data_name in dict.fromkeys(r["data"] for r in results):
        rows = [r for r in results if r["data"] == data_name]
        base = rows[0]
        for r in rows:
            print(f"{data_name:<18} {r['method']:<28} {r['seconds']:>8.1f} "
                  f"{r['seconds'] / base['seconds']:>8.2f}x {r['accuracy']:>9.4f}")
    text_rows = [r for r in results if r["data"].startswith("hashed")]
    print(f"bench_sparse: hashed text 2^18, {args.docs} docs: Sandblaster "
          f"{text_rows[1]['seconds'] / text_rows[0]['seconds']:.2f}x MLlib's wall time, "
          f"accuracy {text_rows[1]['accuracy']:.4f} vs MLlib {text_rows[0]['accuracy']:.4f}; "
          f"Downpour {text_rows[2]['seconds'] / text_rows[0]['seconds']:.2f}x, "
          f"accuracy {text_rows[2]['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
