"""A Spark Connect session for the tests in this folder: ``SparkSession.builder.remote("local[2]")``.

pyspark starts a local Connect server inside this process (a classic SparkContext behind a
gRPC endpoint on localhost) and returns a thin client session: no SparkContext, no RDD API.
The server's executors start their Python workers with this process's ``PYSPARK_PYTHON`` and
``PYTHONPATH`` (the root conftest sets both, the latter to the checkout under test), so they import
the same sparkdownpour and the same ``tests`` helpers.

Connect mode is process-wide in pyspark (``pyspark.sql.functions`` answers Connect columns while
a Connect session is open), so the session lives for this folder only and is stopped on the way
out; pytest runs this folder before the classic tests' folders. A process that already holds a
classic SparkContext cannot start a local Connect server: then these tests are skipped, with
the command that runs them alone.

``remote("local[2]")`` itself always serves on port 15002 (on every interface), so two test
processes on one machine (or a test run beside a job) collide. The fixture therefore starts
the same in-process server on a free loopback port with ``session.local_connect_session``,
as the jobs' ``--remote local[N]`` does; stopping the session stops the server too.
"""

import time

import pytest


@pytest.fixture(scope="package")
def connect():
    from pyspark import SparkContext

    from sparkdownpour.session import local_connect_session

    if SparkContext._active_spark_context is not None:
        pytest.skip("a classic SparkContext is already running in this process; run the Spark "
                    "Connect tests on their own: python -m pytest tests/connect")
    started = time.perf_counter()
    session = local_connect_session("local[2]", {
        "spark.app.name": "sparkdownpour-connect-tests",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    })
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
