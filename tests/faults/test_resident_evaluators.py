"""Sandblaster's resident evaluators under a killed Python worker (local[2,4]: task retries)."""

import pytest

from tests.faults.test_task_retry import ROOT, run_driver


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_resident_evaluators_are_rerun_and_the_fit_ends_where_a_clean_one_does():
    # Every Python worker is SIGKILLed after iteration 3: the barrier stage of resident
    # evaluators fails, Spark reruns all its tasks, they re-read their cached blocks and answer
    # the evaluation in progress; a portion's report for it counts once.
    clean, killed = run_driver({"master": "local[2,4]", "kill_at_iteration": 3},
                               driver=ROOT / "tests" / "faults" / "sandblaster_driver.py",
                               timeout=580)
    assert clean["evaluation"] == killed["evaluation"] == "resident"
    assert clean["portions"] == killed["portions"] == 2
    assert len(killed["killed"]) >= 2, killed  # both evaluators (and any idle worker)
    # The same minimum (float32 evaluations: runs agree to about the line search's f_noise,
    # not bit for bit, so the iteration counts may differ by one or two).
    assert killed["iterations"] > 3 and clean["iterations"] > 3
    assert killed["objective"] == pytest.approx(clean["objective"], rel=1e-7)
