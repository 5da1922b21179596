"""The local Connect server's JVM (``session.local_connect_session``) is launched as the
embedded classic session's is: C1 only, and Spark's classes listed for, or mapped from, the
class-data-sharing archive (``jvm_archive``)."""

import json
import os
from pathlib import Path


def test_the_local_servers_jvm_starts_with_the_embedded_options(connect):
    from pyspark import SparkContext

    jvm = SparkContext._jvm  # the server's JVM lives in this process
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert "-XX:TieredStopAtLevel=1" in args, args
    listed = [a.split("=", 1)[1] for a in args if a.startswith("-XX:DumpLoadedClassList=")]
    mapped = [a.split("=", 1)[1] for a in args if a.startswith("-XX:SharedArchiveFile=")]
    if os.environ.get("SPARKDOWNPOUR_JVM_ARCHIVE") == "0":
        assert listed == mapped == []
    assert len(listed) + len(mapped) <= 1, args
    for listing in listed:  # the note a later session's builder needs: this JVM's pid
        note = json.loads(Path(listing).with_suffix(".json").read_text())
        assert note["pid"] == int(jvm.java.lang.ProcessHandle.current().pid())
        assert note["class_path"] == jvm.java.lang.System.getProperty("java.class.path")
    for archive in mapped:
        assert Path(archive).is_file()


def worker_pyspark(batches):
    import pyarrow as pa
    import pyspark

    for _ in batches:
        pass
    yield pa.RecordBatch.from_pydict({"file": [pyspark.__file__]})


def test_the_local_servers_python_workers_import_the_installed_pyspark(connect):
    """Spark's zipped pyspark sources stay behind the installed, compiled package
    (``worker_daemon``), as in the embedded classic session."""
    files = [row.file for row in
             connect.range(2).repartition(2).mapInArrow(worker_pyspark, "file string").collect()]
    assert len(files) == 2 and not any(".zip" in f for f in files), files
