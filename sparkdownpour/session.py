"""Finding or creating the SparkSession, and the driver address the server binds to."""

from __future__ import annotations

import logging
import os
import shutil
import sys

from sparkdownpour.worker_daemon import SETTING as DAEMON_SETTING
from sparkdownpour.worker_daemon import daemon_check, daemon_setting

logger = logging.getLogger(__name__)

LOOPBACK = ("localhost", "127.0.0.1", "::1")


def get_or_create_session(app_name: str = "sparkdownpour", conf: dict | None = None,
                          remote: str | None = None):
    """The active session, untouched; else an embedded ``local[*]`` one set up for this process.

    ``remote`` (``sc://host:port``, or ``local[N]`` for a local Connect server), else the
    standard ``SPARK_REMOTE`` variable, asks for a Spark Connect session instead; ``conf``'s
    run-time settings then apply to it.

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
    remote = remote or os.environ.get("SPARK_REMOTE")
    if remote:
        return _connect_session(app_name, conf or {}, remote)
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
    master = str((conf or {}).get("spark.master", "local[*]"))
    # Under spark-submit this reads its --master and --conf; else it launches the driver's JVM.
    # A JVM left by a stopped session is reused as it is: no launch options to choose then (and
    # no class list asked of a JVM that is not being launched).
    launching = not submitted_master and SparkContext._gateway is None
    # Whether executors can run worker_daemon: checked while the JVM starts; under spark-submit
    # (the JVM is up already, its master known only now) in the 50 ms before the context
    check = None if submitted_master else daemon_check(master, conf)
    SparkContext._ensure_initialized(conf=_launch_conf(master, conf) if launching else None)
    submitted = SparkConf()
    if submitted_master and not submitted.contains(DAEMON_SETTING):
        check = daemon_check(submitted.get("spark.master", ""), conf)
    builder = SparkSession.builder.appName(app_name)
    for key, value in (conf or {}).items():
        if key != "spark.master" and not submitted.contains(key):
            builder = builder.config(key, str(value).lower() if isinstance(value, bool) else value)
    if not submitted_master:
        logger.info("no active SparkSession: starting one on %s", master)
        builder = builder.master(master)
        if master.startswith("local"):
            builder = (builder.config("spark.driver.host", "127.0.0.1")
                       .config("spark.driver.bindAddress", "127.0.0.1"))
    for key, value in daemon_setting(check).items():  # compiled pyspark (worker_daemon)
        if not submitted.contains(key):
            builder = builder.config(key, value)
    # The JVM's start takes seconds: use them. Only now, with the JVM process launched
    # (_ensure_initialized above): the first TensorFlow import holds back file descriptor 2
    # (tf_logs), and a process started meanwhile would keep that as its stderr.
    import_tensorflow_in_background()
    session = (builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.showConsoleProgress", "false")
               .getOrCreate())
    from sparkdownpour.jvm_archive import note_listing_jvm

    note_listing_jvm(session.sparkContext._jvm)  # if it lists its classes: what a builder needs
    return session


# An embedded local session's driver JVM lives as long as one script or notebook and does little
# but schedule: C2's compiler threads would spend more CPU than they save (measured on 2 cores:
# 12 instead of 19.5 CPU-seconds, and 1.5 s less wall time, to start and run six small jobs).
EMBEDDED_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"


def _launch_conf(master: str, conf: dict | None):
    """The ``--conf`` the driver's JVM is launched with: ``EMBEDDED_JVM_OPTIONS`` for a local
    master, unless the user chose the driver's Java options (``conf`` or PYSPARK_SUBMIT_ARGS)."""
    from pyspark import SparkConf

    launch = SparkConf(loadDefaults=False)
    options = _driver_java_options(master, conf)
    if options is not None:
        launch.set("spark.driver.extraJavaOptions", options)
    return launch


def _driver_java_options(master: str, conf: dict | None) -> str | None:
    """``spark.driver.extraJavaOptions`` for a driver JVM about to be launched: the user's, or
    the embedded ones for a local master (None: leave them to spark-submit)."""
    chosen = (conf or {}).get("spark.driver.extraJavaOptions")
    if chosen is not None:
        return str(chosen)
    if master.startswith("local") and \
            "--driver-java-options" not in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        from sparkdownpour.jvm_archive import java_options  # Spark's classes, mapped (jvm_archive)

        return f"{EMBEDDED_JVM_OPTIONS} {java_options()}".strip()
    return None


def import_tensorflow_in_background() -> None:
    """Start importing Keras (and TensorFlow, about 3 s of one core) on a daemon thread.

    The driver builds its model next, and starting the JVM keeps this process waiting for
    seconds: measured on 2 cores, ``python jobs/train_digits.py`` took 15.8-16.5 s end to end
    instead of 18.5-18.8 s. A later ``import keras`` on any thread waits for this one (Python's
    per-module import locks). Not where TensorFlow is already imported or being imported."""
    import threading

    if "keras" in sys.modules or any(t.name == _IMPORT_THREAD for t in threading.enumerate()):
        return
    threading.Thread(target=_import_keras, name=_IMPORT_THREAD, daemon=True).start()


_IMPORT_THREAD = "sparkdownpour-import-tensorflow"


def _import_keras() -> None:
    try:
        import keras  # noqa: F401
    except Exception:  # the importing code on the main thread meets and reports it
        logger.debug("importing keras in the background failed", exc_info=True)


def _connect_session(app_name: str, conf: dict, remote: str):
    import warnings

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # a local server's Python workers
    logger.info("starting a Spark Connect session on %s", remote)
    settings = {key: str(value).lower() if isinstance(value, bool) else value
                for key, value in conf.items() if key != "spark.master"}
    if remote.startswith("local"):  # a server in this process: no console progress bars
        return local_connect_session(remote, {"spark.app.name": app_name,
                                              "spark.ui.showConsoleProgress": "false",
                                              **settings})
    builder = SparkSession.builder.remote(remote).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():  # static settings a running server cannot take
        warnings.simplefilter("ignore", UserWarning)
        return builder.getOrCreate()


def local_connect_session(master: str, conf: dict):
    """What ``SparkSession.builder.remote("local[N]")`` does, but serving on a free port of
    127.0.0.1: pyspark's own local server always takes port 15002 on every interface, so two
    processes on one machine collide and the server is reachable from the network. Uses
    pyspark's ``_start_connect_server`` (what ``remote("local[N]")`` calls); ``conf`` holds
    static and run-time settings alike. Stopping the session stops the server too.

    The server's JVM is an embedded one like ``get_or_create_session``'s, launched with the same
    options (C1 only, Spark's classes mapped from the archive, ``jvm_archive``): measured on 2
    cores, the session started in 3.0-3.5 s instead of 6.8-7.8 s and its first query took
    1.5-1.6 s instead of 3.3-3.9 s."""
    import socket
    import warnings

    from pyspark import SparkContext
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = daemon_check(master, conf)  # its workers: worker_daemon
    opts = {**daemon_setting(check), **conf, "spark.connect.grpc.binding.port": str(port),
            "spark.connect.grpc.binding.address": "127.0.0.1"}
    launching = SparkContext._gateway is None  # else a stopped session's JVM is reused as it is
    if launching and (options := _driver_java_options(master, conf)) is not None:
        opts["spark.driver.extraJavaOptions"] = options
    os.environ["SPARK_LOCAL_REMOTE"] = "1"  # session.stop() then stops the server, too
    ConnectSession._start_connect_server(master, opts)  # leaves the run-time settings in opts
    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    if launching:
        from sparkdownpour.jvm_archive import note_listing_jvm

        note_listing_jvm(SparkContext._jvm)  # the server's JVM, in this process
    with warnings.catch_warnings():  # static settings a running server cannot take
        warnings.simplefilter("ignore", UserWarning)
        return ConnectSession.builder.remote(f"sc://localhost:{port}").config(map=opts) \
            .getOrCreate()


def quiet_spark_logs(spark) -> None:
    """Spark's own log at ERROR for a classic session (a Connect server's log is its own)."""
    if not is_connect(spark):
        spark.sparkContext.setLogLevel("ERROR")


def is_connect(spark) -> bool:
    """True for a Spark Connect session (``SparkSession.builder.remote(...)``, ``SPARK_REMOTE``
    or ``spark.api.mode=connect``): no SparkContext, no RDD API."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def conf_value(spark, key: str, default: str | None = None) -> str | None:
    """A Spark setting through ``spark.conf`` (both kinds of session); ``spark`` may also be a
    SparkContext (read through its SparkConf)."""
    if hasattr(spark, "getConf"):  # a SparkContext
        return spark.getConf().get(key, default)
    try:
        value = spark.conf.get(key, default)
    except Exception:  # Connect answers an unknown key without a default with an error
        return default
    return default if value is None else value


def master_of(spark) -> str:
    return getattr(spark, "master", None) or conf_value(spark, "spark.master", "") or ""


def driver_address(spark, server_host: str | None = None) -> str:
    """The address executors reach this process's servers at.

    ``server_host`` (a config knob) wins. In a Spark Connect session the servers run in the
    client's process, not on Spark's driver: loopback when the Connect server is on this
    machine (``remote("local[*]")``, ``sc://localhost``), else the client's own address on
    its route to the Connect server. In a classic session: loopback for local masters, else
    ``spark.driver.host``. ``spark`` is a SparkSession of either kind or a SparkContext.
    """
    if server_host:
        return server_host
    if is_connect(spark):
        endpoint = connect_endpoint(spark)
        if endpoint[0] in LOOPBACK:
            return "127.0.0.1"
        return route_address(endpoint)
    if master_of(spark).startswith("local"):
        return "127.0.0.1"
    host = conf_value(spark, "spark.driver.host")
    if not host:
        raise RuntimeError("spark.driver.host is not set: cannot tell executors where the master "
                           "model server listens; set it in the Spark configuration, or set "
                           "server_host")
    return host


def connect_endpoint(spark) -> tuple[str, int]:
    """``(host, port)`` of the Spark Connect server a Connect session talks to."""
    client = spark.client
    host = (getattr(client, "host", None) or "localhost").strip("[]")
    port = getattr(getattr(client, "_builder", None), "_port", None)  # no public accessor
    return host, int(port or 15002)


def route_address(endpoint: tuple[str, int]) -> str:
    """This machine's address on its route towards ``endpoint`` (a UDP connect sends nothing)."""
    import socket

    host, port = endpoint
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            return sock.getsockname()[0]
    except OSError as e:
        raise RuntimeError(f"cannot tell this client's address towards the Spark Connect server "
                           f"{host}:{port} ({e}); set server_host to an address of this machine "
                           "that Spark's executors can reach") from e


def task_cpus(spark) -> int:
    return int(conf_value(spark, "spark.task.cpus", "1") or 1)


def default_parallelism(spark) -> int:
    """``spark.default.parallelism`` without a SparkContext: the setting, else a local master's
    thread count, else the partitions Spark gives a range of rows it was not told to split."""
    setting = conf_value(spark, "spark.default.parallelism")
    if setting:
        return int(setting)
    master = master_of(spark)
    if master == "local":
        return 1
    if master.startswith("local["):
        threads = master[len("local["):].split(",")[0].rstrip("]")
        return (os.cpu_count() or 1) if threads == "*" else int(threads)
    return num_partitions(spark.range(0, 1 << 20))


def planned_partitions(df) -> int | None:
    """How many partitions ``df``'s plan makes, without a job, in a classic session (the RDD
    of its plan; empty ones counted); None under Spark Connect, which has no RDD API."""
    if is_connect(df.sparkSession):
        return None
    return df.rdd.getNumPartitions()


def num_partitions(df) -> int:
    """How many partitions ``df`` has, without ``df.rdd`` (which Spark Connect lacks): one
    small job over the frame (nothing but partition ids is read from a cached one). Trailing
    empty partitions are not counted."""
    from pyspark.sql import functions as F

    last = df.select(F.spark_partition_id().alias("p")).agg(F.max("p")).first()[0]
    return 0 if last is None else int(last) + 1
