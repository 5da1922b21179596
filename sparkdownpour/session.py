"""Finding or creating the SparkSession, and the driver address the server binds to."""

from __future__ import annotations

import logging
import os
import shutil
import sys

logger = logging.getLogger(__name__)


def get_or_create_session(app_name: str = "sparkdownpour", conf: dict | None = None):
    """The active session, untouched; else an embedded ``local[*]`` one set up for this process.

    ``conf`` (e.g. a job file's ``[spark]`` table, ``{"spark.speculation": True}``) applies to
    a new session, under spark-submit too; ``--conf`` given to spark-submit wins over it. Its
    ``spark.master``, if any, is used where spark-submit named none (else ``local[*]``).

    The embedded session runs executors' Python workers with the running interpreter (the system
    Python lacks this environment's packages) and keeps all traffic on the loopback interface.
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise RuntimeError("Spark needs Java 17 or newer: install a JDK (e.g. apt-get install "
                           "openjdk-17-jre-headless) or set JAVA_HOME")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # spark-submit started this process (its gateway is waiting) or was told a master through
    # PYSPARK_SUBMIT_ARGS; otherwise pyspark's own launch sets a default local[*] master, which
    # must not hide a job file's "spark.master".
    submitted_master = "PYSPARK_GATEWAY_PORT" in os.environ or \
        "--master" in os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    SparkContext._ensure_initialized()  # under spark-submit this reads its --master and --conf
    submitted = SparkConf()
    builder = SparkSession.builder.appName(app_name)
    for key, value in (conf or {}).items():
        if key != "spark.master" and not submitted.contains(key):
            builder = builder.config(key, str(value).lower() if isinstance(value, bool) else value)
    if not submitted_master:
        master = str((conf or {}).get("spark.master", "local[*]"))
        logger.info("no active SparkSession: starting one on %s", master)
        builder = builder.master(master)
        if master.startswith("local"):
            builder = (builder.config("spark.driver.host", "127.0.0.1")
                       .config("spark.driver.bindAddress", "127.0.0.1"))
    return (builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.showConsoleProgress", "false")
            .getOrCreate())


def driver_address(spark) -> str:
    """Where executors reach the driver: loopback for local masters, ``spark.driver.host`` else.

    ``spark`` is a SparkSession or a SparkContext."""
    sc = getattr(spark, "sparkContext", spark)
    if sc.master.startswith("local"):
        return "127.0.0.1"
    host = sc.getConf().get("spark.driver.host", None)
    if not host:
        raise RuntimeError("spark.driver.host is not set: cannot tell executors where the master "
                           "model server listens; set it in the Spark configuration")
    return host


def task_cpus(spark) -> int:
    sc = getattr(spark, "sparkContext", spark)
    return int(sc.getConf().get("spark.task.cpus", "1"))
