"""The spark-submit jobs, run as a user runs them: separate processes, real executors."""

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
    assert "local-cluster[2,1,1024]" in values["replicas"]
    assert float(values["held-out accuracy"]) >= 0.93
    # 1437 rows in 4 partitions of 359-360 rows: 12 mini-batches of 32 each, one push apiece.
    assert int(values["updates applied"]) == 10 * 4 * 12
    assert re.match(r"mean \d+\.\d\d, max \d+", values["staleness"])


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
                   "--epochs", "4", "--partitions", "2"])
    values = report(out)
    assert str(path) in values["data"]
    assert float(values["held-out accuracy"]) >= 0.85
