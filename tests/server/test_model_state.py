"""The model's non-trainable state on the server (``server.model_state``): reports, their mean,
the routes, shards, shard processes and checkpoints."""

import numpy as np
import pytest

from sparkdownpour import optimizers
from sparkdownpour.errors import ParameterServerError
from sparkdownpour.server import ParameterServer, ParameterStore
from sparkdownpour.server.checkpoint import read_checkpoint, write_checkpoint
from sparkdownpour.server.model_state import ModelState
from sparkdownpour.server.shards import ShardedServer, ShardedStore
from sparkdownpour.server.state_client import StateClient
from sparkdownpour.server.store_process import ProcessShardedServer

PARAMS = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]
STATE = [np.zeros(3, np.float32), np.ones(3, np.float32)]  # a BatchNorm's mean and variance
TOKEN = "test-token-model-state"


def values(mean, var):
    return [np.full(3, mean, np.float32), np.full(3, var, np.float32)]


def test_serves_the_initial_values_then_the_mean_of_each_partitions_latest_report():
    state = ModelState(STATE)
    version, arrays = state.fetch()
    np.testing.assert_array_equal(arrays[1], STATE[1])
    assert state.report(values(1.0, 2.0), epoch=1, partition=0)
    assert state.report(values(3.0, 4.0), epoch=1, partition=1)
    assert state.report(values(5.0, 6.0), epoch=1, partition=1)  # replaces partition 1's
    _, arrays = state.fetch()
    np.testing.assert_allclose(arrays[0], 3.0)  # (1 + 5) / 2
    np.testing.assert_allclose(arrays[1], 4.0)
    status = state.status()
    assert status["combine"] == "mean" and status["partitions_reporting"] == 2
    assert status["reports_received"] == 3 and status["version"] > version
    assert status["described"] == "mean of the latest report of each of 2 partition(s)"


def test_a_straggler_from_an_earlier_epoch_cannot_overwrite_a_later_report():
    state = ModelState(STATE)
    state.report(values(2.0, 2.0), epoch=3, partition=0)
    assert not state.report(values(9.0, 9.0), epoch=2, partition=0)
    np.testing.assert_allclose(state.fetch()[1][0], 2.0)
    assert state.status()["reports_refused"] == 1


@pytest.mark.parametrize("bad,message", [
    ([np.zeros(3)], "expected 2 state arrays"),
    ([np.zeros(4), np.ones(3)], "shape"),
    ([np.full(3, np.nan), np.ones(3)], "non-finite"),
])
def test_bad_reports_are_refused_and_change_nothing(bad, message):
    state = ModelState(STATE)
    with pytest.raises(ValueError, match=message):
        state.report(bad, epoch=1, partition=0)
    np.testing.assert_array_equal(state.fetch()[1][1], STATE[1])


def test_the_update_rule_never_touches_the_state():
    store = ParameterStore(PARAMS, optimizers.get("adagrad", learning_rate=0.5), state=STATE)
    store.model_state.report(values(1.0, 2.0), epoch=1, partition=0)
    store.push([np.ones((4, 3)), np.ones(3)], replica="r", base_step=0)
    np.testing.assert_allclose(store.fetch_state()[0], 1.0)
    assert store.status()["model_state"]["partitions_reporting"] == 1
    assert ParameterStore(PARAMS, optimizers.get("sgd")).fetch_state() == []
    assert "model_state" not in ParameterStore(PARAMS, optimizers.get("sgd")).status()


def test_replicas_read_and_report_over_http():
    store = ParameterStore(PARAMS, optimizers.get("sgd"), state=STATE)
    with ParameterServer(store, host="127.0.0.1", token=TOKEN) as server, \
            StateClient(server.url, TOKEN) as client:
        _, arrays = client.fetch_state()
        np.testing.assert_array_equal(arrays[1], STATE[1])
        assert client.report_state(values(2.0, 3.0), epoch=1, partition=0, attempt=1)
        assert not client.report_state(values(7.0, 7.0), epoch=0, partition=0)
        version, arrays = client.fetch_state()
        np.testing.assert_allclose(arrays[0], 2.0)
        np.testing.assert_allclose(arrays[1], 3.0)
        with pytest.raises(ParameterServerError, match="HTTP 400.*shape"):
            client.report_state([np.zeros(5), np.zeros(3)], epoch=1, partition=0)


def test_a_store_without_state_answers_404():
    store = ParameterStore(PARAMS, optimizers.get("sgd"))
    with ParameterServer(store, host="127.0.0.1", token=TOKEN) as server, \
            StateClient(server.url, TOKEN) as client:
        with pytest.raises(ParameterServerError, match="404.*no model state"):
            client.fetch_state()


def test_shard_zero_alone_holds_the_state_of_a_sharded_server():
    store = ShardedStore(PARAMS, optimizers.get("sgd"), 3, state=STATE)
    assert store.stores[0].model_state is not None
    assert [s.model_state for s in store.stores[1:]] == [None, None]
    with ShardedServer(store, host="127.0.0.1", token=TOKEN) as server, \
            StateClient(server.urls[0], TOKEN) as client:
        client.report_state(values(4.0, 5.0), epoch=1, partition=2)
    np.testing.assert_allclose(store.fetch_state()[1], 5.0)
    assert store.status()["model_state"]["partitions_reporting"] == 1
    exported = store.export_state()
    fresh = ShardedStore(PARAMS, optimizers.get("sgd"), 3, state=STATE)
    fresh.restore_state(exported)
    np.testing.assert_allclose(fresh.fetch_state()[0], 4.0)


def test_checkpoints_hold_the_state_and_restore_it(tmp_path):
    rule = optimizers.get("adagrad", learning_rate=0.1)
    store = ParameterStore(PARAMS, rule, state=STATE)
    store.push([np.ones((4, 3)), np.ones(3)], replica="r", base_step=0)
    store.model_state.report(values(0.5, 1.5), epoch=1, partition=0)
    path = write_checkpoint(tmp_path, store.export_state(), config_hash="h")
    state = read_checkpoint(path, config_hash="h")
    assert len(state["rule_arrays"]) == len(store.export_state()["rule_arrays"])
    fresh = ParameterStore(PARAMS, rule, state=STATE)
    fresh.restore_state(state)
    np.testing.assert_allclose(fresh.fetch_state()[0], 0.5)
    np.testing.assert_allclose(fresh.fetch_state()[1], 1.5)
    np.testing.assert_array_equal(fresh.snapshot()[0], store.snapshot()[0])
    # A checkpoint of a model without state still reads (and restores) as before.
    plain = ParameterStore(PARAMS, rule)
    state = read_checkpoint(write_checkpoint(tmp_path / "plain", plain.export_state(),
                                             config_hash="h"))
    assert state["model_state"] is None
    ParameterStore(PARAMS, rule, state=STATE).restore_state(state)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_shards", [1, 2])
def test_shard_processes_hold_the_state_in_shard_zero(num_shards):
    with ProcessShardedServer(PARAMS, optimizers.get("sgd"), num_shards, host="127.0.0.1",
                              token=TOKEN, max_request_bytes=1 << 20,
                              store_kwargs={"state": STATE}) as children, \
            StateClient(children.urls[0], TOKEN) as client:
        client.report_state(values(6.0, 7.0), epoch=1, partition=0)
        np.testing.assert_allclose(children.store.fetch_state()[1], 7.0)
        assert children.store.status()["model_state"]["partitions_reporting"] == 1
        exported = children.store.export_state()
        assert exported["model_state"]["arrays"][0][0] == 6.0
        if num_shards > 1:
            with StateClient(children.urls[1], TOKEN) as other, \
                    pytest.raises(ParameterServerError, match="404"):
                other.fetch_state()
