"""get_or_create_session in a fresh process (the test session's own SparkSession is active)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys, threading
from sparkdownpour.session import get_or_create_session
assert "keras" not in sys.modules
spark = get_or_create_session("t", conf=json.loads(sys.argv[1]))
# Keras was imported on a thread while the JVM started (session.import_tensorflow_in_background)
importing = [t for t in threading.enumerate() if t.name == "sparkdownpour-import-tensorflow"]
for thread in importing:
    thread.join(timeout=120)
sc = spark.sparkContext

def worker_pyspark(_):
    import pyspark
    yield pyspark.__file__

print(json.dumps({"master": sc.master, "host": sc.getConf().get("spark.driver.host"),
                  "worker_pyspark": sc.parallelize([0], 1).mapPartitions(worker_pyspark).first(),
                  "speculation": sc.getConf().get("spark.speculation"),
                  "keras": "keras" in sys.modules,
                  "jvm": list(sc._jvm.java.lang.management.ManagementFactory
                              .getRuntimeMXBean().getInputArguments())}))
spark.stop()
"""


def _session(conf: dict, cache=None) -> dict:
    env = {**os.environ, "SPARKDOWNPOUR_JVM_CACHE": str(cache)} if cache else None
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(conf)], capture_output=True,
                         text=True, timeout=180, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_job_files_master_and_settings_reach_a_new_session(tmp_path):
    got = _session({"spark.master": "local-cluster[1,1,1024]", "spark.speculation": True}, tmp_path)
    assert got.pop("keras") is True  # loaded without the script importing it
    # An executor JVM's workers import the installed, compiled pyspark, not its zipped
    # sources (worker_daemon)
    assert ".zip" not in got.pop("worker_pyspark")
    jvm = got.pop("jvm")
    assert "-XX:TieredStopAtLevel=1" in jvm  # session.EMBEDDED_JVM_OPTIONS
    # No archive in this cache yet: the JVM lists its classes for one (jvm_archive).
    listed = [a for a in jvm if a.startswith("-XX:DumpLoadedClassList=")]
    assert len(listed) == 1 and listed[0].startswith(f"-XX:DumpLoadedClassList={tmp_path}")
    assert got == {"master": "local-cluster[1,1,1024]", "host": "127.0.0.1", "speculation": "true"}
    own = _session({"spark.driver.extraJavaOptions": "-Dsparkdownpour.probe=1",
                    "spark.python.daemon.module": "pyspark.daemon"})
    assert own["master"] == "local[*]"
    assert "pyspark.zip" in own["worker_pyspark"]  # the user's daemon module: Spark's own path
    assert "-Dsparkdownpour.probe=1" in own["jvm"] and "-XX:TieredStopAtLevel=1" not in own["jvm"]


@pytest.mark.parametrize("master, conf, submit_args, expected", [
    ("local[*]", {}, "", "-XX:TieredStopAtLevel=1"),
    ("local-cluster[2,1,1024]", {}, "", "-XX:TieredStopAtLevel=1"),
    ("spark://host:7077", {}, "", None),  # a cluster's driver: the user's JVM, untouched
    ("local[2]", {"spark.driver.extraJavaOptions": "-Xss4m"}, "", "-Xss4m"),
    ("local[2]", {}, "--driver-java-options -Xss4m pyspark-shell", None),
])
def test_the_embedded_jvm_compiles_with_c1_unless_the_user_chose(monkeypatch, master, conf,
                                                                 submit_args, expected):
    from sparkdownpour.session import _launch_conf

    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", submit_args)
    monkeypatch.setenv("SPARKDOWNPOUR_JVM_ARCHIVE", "0")  # its options: test_jvm_archive
    assert _launch_conf(master, conf).get("spark.driver.extraJavaOptions") == expected
