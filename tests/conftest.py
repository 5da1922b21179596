"""One session-wide local[2] SparkSession; everything stays on 127.0.0.1."""

import os
import sys
from pathlib import Path

import pytest

# Tests hand Spark functions defined in the test modules (``tests.…``); cloudpickle ships those by
# reference, so the executors' Python workers must be able to import ``tests`` too. Workers take
# PYTHONPATH from the Spark JVM's environment, which is this process's when the JVM starts (local,
# local-cluster and the in-process Connect server alike), so the checkout under test goes first.
CHECKOUT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [CHECKOUT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != CHECKOUT])
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("sparkdownpour-tests")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def digits(spark):
    """scikit-learn's digits: a 4-partition training frame and held-out (x, y) arrays."""
    from sparkdownpour.examples import arrays_to_frame, digits_arrays

    x_train, y_train, x_test, y_test = digits_arrays()
    return arrays_to_frame(spark, x_train, y_train, 4), (x_test, y_test)
