"""Resident replicas (``resident=True``) under a killed Python worker.

With resident replicas one barrier stage trains every epoch. A Python worker SIGKILLed mid-run
fails its task; Spark then reruns the whole stage, and the new tasks resume every partition
where the server's ledger says it got to. Checked, on one shard and on 4 shard processes:
updates applied equal mini-batches pushed on every shard (none lost, none doubled) and the
model trains as well as without the fault (``test_sharded_faults.py`` has the same checks for
a job per epoch).
"""

import pytest

from tests.faults.test_task_retry import SHARDED_MODES, run_driver

BATCHES = 48  # mini-batches an epoch: 1437 digits in 4 partitions of 32-row batches


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_python_worker_reruns_the_resident_stage_applying_each_batch_once():
    runs = run_driver({"master": "local-cluster[2,1,1024]", "runs": [
        {"name": name, "knobs": {"epochs": 4, "resident": True, **knobs},
         "kill_worker_after": 60}
        for name, knobs in [("one shard", {}), ("processes", SHARDED_MODES["processes"])]]},
        timeout=880)
    assert [run["name"] for run in runs] == ["one shard", "processes"]
    for run, shards in zip(runs, (1, 4)):
        assert run["epoch_jobs"] == ("one resident Spark stage: 4 partitions in 2 tasks on 2 "
                                     "task slots"), run
        assert run["killed"]["pid"] > 0 and run["killed"]["at_update"] >= 60, run
        assert run["updates"] == run["expected_updates"] == 4 * BATCHES, run
        assert run["shard_updates"] == [4 * BATCHES] * shards, run
        assert run["accuracy"] >= 0.88, run  # four epochs: see test_sharded_faults.py
