"""A training driver run as its own process by the fault tests (its own SparkSession).

    python tests/faults/train_driver.py '{"master": "local[2,4]", "runs": [...], ...}'

Each run is a Downpour fit of the digits MLP with the given knobs and test hooks; the driver
prints one JSON line per run: accuracy, applied updates (in all, and on every shard), duplicates,
the expected number of mini-batches. Runs keep the frame's 4 partitions as 4 replicas unless
their knobs say otherwise (``"num_replicas": null``: the default, one per task slot).
Options: "kill_worker_after" (SIGKILL one replica's Python worker, found through the server's
status route, once that many updates are applied). With shard processes it first prints
``SHARD PIDS <pid> ...`` when the server starts.
"""

import json
import os
import signal
import sys
import threading
import time

import numpy as np


def main(options):
    from pyspark.sql import SparkSession

    from sparkdownpour import Downpour
    from sparkdownpour.callbacks import LambdaCallback
    from sparkdownpour.examples import arrays_to_frame, build_digits_mlp, digits_arrays
    from sparkdownpour.testing import FailFirstAttempt

    builder = (SparkSession.builder.master(options["master"]).appName("sparkdownpour-faults")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true"))
    for key, value in options.get("conf", {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    x_train, y_train, x_test, y_test = digits_arrays()
    frame = arrays_to_frame(spark, x_train, y_train, 4)

    def batches_per_epoch(replicas):  # the frame's partitions as trained (merged, if fewer)
        sizes = frame.coalesce(replicas).rdd.glom().map(len).collect()
        return sum(-(-size // 32) for size in sizes)

    for run in options["runs"]:
        # The fault tests' counts (48 mini-batches an epoch, 4 failed attempts) are for the
        # digits frame's 4 partitions as 4 replicas: pinned, as the default would merge them
        # into one per task slot (equal to the frame's count, so kept without a shuffle).
        knobs = {"num_replicas": 4, **run.get("knobs", {})}
        trainer = Downpour(build_digits_mlp, verbose=0, **knobs)
        callbacks = [FailFirstAttempt(**run["fail"])] if run.get("fail") else []
        killed, seen = {}, {}

        def on_server_start(server, run=run, killed=killed, seen=seen):
            seen["server"] = server
            if hasattr(server, "pids"):  # shard processes: the test checks none outlives us
                print("SHARD PIDS", *server.pids, flush=True)
            if run.get("kill_worker_after"):
                threading.Thread(target=kill_a_worker,
                                 args=(server, run["kill_worker_after"], killed),
                                 daemon=True).start()

        def keep_status(epoch, logs, seen=seen):  # after every epoch, while the servers are up
            seen["status"] = seen["server"].store.status()

        callbacks.append(LambdaCallback(on_server_start=on_server_start, on_epoch_end=keep_status))
        started = time.monotonic()
        result = trainer.fit(frame, validation_data=(x_test, y_test),
                             resume=run.get("resume", False), callbacks=callbacks)
        status = seen["status"]
        history = result.history
        accuracy = float(np.mean(np.argmax(result.model(x_test).numpy(), -1) == y_test))
        print(json.dumps({
            "name": run.get("name"), "accuracy": accuracy, "seconds": time.monotonic() - started,
            "updates": history.final["updates_total"], "epochs_run": len(history),
            "shard_updates": [shard["updates_applied"]
                              for shard in status.get("shards", [status])],
            "shard_duplicates": [shard["duplicates_refused"]
                                 for shard in status.get("shards", [status])],
            "replicas": history.info["partitions"],
            "expected_updates": batches_per_epoch(history.info["partitions"])
            * trainer.config.epochs,
            "duplicates": sum(history["duplicates_refused"][-1:]),
            "skipped": sum(history["skipped_steps"]),
            "resumed_from": history.info.get("resumed_from"), "killed": killed,
            "epoch_jobs": history.info.get("epoch_jobs"),
        }), flush=True)
    spark.stop()


def kill_a_worker(server, after, killed):
    """Once ``after`` updates are applied, SIGKILL the Python worker of one running replica,
    as reported by the status route (``attempts``: partition -> pid)."""
    from sparkdownpour.server import ParameterClient

    with ParameterClient(server.url, server.token, timeout=5) as client:
        while True:
            status = client.status()
            pids = {int(a["pid"]) for a in status["attempts"].values()} - {os.getpid()}
            if status["updates_applied"] >= after and pids:
                pid = min(pids)
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, at_update=status["updates_applied"])
                return
            time.sleep(0.02)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
