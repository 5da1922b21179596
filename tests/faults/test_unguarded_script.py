"""Shard children load only the library: a user's script without a ``__main__`` guard runs once.

multiprocessing's ``spawn`` re-imports the parent's main script in every child; an unguarded
script with ``shard_processes=True`` then started a second Spark application and training run
inside each shard child, and the children never became ready. The script below is written as
a new user would write it: everything at module level.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = '''
import json, os
print("SCRIPT RAN", os.getpid(), flush=True)

import numpy as np
from pyspark.sql import SparkSession
from sparkdownpour import Downpour
from sparkdownpour.examples import arrays_to_frame

spark = (SparkSession.builder.master("local[2]").appName("unguarded")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
rng = np.random.default_rng(0)
x = rng.standard_normal((128, 4)).astype(np.float32)
y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
frame = arrays_to_frame(spark, x, y, 2)


class HalfStep:  # the user's own update rule, defined here: it must reach the shard children
    def init(self, params):
        return ()

    def update(self, grads, state, params):
        return [p - 0.5 * g for p, g in zip(params, grads)], state

    def __repr__(self):
        return "HalfStep()"


def build():
    import keras
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])


result = Downpour(build, optimizer=HalfStep(), batch_size=16, epochs=3,
                  num_shards=2, shard_processes=True, verbose=0).fit(frame)
history = result.history
print("RESULT", json.dumps({"updates": history.final["updates_total"], "loss": history["loss"],
                            "shards": [s for s in history.info["shards"]]}), flush=True)
spark.stop()
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_unguarded_script_with_shard_processes_runs_once_and_trains(tmp_path):
    script = tmp_path / "unguarded_job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT),
           "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ran = [line for line in proc.stdout.splitlines() if line.startswith("SCRIPT RAN")]
    assert len(ran) == 1, proc.stdout  # not once more in each shard child
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]

    result = json.loads(line.split(" ", 1)[1])
    # 128 rows in 2 partitions of 64: 4 mini-batches of 16 per replica per epoch.
    assert result["updates"] == 3 * 2 * 4
    assert len(result["shards"]) == 2
    assert result["loss"][-1] < result["loss"][0]
    assert seconds < 180
