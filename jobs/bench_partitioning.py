"""Does the DataFrame's partitioning matter? The same digits data in 1 to 200 partitions (and
all rows in one of 4), trained by Downpour and by Sandblaster with their defaults on local[2].

Issue 15's target: any partitioning trains within 1.2x of the best one. Downpour picks its
replicas from the task slots (``history.info["replicas_chosen"]``: partitions beyond the
slots are merged without a shuffle into one replica per slot); Sandblaster cuts the data into
its own portions. Every fit is warm (a warm-up fit runs first), Downpour for a fixed number
of epochs, Sandblaster to its tolerance; each partitioning's frame is cached and counted
before its clock starts. The repeats run in rounds over all layouts; each layout's median is
kept. Run it alone on the machine. Prints a table and one summary line last.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LAYOUTS = ("1", "2", "4", "8", "32", "200", "skewed")


def layout(spark, x, y, name: str):
    """The digits frame in ``name`` partitions; "skewed": every row in one of 4 partitions."""
    from pyspark.sql import functions as F

    from sparkdownpour.examples import arrays_to_frame

    if name == "skewed":
        frame = arrays_to_frame(spark, x, y).repartition(4, F.lit(0))
    else:
        frame = arrays_to_frame(spark, x, y, int(name))
    frame = frame.cache()
    frame.count()
    return frame


def softmax_regression():
    import keras

    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])


def time_downpour(frame, x_test, y_test, epochs: int) -> tuple[float, str, float]:
    from sparkdownpour import Downpour
    from sparkdownpour.examples import build_digits_mlp

    started = time.perf_counter()
    result = Downpour(build_digits_mlp, epochs=epochs, verbose=0).fit(
        frame, validation_data=(x_test, y_test))
    seconds = time.perf_counter() - started
    return seconds, result.history.info.get("replicas_chosen", ""), \
        result.history.final["val_accuracy"]


def time_sandblaster(frame, x_test, y_test) -> tuple[float, str, float]:
    from sparkdownpour import Sandblaster

    started = time.perf_counter()
    result = Sandblaster(softmax_regression, loss="sparse_categorical_crossentropy", l2=1e-3,
                         max_iter=40, verbose=0).fit(frame)
    seconds = time.perf_counter() - started
    accuracy = float(np.mean(np.argmax(result.model(x_test).numpy(), -1) == y_test))
    return seconds, f"{result.history.info['partitions']} portions", accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help="partition counts, and 'skewed' (all rows in one of 4)")
    parser.add_argument("--epochs", type=int, default=5, help="Downpour epochs per fit")
    parser.add_argument("--repeats", type=int, default=2, help="fits per layout (median kept)")
    args = parser.parse_args(argv)

    from sparkdownpour.examples import digits_arrays
    from sparkdownpour.session import get_or_create_session

    x_train, y_train, x_test, y_test = digits_arrays()
    spark = get_or_create_session("sparkdownpour-bench-partitioning")
    spark.sparkContext.setLogLevel("ERROR")
    warm = layout(spark, x_train, y_train, "4")
    time_downpour(warm, x_test, y_test, 1)  # workers started, TensorFlow imported
    time_sandblaster(warm, x_test, y_test)
    warm.unpersist()
    names = args.layouts.split(",")
    frames = {name: layout(spark, x_train, y_train, name) for name in names}
    trainers = (("Downpour", functools.partial(time_downpour, epochs=args.epochs)),
                ("Sandblaster", time_sandblaster))
    # Rounds over every layout, not every repeat of one layout in a row: the machine's drift
    # (a busier minute, a JIT or garbage collector pass) then falls on all layouts alike.
    runs: dict[tuple[str, str], list] = {}
    for _ in range(args.repeats):
        for name in names:
            for trainer, run in trainers:
                runs.setdefault((trainer, name), []).append(run(frames[name], x_test, y_test))
    rows = []
    for trainer, _ in trainers:
        for name in names:
            mine = runs[(trainer, name)]
            rows.append((trainer, name, statistics.median(r[0] for r in mine), mine[-1][1],
                         mine[-1][2]))
    for frame in frames.values():
        frame.unpersist()

    print(f"\n{'trainer':<12} {'partitions':>10} {'seconds':>8} {'vs best':>7} {'accuracy':>8}  "
          "chosen")
    worst = {}
    for trainer in ("Downpour", "Sandblaster"):
        mine = [r for r in rows if r[0] == trainer]
        best = min(r[2] for r in mine)
        worst[trainer] = max(r[2] for r in mine) / best
        for _, name, seconds, chosen, accuracy in mine:
            print(f"{trainer:<12} {name:>10} {seconds:8.2f} {seconds / best:7.2f} "
                  f"{accuracy:8.4f}  {chosen}")
    print(f"\nbench_partitioning: worst layout vs best, warm, median of {args.repeats}: "
          f"Downpour {worst['Downpour']:.2f}x ({args.epochs} epochs), Sandblaster "
          f"{worst['Sandblaster']:.2f}x (target: at most 1.2x)")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
