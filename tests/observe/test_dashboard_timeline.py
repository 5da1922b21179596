"""The dashboard's time series starts with the run, not with the page: the server samples it
(bounded), and /v1/dashboard carries held-out metrics per epoch and progress with a time left."""

import time

import numpy as np

from sparkdownpour import optimizers
from sparkdownpour.observe.dashboard import DownpourView, Timeline
from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from sparkdownpour.transport.flask_app import BROWSER_AUTH


def test_timeline_is_bounded_and_always_reaches_back_to_the_start():
    timeline = Timeline(capacity=8, interval=1.0)
    for t in range(100):
        timeline.add(float(t), t)
        timeline.add(t + 0.5, -1)  # too soon after the last sample: ignored
    assert len(timeline.samples) < 8
    assert timeline.samples[0] == (0.0, 0)  # the run's first sample is kept
    assert timeline.samples[-1][0] >= 100 - 2 * timeline.interval
    gaps = {b[0] - a[0] for a, b in zip(timeline.samples, timeline.samples[1:])}
    assert len(gaps) == 1 and timeline.interval == 16.0  # even spacing, doubled when full


def test_the_server_samples_while_no_page_is_open():
    store = ParameterStore([np.zeros((2, 2), np.float32)], optimizers.get("sgd"))
    grads = [np.ones((2, 2), np.float32)]
    with ParameterServer(store, host="127.0.0.1") as server, \
            ParameterClient(server.url, server.token) as client:
        view = server.app.extensions["sparkdownpour.dashboard_view"]
        view.SAMPLE_S = view._timeline.interval = 0.05
        for i in range(12):  # about a second of pushes, nobody looking
            step, _ = client.fetch()
            client.push(grads, base_step=step, replica="r0", report={"loss": 2.0 - 0.1 * i})
            time.sleep(0.08)
        web = server.app.test_client()
        web.get(f"/login?code={server.app.extensions[BROWSER_AUTH].mint_code()}")
        sections = web.get("/v1/dashboard").json["sections"]
    # The first page load already draws the run from its start: many points, not one.
    points = int(sections["loss"].split('data-points="')[1].split('"')[0])
    assert points >= 5, sections["loss"]
    assert view._timeline.samples[0][0] < 0.5


class FakeStore:
    def __init__(self):
        self.applied, self.this_epoch, self.epoch = 0, 0, 1

    def status(self):
        return {"step": self.applied, "updates_applied": self.applied, "epoch": self.epoch,
                "this_epoch": {"updates_applied": self.this_epoch},
                "staleness": {"mean": 1.0, "max": 2, "histogram": {"1": self.applied}},
                "bytes_in": 0, "bytes_out": 0}

    def live_loss(self):
        return 1.0


def test_progress_and_time_left_and_held_out_metrics_per_epoch():
    clock = [0.0]
    store = FakeStore()
    view = DownpourView(store, clock=lambda: clock[0])
    view.plan = {"epochs": 2, "updates": 100}
    view.tick()  # t=0: nothing applied yet
    clock[0], store.applied, store.this_epoch = 10.0, 25, 25
    view.tick()
    sections = view.sections()
    progress = view.last_progress
    # 25 of 100 updates in 10 s: 75 left at 2.5 updates/s is 30 s; half of epoch 1 done.
    assert progress["fraction"] == 0.25 and progress["epoch_fraction"] == 0.5
    assert progress["eta_s"] == 30.0 and progress["epochs"] == 2
    assert "time left (estimate)" in sections["progress"] and "30 s" in sections["progress"]
    for epoch, (loss, acc) in enumerate([(0.9, 0.7), (0.5, 0.85)], start=1):
        view.note_record({"epoch": epoch, "loss": loss + 0.1, "val_loss": loss,
                          "val_accuracy": acc, "compute_share": acc - 0.05})
    sections = view.sections()
    assert 'data-points="2"' in sections["val_accuracy"] and "last 0.85" in sections["val_accuracy"]
    assert 'data-points="2"' in sections["val_loss"] and "last 0.5" in sections["val_loss"]
    assert 'data-points="2"' in sections["compute_share"] and "last 0.8" in sections["compute_share"]
    assert 'data-points="1"' in sections["staleness_time"]  # 25 updates at staleness 1
    store.applied, store.this_epoch, store.epoch = 100, 50, 2
    clock[0] = 40.0
    view.sections()
    assert view.last_progress["eta_s"] == 0.0 and view.last_progress["fraction"] == 1.0
