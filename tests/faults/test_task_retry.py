"""Exactly-once under Spark task retries, in a separate driver process (local[2,4] retries)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "faults" / "train_driver.py"
# The sharded servers every fault test also runs under (issue 16): 4 shards, as driver threads
# and as child processes.
# One shard's runs train 7 epochs for their bar of 0.93: async digits runs on 4 partitions
# measured 0.931-0.956 held-out after 5 or 6 epochs (too close to the bar to be a sound test),
# 0.950-0.969 after 7 or 8.
EPOCHS = 7
SHARDED_MODES = {"threads": {"num_shards": 4},
                 "processes": {"num_shards": 4, "shard_processes": True}}


def driver_env() -> dict:
    """A fault driver's environment: this interpreter on both sides, loopback, the repository."""
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}


def run_driver(options, timeout=400, driver=DRIVER):
    proc = subprocess.run([sys.executable, str(driver), json.dumps(options)], cwd=ROOT,
                          env=driver_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def start_doomed_driver(options) -> subprocess.Popen:
    """A driver to be killed: in its own session, so a SIGKILL to its group takes its JVM and
    Python workers down with it (its stdout is there to read; its stderr is dropped)."""
    return subprocess.Popen([sys.executable, str(DRIVER), json.dumps(options)], cwd=ROOT,
                            env=driver_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)


def wait_for_mid_epoch_3(checkpoints, proc: subprocess.Popen, progressed) -> None:
    """Poll ``checkpoints`` until the latest has two epochs done and ``progressed(its ledger)``
    says some of the third is applied; fail if the driver finished before that."""
    from sparkdownpour.server.checkpoint import latest_checkpoint

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        state = latest_checkpoint(checkpoints)
        if state and state["extra"]["epochs_done"] >= 2 and progressed(state["ledger"]):
            return
        time.sleep(0.05)
    assert proc.poll() is None, "the driver finished before it could be killed"
    raise AssertionError("no checkpoint from the middle of epoch 3 within 300 s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_task_failing_halfway_is_retried_without_applying_anything_twice():
    # local[2,4]: two cores, up to 4 attempts per task. In epoch 2 every task's first attempt
    # raises after 5 of its 12 mini-batches (4 applied, the 5th computed but not pushed).
    # (One epoch only: a failed attempt's Python worker is replaced, and a new one spends
    # seconds importing TensorFlow.) One driver runs every case, so Spark and the workers
    # start once: one shard (against a clean run), then 4 threaded shards and 4 shard
    # processes (see test_sharded_faults.py).
    fail = {"after_steps": 5, "epoch": 2}
    clean, faulty, *sharded = run_driver({"master": "local[2,4]", "runs": [
        {"name": "clean", "knobs": {"epochs": EPOCHS}},
        {"name": "faulty", "knobs": {"epochs": EPOCHS}, "fail": fail},
        *({"name": mode, "knobs": {"epochs": 4, **knobs}, "fail": fail}
          for mode, knobs in SHARDED_MODES.items()),
        {"name": "default replicas", "knobs": {"epochs": 4, "num_replicas": None},
         "fail": fail},
        # pushes in the background: the failing attempt's last push may still be out
        {"name": "overlap", "knobs": {"epochs": 4, "overlap": True, **SHARDED_MODES["threads"]},
         "fail": fail},
    ]}, timeout=880)
    *sharded, merged, overlapped = sharded
    assert clean["updates"] == clean["expected_updates"] == EPOCHS * 48
    # Exactly once: the same number of applied updates as mini-batches; each of the 4 retries
    # skipped the 4 mini-batches its failed attempt had applied.
    assert faulty["updates"] == faulty["expected_updates"] == EPOCHS * 48
    assert faulty["skipped"] == 4 * 4
    assert faulty["accuracy"] >= 0.93 and abs(faulty["accuracy"] - clean["accuracy"]) <= 0.03
    # Sharded: on every shard, updates applied equal mini-batches pushed (4 pushed to every
    # shard before each failure, skipped by the retry).
    # (Four epochs: after three, async runs spread from 0.83 to 0.94 held-out; after four,
    # 0.94-0.95, so the bar below catches a model that stopped learning, not noise.)
    for run in sharded:
        assert run["expected_updates"] == 4 * 48
        assert run["shard_updates"] == [4 * 48] * 4, run
        assert run["skipped"] == 4 * 4 and run["accuracy"] >= 0.88, run
    # The default layout: the 4 partitions merged (no shuffle) into one replica per task slot.
    # A retried merged partition reads its rows in the same order, so its retry skips exactly
    # the 4 mini-batches its failed attempt applied: 2 tasks, 4 each.
    assert merged["replicas"] == 2, merged
    assert merged["updates"] == merged["expected_updates"] == 4 * 46, merged
    assert merged["skipped"] == 2 * 4 and merged["accuracy"] >= 0.88, merged
    # With overlap=True a task waits for its push in flight before it fails, so the server
    # holds the same 4 mini-batches of each failed attempt and the retries skip them.
    assert overlapped["shard_updates"] == [4 * 48] * 4, overlapped
    assert overlapped["skipped"] == 4 * 4 and overlapped["accuracy"] >= 0.88, overlapped
