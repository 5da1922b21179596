"""Replicas train on a thread below the server's priority where they share its cores."""

import os
import sys
import threading

import pytest

from sparkdownpour import Downpour
from sparkdownpour.callbacks import Callback
from sparkdownpour.examples import build_digits_mlp
from sparkdownpour.replica.priority import at_spec_nice, run_at_nice, thread_nice

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="per-thread nice is Linux's")


def test_the_work_runs_niced_on_its_own_thread_and_the_caller_keeps_its_priority():
    before = thread_nice()
    seen = run_at_nice(lambda: (threading.get_ident(), thread_nice()), 3)
    assert seen[0] != threading.get_ident()
    assert seen[1] == min(19, before + 3)
    assert thread_nice() == before  # the Python worker's own thread is untouched


def test_nice_zero_runs_in_the_caller_and_errors_come_back_as_raised_there():
    assert run_at_nice(threading.get_ident, 0) == threading.get_ident()

    def fails():
        raise ValueError("from the replica thread")

    with pytest.raises(ValueError, match="from the replica thread"):
        run_at_nice(fails, 2)


def test_every_modes_partition_function_runs_at_the_specs_nice():
    from types import SimpleNamespace

    def partition(batches, spec):  # the shape of run_partition, run_sync_partition, ...
        yield (list(batches), thread_nice())

    before = thread_nice()
    rows = at_spec_nice(partition, iter([1, 2]), SimpleNamespace(nice=4))
    assert list(rows) == [([1, 2], min(19, before + 4))]
    assert list(at_spec_nice(partition, iter([]), SimpleNamespace(nice=0))) == [([], before)]


def test_replica_nice_is_checked():
    from sparkdownpour import DownpourConfig

    with pytest.raises(ValueError, match=r"replica_nice must be in 0\.\.19, received 20"):
        DownpourConfig(replica_nice=20)
    with pytest.raises(TypeError, match="replica_nice must be an integer"):
        DownpourConfig(replica_nice="5")


@pytest.mark.slow
def test_on_a_local_master_replicas_compute_below_the_worker_priority(digits, tmp_path):
    frame, _ = digits
    out = str(tmp_path)

    class RecordPriority(Callback):  # defined here: shipped to the executors by value
        def on_replica_step(self, step):
            thread = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            worker = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's
            with open(os.path.join(out, f"{os.getpid()}-{threading.get_native_id()}"), "w") as f:
                f.write(f"{thread} {worker}")

    def fit(**knobs):
        for name in os.listdir(out):
            os.remove(os.path.join(out, name))
        result = Downpour(build_digits_mlp, epochs=1, verbose=0, **knobs).fit(
            frame, "features", "label", callbacks=[RecordPriority()])
        seen = {tuple(map(int, (tmp_path / name).read_text().split())) for name in os.listdir(out)}
        return result.history.info["replica_nice"], {t - w for t, w in seen}

    # local[2]: executors share the driver's (the server's) cores, so 5 by default
    assert fit() == (5, {5})
    assert fit(replica_nice=0, resident=True) == (0, {0})
