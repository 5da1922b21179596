"""Exactly-once pushes: the progress ledger in the store and its HTTP face (409, /v1/progress)."""

import json
import threading

import numpy as np
import pytest

from sparkdownpour.server import ParameterClient, ParameterStore
from sparkdownpour.server.ledger import Position, position_from_meta
from sparkdownpour.transport.frames import encode_frame
from tests.server.conftest import PlainSGD, full, zeros
from tests.server.test_app import request

pytestmark = pytest.mark.timeout(60)


def pos(begin, end, partition=0, epoch=1, attempt=0):
    return Position(epoch, partition, begin, end, attempt)


def test_each_position_is_applied_once_and_duplicates_are_counted():
    store = ParameterStore(zeros(), PlainSGD())
    store.open_epoch(1)
    assert store.push(full(1), replica="a", base_step=0, position=pos(0, 2)).applied
    before = store.snapshot()
    again = store.push(full(1), replica="b", base_step=0, position=pos(0, 2, attempt=1))
    assert (again.applied, again.refusal, again.progress) == (False, "duplicate", 2)
    ahead = store.push(full(1), replica="b", base_step=0, position=pos(3, 4))
    assert (ahead.applied, ahead.refusal) == (False, "out_of_order")
    straddle = store.push(full(1), replica="b", base_step=0, position=pos(1, 3))
    assert straddle.refusal == "out_of_order"
    assert all(np.array_equal(a, b) for a, b in zip(store.snapshot(), before))
    assert store.push(full(1), replica="b", base_step=1, position=pos(2, 3)).applied
    store.open_epoch(2)
    late = store.push(full(1), replica="a", base_step=2, position=pos(3, 4, epoch=1))
    assert (late.applied, late.refusal) == (False, "closed_epoch")
    status = store.status()
    assert status["updates_applied"] == status["step"] == 2
    assert status["refused"] == {"duplicate": 1, "out_of_order": 2, "closed_epoch": 1}
    assert status["duplicates_refused"] == 1
    assert store.progress(1, 0) == 0  # epoch 1 is closed: its progress was dropped
    assert store.progress(2, 0, attempt=3, pid=77) == 0
    assert store.status()["attempts"] == {"0": {"epoch": 2, "attempt": 3, "pid": 77}}


@pytest.mark.parametrize("racers", [2, 8])
def test_racing_attempts_never_apply_the_same_step_twice(racers):
    """Speculative attempts of one partition push the same 200 steps at the same time."""
    store = ParameterStore(zeros(), PlainSGD())
    store.open_epoch(1)
    applied = [0] * racers
    barrier = threading.Barrier(racers)

    def attempt(a):
        barrier.wait()
        step = 0
        while step < 200:
            result = store.push(full(1), replica=f"a{a}", base_step=0,
                                position=pos(step, step + 1, attempt=a))
            applied[a] += result.applied
            step = step + 1 if result.applied else result.progress  # skip ahead like a replica

    threads = [threading.Thread(target=attempt, args=(a,)) for a in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(applied) == store.step == 200
    assert all(np.array_equal(p, q) for p, q in zip(store.snapshot(), full(-200)))
    assert store.progress(1, 0) == 200


@pytest.mark.parametrize("meta, message", [
    ({"epoch": 1, "partition": 0}, "missing"),
    ({"epoch": 1, "partition": 0, "begin": 2, "end": 2, "attempt": 0}, "must be greater"),
    ({"epoch": -1, "partition": 0, "begin": 0, "end": 1, "attempt": 0}, "'epoch' must be"),
    ({"epoch": 1.5, "partition": 0, "begin": 0, "end": 1, "attempt": 0}, "'epoch' must be"),
    ({"epoch": True, "partition": 0, "begin": 0, "end": 1, "attempt": 0}, "'epoch' must be"),
    ({"loss": "low"}, "'loss' must be a number"),
    ({"nonfinite": -1}, "'nonfinite' must be"),
    ({"batches": 0}, "'batches' must be at least 1"),
    ({"batches": 2.5}, "'batches' must be"),
    ({"__reduce__": 1}, "unknown meta field"),
])
def test_bad_meta_is_refused_with_the_field_named(meta, message):
    with pytest.raises(ValueError, match=message):
        position_from_meta(meta)


def test_http_duplicate_is_409_and_progress_route(server, store):
    store.open_epoch(4)
    meta = {"epoch": 4, "partition": 2, "begin": 0, "end": 3, "attempt": 0, "loss": 1.5}
    frame = encode_frame(full(1), kind="update", step=0, replica="p2-a0", meta=meta)
    status, _, data = request(server, "POST", "/v1/update", frame, token=server.token)
    assert status == 200 and json.loads(data)["progress"] == 3
    status, _, data = request(server, "POST", "/v1/update?return_params=1", frame,
                              token=server.token)
    body = json.loads(data)
    assert status == 409 and body["refusal"] == "duplicate" and body["progress"] == 3
    assert "partition 2 of epoch 4 is at mini-batch 3" in body["error"]
    status, _, data = request(server, "GET", "/v1/progress?epoch=4&partition=2&attempt=1&pid=9",
                              token=server.token)
    assert status == 200 and json.loads(data) == {"epoch": 4, "partition": 2, "applied": 3}
    for query in ("epoch=4", "epoch=x&partition=1", "epoch=4&partition=%C2%B2",
                  f"epoch={2**60}&partition=0"):
        status, _, data = request(server, "GET", f"/v1/progress?{query}", token=server.token)
        assert status == 400, query
    assert store.step == 1 and store.status()["attempts"]["2"] == {"epoch": 4, "attempt": 1,
                                                                    "pid": 9}


def test_client_reports_a_refused_duplicate_instead_of_raising(server, store):
    with ParameterClient(server.url, server.token, timeout=5) as client:
        first = client.push(full(1), base_step=0, replica="r", position=pos(0, 1))
        assert first.applied and first.progress == 1
        second = client.push(full(1), base_step=1, replica="r", position=pos(1, 2),
                             return_params=True)
        assert second.step == 2 and second.progress == 2 and second.params is not None
        again = client.push(full(1), base_step=0, replica="r", position=pos(0, 1),
                            return_params=True)
        assert again == (2, -1, False, 2, "duplicate", None)  # no parameters with a refusal
        assert client.progress(1, 0) == 2
    assert store.step == 2


def test_diverging_replica_is_reported_in_status():
    store = ParameterStore(zeros(), PlainSGD(), divergence_factor=4.0)
    for loss in [2.0, 1.0, 0.5, 0.5, 0.5, 0.5]:
        store.push(full(0), replica="calm", base_step=0, report={"loss": loss})
        store.push(full(0), replica="wild", base_step=0, report={"loss": loss})
    assert store.status()["diverging"] == {}
    for loss in [5.0, 20.0, 80.0]:
        store.push(full(0), replica="wild", base_step=0, report={"loss": loss})
    store.push(full(0), replica="nan", base_step=0, report={"loss": float("nan"), "nonfinite": 2})
    diverging = store.status()["diverging"]
    assert set(diverging) == {"wild", "nan"}
    assert "4x its best" in diverging["wild"]["reason"] and diverging["nan"]["loss"] is None
    assert store.status()["nonfinite_skipped"] == 2
    json.dumps(store.status())
