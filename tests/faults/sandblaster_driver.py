"""A Sandblaster driver run as its own process by the resident-evaluator fault test.

    python tests/faults/sandblaster_driver.py '{"master": "local[2,4]", "kill_at_iteration": 3}'

Fits L2 logistic regression twice with resident evaluators (the default): clean, then with
every Python worker of this driver's Spark SIGKILLed (the resident evaluators among them) when
``kill_at_iteration`` completes, and prints one JSON line per fit: objective, iterations,
evaluations, the pids killed and the seconds it took.
"""

import json
import os
import signal
import sys
import time

import numpy as np


def python_workers() -> list[int]:
    """The pids of the Python workers forked by this driver's pyspark daemon(s)."""
    import psutil

    def command_line(process) -> str:
        # A worker that has just exited is a zombie until its daemon reaps it, and psutil
        # raises for its command line: such a process is no worker to kill.
        try:
            return " ".join(process.cmdline())
        except psutil.Error:
            return ""

    workers = []
    for daemon in psutil.Process().children(recursive=True):
        if "pyspark.daemon" in command_line(daemon):
            try:
                workers.extend(child.pid for child in daemon.children())
            except psutil.Error:
                continue
    return workers


def main(options):
    import keras
    from pyspark.sql import SparkSession

    from sparkdownpour import Sandblaster
    from sparkdownpour.callbacks import LambdaCallback
    from sparkdownpour.examples import arrays_to_frame

    spark = (SparkSession.builder.master(options["master"]).appName("sparkdownpour-resident")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 10)).astype(np.float32)
    y = (x @ rng.normal(size=10) + rng.normal(size=4000) > 0).astype(np.float32)
    frame = arrays_to_frame(spark, x, y, 4)

    def build():
        return keras.Sequential([keras.Input((10,)), keras.layers.Dense(1, activation="sigmoid")])

    for name in ("clean", "killed"):
        killed = []

        def on_iteration(iteration, record, name=name, killed=killed):
            if name == "killed" and iteration == options["kill_at_iteration"] and not killed:
                for pid in python_workers():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:  # exited between listing and kill
                        continue
                    killed.append(pid)

        started = time.perf_counter()
        result = Sandblaster(build, loss="binary_crossentropy", l2=1e-3, tol=1e-10, gtol=1e-7,
                             max_iter=60, verbose=0).fit(
            frame, callbacks=[LambdaCallback(on_epoch_end=on_iteration)])
        info = result.history.info
        print(json.dumps({"name": name, "objective": info["objective"],
                          "iterations": info["iterations"], "evaluations": info["evaluations"],
                          "evaluation": info["evaluation"], "portions": info["partitions"],
                          "killed": killed, "seconds": time.perf_counter() - started}),
              flush=True)
    spark.stop()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
