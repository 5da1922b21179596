"""No hangs: the server dies mid-run; fit raises ParameterServerError quickly, no job is left."""

import threading
import time

import pytest

from sparkdownpour import Downpour, ParameterServerError
from sparkdownpour.callbacks import LambdaCallback
from sparkdownpour.examples import build_digits_mlp


@pytest.mark.timeout(180)
def test_server_stopped_mid_run_fails_fast_and_cancels_the_job(digits, spark):
    frame, _ = digits
    trainer = Downpour(build_digits_mlp, epochs=50, verbose=0, request_timeout=5.0,
                       request_retries=2)
    stopped = {}

    def stop_when_training(server):
        def watch():
            while server.store.step < 60:  # well into the run, replicas mid-partition
                time.sleep(0.01)
            server.stop()
            stopped["at"] = time.monotonic()

        threading.Thread(target=watch, daemon=True).start()

    on_start = stop_when_training
    with pytest.raises(ParameterServerError, match="lost the parameter server"):
        trainer.fit(frame, callbacks=[LambdaCallback(on_server_start=on_start)])
    # local[2] runs each task once: the first replica that cannot connect fails the job.
    assert time.monotonic() - stopped["at"] < 30
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
