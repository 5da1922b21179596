"""The spark-submit jobs, run as a user runs them: separate processes, real executors."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_job(args, timeout=420):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def report(stdout: str) -> dict:
    values = dict(re.findall(r"^([a-z -]+):\s+(.*)$", stdout, re.M))
    return {k.strip(): v for k, v in values.items()}


def spark_submit():
    path = Path(sys.executable).with_name("spark-submit")
    return str(path) if path.exists() else shutil.which("spark-submit")


@pytest.mark.slow
def test_train_digits_on_local_cluster_separate_executors():
    out = run_job([spark_submit(), "--master", "local-cluster[2,1,1024]",
                   "--conf", "spark.driver.host=127.0.0.1",
                   "jobs/train_digits.py", "--quiet", "--epochs", "10"])
    values = report(out)
    assert values["replicas"].startswith("2 on local-cluster[2,1,1024]")
    assert float(values["held-out accuracy"]) >= 0.93
    # 1437 rows in 4 partitions of 359-360 rows, merged into one replica per executor core:
    # 2 of 718-719 rows, 23 mini-batches of 32 each, one push apiece.
    assert int(values["updates applied"]) == 10 * 2 * 23
    assert re.match(r"mean \d+\.\d\d, max \d+", values["staleness"])


@pytest.mark.slow
def test_train_digits_on_a_local_spark_connect_server_on_a_free_loopback_port():
    # --remote local[2]: a Connect server inside the job's process. pyspark's own would take
    # port 15002 on every interface; held here, it would fail to start. (If something else
    # holds 15002 already, the job must still run.)
    import socket

    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 15002))
        holder.listen(1)
    except OSError:
        holder.close()
    try:
        values = report(run_job([sys.executable, "jobs/train_digits.py", "--remote", "local[2]",
                                 "--quiet", "--epochs", "5"]))
    finally:
        holder.close()
    assert float(values["held-out accuracy"]) >= 0.9
    assert int(values["updates applied"]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "libsvm"])
def test_train_digits_on_a_user_file(tmp_path, fmt):
    from sklearn.datasets import dump_svmlight_file, load_digits

    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    if fmt == "csv":
        path = tmp_path / "digits.csv"
        header = ",".join([f"p{i}" for i in range(64)] + ["label"])
        np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="",
                   fmt="%.5f")
    else:
        path = tmp_path / "digits.libsvm"
        dump_svmlight_file(x, y, str(path), zero_based=False)
    out = run_job([sys.executable, "jobs/train_digits.py", "--data", str(path), "--quiet",
                   "--epochs", "4", "--partitions", "2", "--plot", str(tmp_path / "curve.png")])
    values = report(out)
    assert str(path) in values["data"]
    assert values["training curve"] == str(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert float(values["held-out accuracy"]) >= 0.85


@pytest.mark.slow
def test_train_sandblaster_default_job_on_local_cluster(tmp_path):
    out = run_job([spark_submit(), "--master", "local-cluster[2,1,1024]",
                   "--conf", "spark.driver.host=127.0.0.1",
                   "jobs/train_sandblaster.py", "--quiet", "--num-shards", "2",
                   "--save-model", str(tmp_path / "m.keras"),
                   "--checkpoint-dir", str(tmp_path / "ckpt")])
    values = report(out)
    # The training curve lands beside the model.
    assert (tmp_path / "m-history.png").read_bytes().startswith(b"\x89PNG")
    assert "sample_binary_classification_data.txt" in values["data"]
    assert "local-cluster[2,1,1024]" in values["portions"] and "2 shard(s)" in values["portions"]
    assert values["portions"].endswith("resident evaluation")  # one long barrier stage
    assert values["stop reason"].split()[0] in ("tol", "gtol")
    assert 0 < int(values["iterations"]) < 100
    assert float(values["held-out accuracy"]) >= 0.89
    # After a lost driver: the same job with --resume goes on from the last checkpoint (here
    # the end point) on an embedded local session, numbering on after its iterations.
    assert list((tmp_path / "ckpt").glob("ckpt-*.npz"))
    again = report(run_job([sys.executable, "jobs/train_sandblaster.py", "--quiet",
                            "--checkpoint-dir", str(tmp_path / "ckpt"), "--resume"]))
    assert f"(after iteration {values['iterations']})" in again["resumed from"]
    # From the first run's end point the objective only goes down (the history restarts, so
    # it may take more small steps before tol says settled again).
    assert float(again["final objective"]) <= float(values["final objective"]) * (1 + 1e-6)
    assert float(again["held-out accuracy"]) >= 0.89


def test_train_sandblaster_refuses_a_bad_job_file(tmp_path):
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text('[sandblaster]\nmax_iters = 5\n')
    bad_kind = tmp_path / "bad_kind.toml"
    bad_kind.write_text('[model]\nkind = "forest"\n')
    bad_value = tmp_path / "bad_value.toml"
    bad_value.write_text('[sandblaster]\nhistory_size = 0\n')
    for path, message in [(bad_key, "unknown key(s) ['max_iters']; allowed:"),
                          (bad_kind, "kind = 'forest'; allowed: ('logistic', 'softmax', 'mlp')"),
                          (bad_value, "history_size must be >= 1, received 0"),
                          (ROOT / "conf" / "sandblaster.toml", "--resume needs --checkpoint-dir")]:
        resume = ["--resume"] if path.name == "sandblaster.toml" else []
        proc = subprocess.run([sys.executable, "jobs/train_sandblaster.py", "--conf-file",
                               str(path), "--quiet", *resume], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1",
                                                "PYSPARK_PYTHON": sys.executable})
        assert proc.returncode != 0
        assert message in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_generic_toml_job_on_local_cluster_saves_a_pipeline_that_loads(spark, tmp_path):
    from pyspark.ml import PipelineModel

    from sparkdownpour.jobdata import sample_data_path

    out = run_job([spark_submit(), "--master", "local-cluster[2,1,1024]",
                   "--conf", "spark.driver.host=127.0.0.1", "jobs/train.py",
                   "--conf-file", "conf/train.toml", "--quiet", "--output", str(tmp_path / "m")])
    values = report(out)
    assert "local-cluster[2,1,1024]" in values["master"]
    assert values["pipeline"] == "StandardScalerModel -> DownpourModel"
    assert float(values["held-out accuracy"]) >= 0.85
    fitted = PipelineModel.load(str(tmp_path / "m"))
    assert values["training curve"] == str(tmp_path / "m-history.png")
    assert (tmp_path / "m-history.png").read_bytes().startswith(b"\x89PNG")
    rows = spark.read.format("libsvm").load(
        sample_data_path("sample_multiclass_classification_data.txt"))
    predicted = fitted.transform(rows).select("label", "prediction").collect()
    assert np.mean([r.label == r.prediction for r in predicted]) >= 0.85


@pytest.mark.slow
def test_generic_toml_job_runs_sandblaster_on_numeric_csv_columns(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = (x @ [1.0, -2.0, 0.5] > 0).astype(int)
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="a,b,c,label",
               comments="", fmt="%.6f")
    conf = tmp_path / "job.toml"
    conf.write_text('[model]\nkind = "logistic"\n[train]\nalgorithm = "sandblaster"\n'
                    '[sandblaster]\nl2 = 1e-3\n[output]\npath = ""\n')
    values = report(run_job([sys.executable, "jobs/train.py", "--conf-file", str(conf),
                             "--data", str(path), "--quiet"]))
    assert values["pipeline"] == "VectorAssembler -> StandardScalerModel -> SandblasterModel"
    assert float(values["held-out accuracy"]) >= 0.95
    assert values["saved to"] == "(not saved)"


@pytest.mark.parametrize("toml,message", [
    ('[train]\nalgorithm = "adam"\n', "algorithm = 'adam'; allowed: ('downpour', 'sandblaster')"),
    ('[downpour]\nepoch = 3\n', "[downpour]: unknown key(s) ['epoch']; allowed:"),
    ('[downpour]\nlearning_rate = -1.0\n', "learning_rate must be a finite number > 0"),
    ('[sandblaster]\nhistory_size = 0\n[train]\nalgorithm = "sandblaster"\n',
     "history_size must be >= 1, received 0"),
    ('[model]\nhidden = [0]\n', "hidden = [0]; give a list of layer sizes >= 1"),
    ('[model]\nactivation = "wiggle"\n', "activation 'wiggle' is not a Keras activation"),
    ('[model]\nkind = "linear"\n', "kind = 'linear' does not do task = 'classification'"),
    ('[data]\ntest_fraction = 1.5\n', "test_fraction = 1.5; give a share in (0, 1)"),
    ('[data]\nscale = "yes"\n', "scale = 'yes'; give true or false"),
    ('[output]\npaht = "x"\n', "[output]: unknown key(s) ['paht']; allowed: ['overwrite', 'path']"),
    ('[outputs]\npath = "x"\n', "unknown section(s) ['outputs']"),
])
def test_generic_job_refuses_a_bad_toml_before_spark(tmp_path, toml, message):
    path = tmp_path / "job.toml"
    path.write_text(toml)
    job = load_job("train")
    with pytest.raises(ValueError) as info:
        job.job_settings(job.parse_args(["--conf-file", str(path)]))
    assert message in str(info.value)


def test_generic_job_exits_with_the_message_and_starts_no_spark(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('[downpour]\nepoch = 3\n')
    proc = subprocess.run([sys.executable, "jobs/train.py", "--conf-file", str(path), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    assert proc.returncode != 0
    assert "error: " in proc.stderr and "unknown key(s) ['epoch']" in proc.stderr
    assert "log4j" not in proc.stderr  # refused before a JVM started


def load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generic_job_help_documents_every_option():
    proc = subprocess.run([sys.executable, "jobs/train.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for option in ("--conf-file", "--data", "--format", "--features-col", "--label-col",
                   "--algorithm", "--output", "--quiet"):
        assert option in proc.stdout


WORKER_PYSPARK = """
from sparkdownpour.session import get_or_create_session

spark = get_or_create_session("sparkdownpour-worker-pyspark")


def where(_):
    import pyspark
    yield pyspark.__file__


print("worker pyspark:", spark.sparkContext.parallelize([0], 1).mapPartitions(where).first())
print("daemon module:", spark.sparkContext.getConf().get("spark.python.daemon.module", ""))
spark.stop()
"""


@pytest.mark.slow
def test_spark_submit_on_a_local_master_runs_workers_on_the_installed_pyspark(tmp_path):
    """worker_daemon under spark-submit too (a local master: the zips are the installed
    pyspark's); a daemon module given to spark-submit wins."""
    script = tmp_path / "worker_pyspark.py"
    script.write_text(WORKER_PYSPARK)
    ours = report(run_job([spark_submit(), "--master", "local[1]", str(script)]))
    assert ours["daemon module"] == "sparkdownpour.worker_daemon"
    assert ".zip" not in ours["worker pyspark"] and ours["worker pyspark"].endswith(".py")
    theirs = report(run_job([spark_submit(), "--master", "local[1]", "--conf",
                             "spark.python.daemon.module=pyspark.daemon", str(script)]))
    assert theirs["daemon module"] == "pyspark.daemon"
    assert "pyspark.zip" in theirs["worker pyspark"]
