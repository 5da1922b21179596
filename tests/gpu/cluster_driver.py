"""A driver on local-cluster[2,1,1024] whose workers "own" fake GPUs, run by test_fake_gpus.py.

    python tests/gpu/cluster_driver.py '{"discovery": "/path/to/fake/discovery.sh"}'

The discovery script hands each worker one address ("0", then "1"), so each executor has its
own GPU address while no physical GPU exists. Prints one JSON line per check:

- "auto": a Downpour fit with device="auto": each replica's address, the visibility setting
  its worker applied, the device it ran on and the note explaining the CPU fallback.
- "gpu": the same with device="gpu": the error the executors raised, as fit re-raised it.
- "fractional": tasks of a stage asking for 0.5 GPU each (stage-level TaskResourceProfile),
  set up by the same code the replicas use.
"""

import json
import os
import sys
import time


def probe(_rows):
    """One task of the fractional stage: set up the devices as a replica does, report them."""
    from pyspark import TaskContext

    from sparkdownpour.replica.devices import DeviceOptions, place

    placement = place(DeviceOptions())
    yield {"partition": TaskContext.get().partitionId(), "pid": os.getpid(),
           "addresses": list(placement.addresses), "visible": placement.visible,
           "device": placement.device, "note": placement.note}


def main(options):
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests
    from pyspark.sql import SparkSession

    from sparkdownpour import Downpour
    from sparkdownpour.examples import arrays_to_frame, build_digits_mlp, digits_arrays

    spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
             .appName("sparkdownpour-fake-gpus")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .config("spark.worker.resource.gpu.amount", "1")
             .config("spark.worker.resource.gpu.discoveryScript", options["discovery"])
             .config("spark.executor.resource.gpu.amount", "1")
             .config("spark.task.resource.gpu.amount", "1")
             .config("spark.task.maxFailures", "1")  # a failed task kills its worker: no retries
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    x_train, y_train, x_test, y_test = digits_arrays()
    frame = arrays_to_frame(spark, x_train, y_train, 4)

    started = time.monotonic()
    # Three epochs: after two, held-out accuracy on digits spreads from about 0.74 to 0.93
    # between runs of the same fit (async order), around the test's 0.8.
    result = Downpour(build_digits_mlp, epochs=3, verbose=0).fit(
        frame, validation_data=(x_test, y_test))
    print(json.dumps({"check": "auto", "seconds": time.monotonic() - started,
                      "epochs": [r["devices"] for r in result.history.epochs],
                      "info_devices": result.history.info["devices"],
                      "val_accuracy": result.history.final["val_accuracy"]}), flush=True)

    started = time.monotonic()
    try:
        Downpour(build_digits_mlp, device="gpu", epochs=1, verbose=0).fit(frame)
        print(json.dumps({"check": "gpu", "error": None}), flush=True)
    except RuntimeError as e:
        print(json.dumps({"check": "gpu", "type": type(e).__name__, "error": str(e),
                          "seconds": time.monotonic() - started}), flush=True)

    started = time.monotonic()
    half = ResourceProfileBuilder().require(
        TaskResourceRequests().cpus(1).resource("gpu", 0.5)).build
    # Two tasks (a new profile starts new Python workers, each importing TensorFlow).
    rows = spark.sparkContext.parallelize(range(2), 2).withResources(half) \
        .mapPartitions(probe).collect()
    print(json.dumps({"check": "fractional", "tasks": rows,
                      "seconds": time.monotonic() - started}), flush=True)
    spark.stop()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
