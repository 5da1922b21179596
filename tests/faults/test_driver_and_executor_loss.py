"""Driver loss (SIGKILL, then fit(resume=True)) and executor loss (a Python worker killed)."""

import os
import signal

import pytest

from sparkdownpour.server.checkpoint import latest_checkpoint
from tests.faults.test_task_retry import EPOCHS, run_driver, start_doomed_driver, wait_for_mid_epoch_3


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_driver_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    knobs = {"epochs": EPOCHS, "checkpoint_dir": str(tmp_path), "checkpoint_every_updates": 10}
    proc = start_doomed_driver({"master": "local[2]", "runs": [{"name": "doomed", "knobs": knobs}]})
    try:
        wait_for_mid_epoch_3(tmp_path, proc, lambda ledger: ledger["progress"])
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and its Python workers
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
