"""Sandblaster vs Spark MLlib's LogisticRegression vs scipy's L-BFGS-B, in one process run.

Same generated data (default 200,000 x 100 dense, binary labels), same objective (mean log-loss
+ l2/2 |w|^2, intercept not penalised), local[2], the frame in 4 partitions, Sandblaster with its
default evaluation (resident: one portion per task slot; `--evaluation stages --portions 4` for
the stage-per-evaluation build). MLlib runs with
``standardization=False`` and the same regParam and tol; scipy runs in process on the numpy
objective (float64) and is the reference objective. Sandblaster and MLlib are each run twice:
*cold* is the first fit of the process (Spark's Python workers start for Sandblaster, whose
numpy evaluator for this one-Dense model imports no TensorFlow there; the JVM code is not yet
JIT-compiled for MLlib), *warm* the second (Sandblaster's check of the cached frame is
remembered from the first: a third Sandblaster run on the frame cached anew shows a warm fit
that checks its data). Every final
objective is recomputed in numpy from the fitted coefficients. Prints a table, then one summary
line last.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def generate(rows: int, cols: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    w = rng.normal(size=cols) / np.sqrt(cols)
    logits = x @ w + 0.3
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-3.0 * logits))).astype(np.float32)
    return x, y


def run_scipy(objective, size: int, tol: float) -> dict:
    import scipy.optimize

    started = time.perf_counter()
    result = scipy.optimize.minimize(objective, np.zeros(size), jac=True, method="L-BFGS-B",
                                     options={"maxiter": 1000, "ftol": tol * 1e-3, "gtol": 1e-9})
    return {"seconds": time.perf_counter() - started, "iterations": int(result.nit),
            "evaluations": int(result.nfev), "params": result.x}


def run_mllib(frame, l2: float, tol: float, max_iter: int) -> dict:
    from pyspark.ml.classification import LogisticRegression

    started = time.perf_counter()
    model = LogisticRegression(featuresCol="vector", labelCol="label", maxIter=max_iter,
                               regParam=l2, elasticNetParam=0.0, standardization=False, tol=tol,
                               fitIntercept=True).fit(frame)
    seconds = time.perf_counter() - started
    summary = model.summary
    return {"seconds": seconds, "iterations": int(summary.totalIterations),
            "evaluations": len(summary.objectiveHistory),
            "params": np.append(model.coefficients.toArray(), model.intercept)}


def run_sandblaster(frame, cols: int, l2: float, tol: float, max_iter: int,
                    portions: int | None, evaluation: str) -> dict:
    import keras

    from sparkdownpour import Sandblaster

    def build():
        return keras.Sequential([keras.Input((cols,)),
                                 keras.layers.Dense(1, activation="sigmoid",
                                                    kernel_initializer="zeros")])

    started = time.perf_counter()
    result = Sandblaster(build, loss="binary_crossentropy", l2=l2, tol=tol, gtol=1e-9,
                         max_iter=max_iter, verbose=0, evaluation=evaluation
                         ).fit(frame, "features", "label", num_portions=portions)
    seconds = time.perf_counter() - started
    kernel, bias = result.model.get_weights()
    info = result.history.info
    return {"seconds": seconds, "iterations": info["iterations"],
            "evaluations": info["evaluations"], "params": np.append(kernel.ravel(), bias),
            "stop": info["stop_reason"], "setup": info["setup_s"], "cache": info["cache_s"],
            "evaluating": sum(r["wall_time_s"] for r in result.history.epochs),
            "mode": f"{info['evaluation']}, {info['partitions']} portions",
            "data": ("read in place" if info["read_in_place"] else "cached as blocks")
            + f", check {info['data_check']}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--cols", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluation", choices=("resident", "stages"), default="resident",
                        help="Sandblaster's evaluation mode (its default: resident)")
    parser.add_argument("--portions", type=int, default=None,
                        help="Sandblaster's num_portions (default: its own choice)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import SparkSession

    from sparkdownpour.examples import arrays_to_frame, logistic_objective

    spark = (SparkSession.builder.master("local[2]").appName("sparkdownpour-bench-lbfgs")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "4g")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    x, y = generate(args.rows, args.cols, args.seed)
    objective = logistic_objective(x, y, args.l2)
    frame = arrays_to_frame(spark, x, y, args.partitions)
    frame = frame.withColumn("vector", array_to_vector("features")).cache()
    frame.count()

    runs = {"scipy L-BFGS-B (in process)": run_scipy(objective, args.cols + 1, args.tol)}
    for label in ("cold", "warm"):
        runs[f"MLlib LogisticRegression, {label}"] = run_mllib(frame, args.l2, args.tol,
                                                              args.max_iter)
        runs[f"Sandblaster, {label}"] = run_sandblaster(frame, args.cols, args.l2, args.tol,
                                                        args.max_iter, args.portions,
                                                        args.evaluation)
    # The warm fit above finds the frame's check remembered (data.summary_memo: same cached
    # rows); cached anew, the same frame is checked again, as a first fit of new data would be.
    frame.unpersist()
    frame = frame.cache()
    frame.count()
    runs["Sandblaster, warm, data cached anew"] = run_sandblaster(
        frame, args.cols, args.l2, args.tol, args.max_iter, args.portions, args.evaluation)
    reference = objective(runs["scipy L-BFGS-B (in process)"]["params"])[0]
    print(f"\n{args.rows} x {args.cols}, l2={args.l2}, tol={args.tol}, local[2], "
          f"{args.partitions} partitions; reference objective (scipy) {reference:.10f}\n")
    print("| run | wall s | iterations | evaluations | objective | rel. gap to scipy | s/iter |")
    print("|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        value = objective(run["params"])[0]
        run["gap"] = (value - reference) / abs(reference)
        print(f"| {name} | {run['seconds']:.2f} | {run['iterations']} | {run['evaluations']} | "
              f"{value:.10f} | {run['gap']:.1e} | {run['seconds'] / max(run['iterations'], 1):.3f} |")
    for label in ("cold", "warm", "warm, data cached anew"):
        run = runs[f"Sandblaster, {label}"]
        print(f"Sandblaster {label}: {run['cache']:.2f} s preparing and checking the data "
              f"({run['data']}), {run['setup'] - run['cache']:.2f} s building the model, "
              f"{run['evaluating']:.2f} s in iterations, stop reason {run['stop']}; "
              f"evaluation {run['mode']}")
    mllib = runs["MLlib LogisticRegression, warm"]
    ours = runs["Sandblaster, warm"]
    cold_ours, cold_mllib = runs["Sandblaster, cold"], runs["MLlib LogisticRegression, cold"]
    anew = runs["Sandblaster, warm, data cached anew"]
    print(f"\nsummary: sandblaster/mllib wall time warm {ours['seconds'] / mllib['seconds']:.2f}, "
          f"cold {cold_ours['seconds'] / cold_mllib['seconds']:.2f}, warm with the data cached "
          f"anew {anew['seconds'] / mllib['seconds']:.2f}; objective gap to scipy "
          f"sandblaster {ours['gap']:.1e}, mllib {mllib['gap']:.1e}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
