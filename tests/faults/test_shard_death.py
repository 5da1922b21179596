"""A shard child SIGKILLed mid-epoch: fit raises within seconds naming the shard, its pid and
exit code; no Spark job is left running, no child outlives the fit; resume=True goes on from
the last checkpoint and every shard ends with each mini-batch applied exactly once."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from sparkdownpour import Downpour, ParameterServerError, optimizers
from sparkdownpour.callbacks import LambdaCallback
from sparkdownpour.examples import build_digits_mlp
from sparkdownpour.server.checkpoint import latest_checkpoint
from sparkdownpour.server.master import serve_master
from tests.server.test_store_process import process_alive


def _batches_per_epoch(frame, batch_size=32):
    return sum(-(-n // batch_size) for n in frame.rdd.glom().map(len).collect())


def _per_shard(status):
    return [(s["updates_applied"], s["duplicates_refused"]) for s in status.get("shards", [status])]


@pytest.mark.timeout(60)
def test_the_watchdog_names_a_dead_shard_child_and_the_master_raises_it():
    deaths = []
    params = [np.zeros((30, 4), np.float32), np.zeros(4, np.float32)]
    with pytest.raises(ParameterServerError) as raised:
        with serve_master(params, optimizers.get("sgd"), num_shards=3, processes=True,
                          store_kwargs={}, host="127.0.0.1", port=0, token=None,
                          max_request_bytes=1 << 20, tls=None,
                          on_shard_death=deaths.append) as master:
            server = master.server
            pids = list(server.pids)
            master.store.open_epoch(1)
            os.kill(pids[1], signal.SIGKILL)
            deadline = time.monotonic() + 5
            while not deaths and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(deaths) == 1, "the watchdog did not call on_shard_death"
            (death,) = deaths
            assert (death.index, death.of, death.pid, death.exitcode) == (1, 3, pids[1], -9)
            master.store.status()  # the driver's next call on the dead shard fails
    message = str(raised.value)
    assert message.startswith(f"parameter shard 1 of 3 (sparkdownpour-shard-1, pid {pids[1]}) "
                              f"died (exit code -9, killed by SIGKILL) mid-run"), message
    assert "fit(resume=True)" in message and "out-of-memory killer" in message
    assert isinstance(raised.value.__cause__, ParameterServerError)  # the pipe's own error
    assert not any(process_alive(p) for p in pids)
    assert all(p.process is None for p in server.processes)


@pytest.mark.timeout(60)
def test_a_clean_stop_of_shard_children_is_no_death():
    deaths = []
    with serve_master([np.zeros(10, np.float32)], optimizers.get("sgd"), num_shards=2,
                      processes=True, store_kwargs={}, host="127.0.0.1", port=0, token=None,
                      max_request_bytes=1 << 20, tls=None,
                      on_shard_death=deaths.append) as master:
        pids = list(master.server.pids)
    time.sleep(0.3)
    assert deaths == [] and not any(process_alive(p) for p in pids)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_shard_child_is_named_stops_the_run_and_resumes(digits, spark, tmp_path):
    frame, (x_test, y_test) = digits
    knobs = {"num_shards": 4, "shard_processes": True, "checkpoint_dir": str(tmp_path),
             "checkpoint_every_updates": 10, "verbose": 0, "request_timeout": 10.0,
             "num_replicas": 4}  # the frame's 4 partitions, as _batches_per_epoch counts them
    trainer = Downpour(build_digits_mlp, epochs=30, **knobs)
    killed = {}

    def kill_shard_2(server):
        killed["server"] = server
        killed["pids"] = list(server.pids)

        def watch():
            # Mid-epoch 2, after a checkpoint of it: 48 mini-batches an epoch on every shard.
            while True:
                state = latest_checkpoint(tmp_path)
                if state and state["extra"]["epochs_done"] >= 1 and state["ledger"]["shards"][2][
                        "progress"]:
                    break
                time.sleep(0.02)
            os.kill(server.pids[2], signal.SIGKILL)
            killed["at"] = time.monotonic()

        threading.Thread(target=watch, daemon=True).start()

    with pytest.raises(ParameterServerError) as raised:
        trainer.fit(frame, callbacks=[LambdaCallback(on_server_start=kill_shard_2)])
    seconds = time.monotonic() - killed["at"]
    message = str(raised.value)
    pid = killed["pids"][2]
    assert f"parameter shard 2 of 4 (sparkdownpour-shard-2, pid {pid})" in message, message
    assert "exit code -9, killed by SIGKILL" in message and "resume=True" in message
    assert seconds < 15, seconds
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
    assert not any(process_alive(p) for p in killed["pids"])
    assert all(p.process is None for p in killed["server"].processes)

    # A new fit resumes from the last checkpoint written before the death.
    last = latest_checkpoint(tmp_path)
    seen = {}
    again = Downpour(build_digits_mlp, epochs=4, **knobs)  # 4: see test_sharded_faults.py
    result = again.fit(frame, validation_data=(x_test, y_test), resume=True, callbacks=[
        LambdaCallback(on_server_start=lambda server: seen.update(server=server),
                       on_epoch_end=lambda epoch, logs: seen.update(
                           status=seen["server"].store.status()))])
    assert result.history.info["resumed_from"]["step"] == last["step"]
    assert result.history.info["resumed_from"]["epochs_done"] >= 1
    expected = 4 * _batches_per_epoch(frame)
    # On every shard: each mini-batch applied once, whatever each had applied at the kill.
    assert [applied for applied, _ in _per_shard(seen["status"])] == [expected] * 4
    assert result.history["val_accuracy"][-1] >= 0.88


def test_the_progress_bar_neither_masks_nor_dies_noisily_on_a_dead_shard():
    from sparkdownpour.observe.progress import ServerProgress

    class DeadStore:
        calls = 0

        def status(self):
            DeadStore.calls += 1
            if DeadStore.calls > 1:
                raise ParameterServerError("parameter shard 1 of 2 died")
            return {"updates_applied": 0, "staleness": {"mean": 0.0}}

    with pytest.raises(KeyError, match="the trainer's own error"):
        with ServerProgress(DeadStore(), 10, verbose=1, interval=0.01):
            time.sleep(0.2)  # the polling thread meets the dead shard and stops quietly
            raise KeyError("the trainer's own error")
    assert DeadStore.calls >= 2
