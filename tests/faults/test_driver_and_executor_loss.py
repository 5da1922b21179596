"""Driver loss (SIGKILL, then fit(resume=True)) and executor loss (a Python worker killed)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sparkdownpour.server.checkpoint import latest_checkpoint
from tests.faults.test_task_retry import DRIVER, EPOCHS, ROOT, run_driver


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_driver_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    knobs = {"epochs": EPOCHS, "checkpoint_dir": str(tmp_path), "checkpoint_every_updates": 10}
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    options = {"master": "local[2]", "runs": [{"name": "doomed", "knobs": knobs}]}
    # Its own session, so the SIGKILL takes the driver's JVM and Python workers down with it.
    proc = subprocess.Popen([sys.executable, str(DRIVER), json.dumps(options)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            state = latest_checkpoint(tmp_path)
            # Mid-epoch 3: two epochs done and some of the third applied.
            if state and state["extra"]["epochs_done"] >= 2 and state["ledger"]["progress"]:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the driver finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = latest_checkpoint(tmp_path)
    (resumed,) = run_driver({"master": "local[2]",
                             "runs": [{"name": "resumed", "knobs": knobs, "resume": True}]})
    assert resumed["resumed_from"]["epochs_done"] >= 2
    assert resumed["resumed_from"]["step"] >= killed_at["step"]
    assert resumed["epochs_run"] == EPOCHS - resumed["resumed_from"]["epochs_done"]
    # Updates after the checkpoint died with the driver and were redone; none twice.
    assert resumed["updates"] == resumed["expected_updates"] == EPOCHS * 48
    assert resumed["accuracy"] >= 0.93


# The one-shard killed Python worker runs in test_sharded_faults.py's local-cluster driver,
# beside the sharded ones (the cluster starts once).
