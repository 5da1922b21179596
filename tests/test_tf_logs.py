"""A normal run prints none of TensorFlow's C++ start-up lines, on the driver or in a Python
worker; SPARKDOWNPOUR_TF_LOG=1 brings them back."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkdownpour.tf_logs import strip_start_up_lines

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("InitializeLog", "I0000", "oneDNN", "cuda drivers", "cuInit", "cpu_feature_guard")

DRIVER = """
import sparkdownpour
import keras
import tensorflow as tf
print(float(tf.reduce_sum(tf.ones(3))))
"""

WORKER = """
import pyarrow as pa
from pyspark.sql import SparkSession

def compute(batches):
    import sparkdownpour  # what a replica's function imports first
    import tensorflow as tf
    for batch in batches:
        yield pa.RecordBatch.from_pydict({"id": [int(tf.reduce_sum(tf.ones(2)))] * batch.num_rows})

spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "1").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
print(spark.range(2, numPartitions=1).mapInArrow(compute, "id long").collect())
spark.stop()
"""


def run(script: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "SPARKDOWNPOUR_TF_LOG")}
    environ.update(PYTHONPATH=str(ROOT), PYSPARK_PYTHON=sys.executable, **env)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=environ, timeout=240, cwd=ROOT)


def noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(mark in line for mark in NOISE)]


def test_the_driver_prints_no_start_up_lines_unless_asked():
    quiet = run(DRIVER)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "3.0"
    assert noise(quiet.stderr) == []
    loud = run(DRIVER, SPARKDOWNPOUR_TF_LOG="1")
    assert loud.returncode == 0, loud.stderr
    if not noise(loud.stderr):
        pytest.skip("this TensorFlow build prints no start-up lines at all")


@pytest.mark.timeout(300)
def test_a_python_worker_prints_no_start_up_lines():
    result = run(WORKER)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Row(id=2)" in result.stdout
    assert noise(result.stderr) == []


def test_only_absl_lines_are_held_back():
    text = (b"WARNING: All log messages before absl::InitializeLog() is called are written to "
            b"STDERR\nI0000 00:00:1796198410.219200   30529 port.cc:153] oneDNN custom ops\n"
            b"E0000 00:00:1796198448.804689   30878 cuda_platform.cc:52] failed call to cuInit\n"
            b"W0312 10:11:12.123456 1234 x.cc:1] a warning\n"
            b"Traceback (most recent call last):\nImportError: a real failure\n")
    assert strip_start_up_lines(text) == (b"Traceback (most recent call last):\n"
                                          b"ImportError: a real failure\n")
