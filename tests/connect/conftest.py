"""A Spark Connect session for the tests in this folder: ``SparkSession.builder.remote("local[2]")``.

pyspark starts a local Connect server inside this process (a classic SparkContext behind a
gRPC endpoint on localhost) and returns a thin client session: no SparkContext, no RDD API.
The server's executors start their Python workers with this process's ``PYSPARK_PYTHON`` and
``PYTHONPATH`` (the root conftest sets the former; the latter must name the checkout under test,
as ``PYTHONPATH=$PWD python -m pytest`` does), so they import the same sparkdownpour.

Connect mode is process-wide in pyspark (``pyspark.sql.functions`` answers Connect columns while
a Connect session is open), so the session lives for this folder only and is stopped on the way
out; pytest runs this folder before the classic tests' folders. A process that already holds a
classic SparkContext cannot start a local Connect server: then these tests are skipped, with
the command that runs them alone.
"""

import time
import warnings

import pytest


@pytest.fixture(scope="package")
def connect():
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is not None:
        pytest.skip("a classic SparkContext is already running in this process; run the Spark "
                    "Connect tests on their own: python -m pytest tests/connect")
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Static settings reach the local server when it starts; the client then also tries
        # to set them at run time and warns that it cannot.
        warnings.simplefilter("ignore", UserWarning)
        session = (SparkSession.builder.remote("local[2]")
                   .appName("sparkdownpour-connect-tests")
                   .config("spark.driver.host", "127.0.0.1")
                   .config("spark.driver.bindAddress", "127.0.0.1")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", "4")
                   .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                   .getOrCreate())
    from sparkdownpour.session import is_connect

    assert is_connect(session), type(session)
    session.started_s = time.perf_counter() - started
    yield session
    session.stop()  # stops the local server too, and leaves Connect mode


@pytest.fixture(scope="package")
def connect_digits(connect):
    """scikit-learn's digits in the Connect session: a 4-partition frame and held-out arrays."""
    from sparkdownpour.examples import arrays_to_frame, digits_arrays

    x_train, y_train, x_test, y_test = digits_arrays()
    return arrays_to_frame(connect, x_train, y_train, 4), (x_test, y_test)
