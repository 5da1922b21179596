"""Exactly-once under Spark task retries, in a separate driver process (local[2,4] retries)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "faults" / "train_driver.py"


def run_driver(options, timeout=400):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps(options)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_a_task_failing_halfway_is_retried_without_applying_anything_twice():
    # local[2,4]: two cores, up to 4 attempts per task. In epoch 2 every task's first attempt
    # raises after 5 of its 12 mini-batches (4 applied, the 5th computed but not pushed).
    # (One epoch only: a failed attempt's Python worker is replaced, and a new one spends
    # seconds importing TensorFlow.)
    clean, faulty = run_driver({"master": "local[2,4]", "runs": [
        {"name": "clean", "knobs": {"epochs": 5}},
        {"name": "faulty", "knobs": {"epochs": 5},
         "fail": {"after_steps": 5, "epoch": 2}},
    ]})
    assert clean["updates"] == clean["expected_updates"] == 5 * 48
    # Exactly once: the same number of applied updates as mini-batches; each of the 4 retries
    # skipped the 4 mini-batches its failed attempt had applied.
    assert faulty["updates"] == faulty["expected_updates"] == 5 * 48
    assert faulty["skipped"] == 4 * 4
    assert faulty["accuracy"] >= 0.93 and abs(faulty["accuracy"] - clean["accuracy"]) <= 0.03
