"""The failure model with a sharded server (num_shards=4), threaded shards and shard processes.

Each fault runs the digits MLP in its own driver process (``train_driver.py``) and checks, on
every shard, that the updates applied equal the mini-batches pushed: none lost, none doubled.
The one-shard versions of these tests are in ``test_task_retry.py`` (which also runs the
sharded task retries, in the same driver) and ``test_driver_and_executor_loss.py``; a shard
child dying is ``test_shard_death.py``.
"""

import os
import signal
import time

import pytest

from sparkdownpour.server.checkpoint import latest_checkpoint
from tests.faults.test_task_retry import (
    EPOCHS,
    SHARDED_MODES,
    run_driver,
    start_doomed_driver,
    wait_for_mid_epoch_3,
)
from tests.server.test_store_process import process_alive

SHARDS = 4
BATCHES = 48  # mini-batches an epoch: 1437 digits in 4 partitions of 32-row batches
MODES = SHARDED_MODES



def _exactly_once(run, epochs):
    assert run["expected_updates"] == epochs * BATCHES
    assert run["shard_updates"] == [epochs * BATCHES] * SHARDS, run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_python_worker_loses_and_doubles_no_update_on_any_shard():
    # One driver on local-cluster runs one shard, then both sharded modes, in turn (the
    # cluster starts once); in each, a replica's Python worker is SIGKILLed after 60 updates.
    single, *runs = run_driver({"master": "local-cluster[2,1,1024]", "runs": [
        {"name": "one shard", "knobs": {"epochs": EPOCHS}, "kill_worker_after": 60},
        *({"name": mode, "knobs": {"epochs": 4, **MODES[mode]}, "kill_worker_after": 60}
          for mode in MODES),
        # pushes in the background: the killed worker may have one half sent or unanswered
        {"name": "overlap", "knobs": {"epochs": 4, "overlap": True, **MODES["threads"]},
         "kill_worker_after": 60}]}, timeout=880)
    assert single["killed"]["pid"] > 0 and single["killed"]["at_update"] >= 60
    assert single["updates"] == single["expected_updates"] == EPOCHS * 48
    assert single["accuracy"] >= 0.93
    assert [run["name"] for run in runs] == [*MODES, "overlap"]
    for run in runs:
        assert run["killed"]["pid"] > 0 and run["killed"]["at_update"] >= 60, run
        _exactly_once(run, 4)
        # Four epochs, not three: after three, async runs on local-cluster spread from 0.83 to
        # 0.94 held-out with or without a kill (a CI run failed a 0.85 bar at 0.833); after four
        # they measured 0.94-0.95, so this bar catches a model that stopped learning, not noise.
        assert run["accuracy"] >= 0.88, run


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", list(MODES))
def test_a_killed_driver_resumes_every_shard_from_its_checkpoint(tmp_path, mode):
    epochs = 4
    knobs = {"epochs": epochs, "checkpoint_dir": str(tmp_path), "checkpoint_every_updates": 10,
             **MODES[mode]}
    # Shard children are left to notice their pipes close.
    proc = start_doomed_driver({"master": "local[2]", "runs": [{"name": "doomed", "knobs": knobs}]})
    shard_pids = []
    try:
        if mode == "processes":
            line = proc.stdout.readline()
            assert line.startswith("SHARD PIDS"), line
            shard_pids = [int(pid) for pid in line.split()[2:]]
        # some of the third epoch applied on some shard
        wait_for_mid_epoch_3(tmp_path, proc, lambda ledger: any(
            shard["progress"] for shard in ledger["shards"]))
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
        proc.wait(30)
        # Its shard children see their pipes close and exit; its JVM sees stdin close.
        deadline = time.monotonic() + 20
        while any(process_alive(pid) for pid in shard_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(process_alive(pid) for pid in shard_pids)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever else of its session is left
        except ProcessLookupError:
            pass
        proc.wait(30)
    killed_at = latest_checkpoint(tmp_path)
    (resumed,) = run_driver({"master": "local[2]",
                             "runs": [{"name": "resumed", "knobs": knobs, "resume": True}]})
    assert resumed["resumed_from"]["epochs_done"] >= 2
    assert resumed["resumed_from"]["step"] >= killed_at["step"]
    assert resumed["epochs_run"] == epochs - resumed["resumed_from"]["epochs_done"]
    # Updates after the checkpoint died with the driver and were redone; none twice anywhere.
    _exactly_once(resumed, epochs)
    assert resumed["accuracy"] >= 0.9, resumed
