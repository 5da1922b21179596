"""Time to accuracy on generated data: async Downpour, its delay-aware rules, sync and EASGD.

Data: ``--rows`` (1M) x 100 standard-normal features, four classes given by a fixed random teacher
network (100 -> 32 tanh -> 4, argmax), 10% of the rows held out. Every run trains the same
100-64-4 MLP (batch ``--batch-size``, 128) and is scored on the held-out rows after each epoch; the
clock stops at the first epoch that reaches ``--target``. Runs (each at 2 and 4 replicas, one
Spark partition per replica, ``local[4]`` so sync's barrier stage gets a slot per replica):

- ``async sgd``: plain asynchronous SGD on the server, a push every mini-batch (``n_push=1``);
- ``async adagrad``: the same with Adagrad (Downpour's default rule) on the server;
- ``auto sgd``, ``auto adagrad``: Downpour's default push period, ``n_push="auto"``;
- ``resident ...``: the same with ``resident=True`` (every epoch in one Spark stage whose tasks
  keep their rows); ``overlap ...``: with ``overlap=True`` (pushes in the background);
  ``... nice 0``: with ``replica_nice=0``, the replicas at the server's CPU priority (the
  default on this local master lowers theirs by 5);
- ``dc_asgd``, ``staleness_aware``: the delay-aware rules, same learning rate as async sgd;
- ``sync``: synchronous SGD (barrier rounds, one averaged update per round);
- ``easgd``: elastic averaging, SGD on the replicas, exchange every 4 mini-batches.

The baseline, in the same process run, from the same initial weights: the same MLP trained by
single-process Keras ``fit`` (SGD lr 0.1, same batch size, every core of the machine, Spark
idle), scored the same way.
A warm-up fit first starts the Python workers, so no run pays for TensorFlow's import.
Run: ``python jobs/bench_staleness.py [--rows N] [--target A] [--max-epochs E]`` (the README's
table: ``--target 0.81 --max-epochs 4``, about 8 minutes here). The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

FEATURES, HIDDEN, CLASSES = 100, 64, 4


def generate(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    teacher = np.random.default_rng(1234)
    w1 = teacher.standard_normal((FEATURES, 32)) / np.sqrt(FEATURES)
    w2 = teacher.standard_normal((32, CLASSES))
    y = np.argmax(np.tanh(x @ w1 * 2.0) @ w2, axis=1)
    return x, y.astype(np.int64)


def build():
    from sparkdownpour.examples import build_mlp

    return build_mlp(FEATURES, HIDDEN, CLASSES, seed=0)


RUNS = {  # label -> Downpour knobs ("auto": the default n_push; the others push every batch)
    "async sgd": {"optimizer": "sgd", "learning_rate": 0.1, "n_push": 1},
    "async adagrad": {"optimizer": "adagrad", "learning_rate": 0.05, "n_push": 1},
    "resident sgd": {"optimizer": "sgd", "learning_rate": 0.1, "resident": True, "n_push": 1},
    "resident adagrad": {"optimizer": "adagrad", "learning_rate": 0.05, "resident": True,
                         "n_push": 1},
    "overlap adagrad": {"optimizer": "adagrad", "learning_rate": 0.05, "overlap": True,
                        "n_push": 1},
    "auto sgd": {"optimizer": "sgd", "learning_rate": 0.1},
    "auto adagrad": {"optimizer": "adagrad", "learning_rate": 0.05},
    "resident auto sgd": {"optimizer": "sgd", "learning_rate": 0.1, "resident": True},
    "resident auto adagrad": {"optimizer": "adagrad", "learning_rate": 0.05, "resident": True},
    "auto overlap sgd": {"optimizer": "sgd", "learning_rate": 0.1, "overlap": True},
    "auto overlap adagrad": {"optimizer": "adagrad", "learning_rate": 0.05, "overlap": True},
    "resident auto overlap adagrad": {"optimizer": "adagrad", "learning_rate": 0.05,
                                      "resident": True, "overlap": True},
    # the same with the replicas at the server's priority (replica_nice's default here is 5)
    "resident auto overlap adagrad nice 0": {"optimizer": "adagrad", "learning_rate": 0.05,
                                             "resident": True, "overlap": True,
                                             "replica_nice": 0},
    "dc_asgd": {"optimizer": "dc_asgd", "learning_rate": 0.1, "n_push": 1},
    "staleness_aware": {"optimizer": "staleness_aware", "learning_rate": 0.1, "n_push": 1},
    "sync": {"optimizer": "sgd", "learning_rate": 0.1, "mode": "sync"},
    "easgd": {"optimizer": "sgd", "learning_rate": 0.1, "mode": "easgd", "easgd_tau": 4},
}


def time_to_accuracy(frame, x_test, y_test, target, max_epochs, batch_size, **knobs):
    import keras

    from sparkdownpour import Downpour

    keras.utils.set_random_seed(0)  # the same initial weights as the Keras baseline
    started = time.perf_counter()
    result = Downpour(build, epochs=max_epochs, batch_size=batch_size, verbose=0, **knobs).fit(
        frame, validation_data=(x_test, y_test),
        stop_when=lambda record: record["val_accuracy"] >= target)
    seconds = time.perf_counter() - started
    last = result.history.final
    # compute share over the whole run: the replicas' compute over their tasks' wall time
    compute = sum(r["compute_s"] for r in result.history.epochs)
    share = [r["compute_share"] for r in result.history.epochs if r["compute_share"]]
    task = sum(r["compute_s"] / s for r, s in zip(result.history.epochs, share)) if share else 0
    return (seconds if last["val_accuracy"] >= target else float("nan"), len(result.history),
            {**last, "wall_s": seconds, "share": compute / task if task else float("nan"),
             "comm_s_run": sum(r["comm_s"] for r in result.history.epochs), "compute_s_run": compute})


def keras_time_to_accuracy(x, y, x_test, y_test, target, max_epochs, batch_size):
    """Single-process Keras on the same rows (the baseline): seconds to ``target`` (nan if
    never), epochs, held-out accuracy."""
    import keras

    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started, reached, epochs, accuracy = time.perf_counter(), float("nan"), 0, 0.0
    while epochs < max_epochs and not accuracy >= target:
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        epochs += 1
        accuracy = float(model.evaluate(x_test, y_test, batch_size=4096, verbose=0)[1])
    wall = time.perf_counter() - started
    return (wall if accuracy >= target else reached), epochs, accuracy, wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--target", type=float, default=0.79)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--replicas", default="2,4")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--master", default="local[4]")
    parser.add_argument("--driver-memory", default="6g",
                        help="local mode caches the rows in the driver's JVM (1M rows: ~1 GB)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # executors: this environment

    from pyspark.sql import SparkSession

    from sparkdownpour.examples import arrays_to_frame
    from sparkdownpour.session import get_or_create_session

    # local[4] before anything else: sync's barrier stage needs a task slot per replica
    # (get_or_create_session would start local[*], two slots on this machine).
    SparkSession.builder.master(args.master).config("spark.driver.memory", args.driver_memory) \
        .config("spark.driver.host", "127.0.0.1") \
        .config("spark.driver.bindAddress", "127.0.0.1").getOrCreate()
    spark = get_or_create_session("sparkdownpour-bench-staleness")
    spark.sparkContext.setLogLevel("ERROR")
    x, y = generate(args.rows)
    split = int(0.9 * len(y))
    x_test, y_test = x[split:], y[split:]
    base = arrays_to_frame(spark, x[:split], y[:split]).cache()
    base.count()
    # warm-up: every Python worker started and its model built once
    warm = arrays_to_frame(spark, x[:4000], y[:4000], 4)
    time_to_accuracy(warm, x_test, y_test, 2.0, 1, args.batch_size)
    keras_s, keras_epochs, keras_accuracy, keras_wall = keras_time_to_accuracy(
        x[:split], y[:split], x_test, y_test, args.target, args.max_epochs, args.batch_size)
    print(f"{'keras sgd':<21} 1 process: {keras_s:7.2f} s, {keras_epochs} epochs "
          f"({keras_wall:.2f} s), val acc {keras_accuracy:.4f}", flush=True)
    rows = []
    for replicas in [int(r) for r in args.replicas.split(",")]:
        frame = base.repartition(replicas).cache()
        frame.count()
        for label in args.runs.split(","):
            seconds, epochs, last = time_to_accuracy(frame, x_test, y_test, args.target,
                                                     args.max_epochs, args.batch_size,
                                                     num_replicas=replicas, **RUNS[label])
            rows.append((label, replicas, seconds, epochs, last))
            print(f"{label:<21} {replicas} replicas: {seconds:7.2f} s, {epochs} epochs, "
                  f"val acc {last['val_accuracy']:.4f}, staleness mean "
                  f"{last['staleness_mean']:.2f}, compute share {last['share']:.3f} "
                  f"(compute {last['compute_s_run']:.1f} s, comm {last['comm_s_run']:.1f} s), "
                  f"push period {last.get('push_period') or 1:.1f}",
                  flush=True)
        frame.unpersist()

    print(f"\n{'run':<21}{'replicas':>9}{'to target s':>12}{'epochs':>7}{'wall s':>8}"
          f"{'val acc':>9}{'stale mean':>11}{'share':>7}{'vs async sgd':>14}{'vs keras':>10}")
    reference = {r: s for label, r, s, _, _ in rows if label == "async sgd"}
    for label, replicas, seconds, epochs, last in rows:
        ratio = seconds / reference[replicas] if replicas in reference else float("nan")
        print(f"{label:<21}{replicas:>9}{seconds:>12.2f}{epochs:>7}{last['wall_s']:>8.2f}"
              f"{last['val_accuracy']:>9.4f}{last['staleness_mean_total']:>11.2f}"
              f"{last['share']:>7.3f}"
              f"{ratio:>14.2f}"
              f"{seconds / keras_s:>10.2f}")
    best = min((r for r in rows if np.isfinite(r[2])), key=lambda r: r[2], default=None)
    print(f"bench_staleness: {args.rows} rows x {FEATURES}, target {args.target:.0%}: fastest "
          + (f"{best[0]} at {best[1]} replicas, {best[2]:.2f} s" if best else "none reached it")
          + f"; single-process Keras {keras_s:.2f} s"
          + (f" (fastest / keras {best[2] / keras_s:.2f})" if best else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
