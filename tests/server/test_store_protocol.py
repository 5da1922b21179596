"""Every store kind the driver talks to implements the written-down ``Store`` protocol."""

import inspect

import numpy as np
import pytest

from sparkdownpour import optimizers
from sparkdownpour.server.shards import ShardedStore
from sparkdownpour.server.store import ParameterStore
from sparkdownpour.server.store_process import StoreProcess
from sparkdownpour.server.store_protocol import Store

MEMBERS = [name for name, _ in inspect.getmembers(Store)
           if not name.startswith("_") and name not in dir(object)]


def test_the_protocol_lists_what_the_driver_uses():
    assert {"step", "fetch", "snapshot", "status", "export_state", "restore_state",
            "open_epoch", "progress", "set_params", "live_loss"} <= set(MEMBERS)


@pytest.mark.parametrize("kind", [ParameterStore, ShardedStore, StoreProcess])
def test_each_store_kind_has_every_member(kind):
    assert [name for name in MEMBERS if not hasattr(kind, name)] == []


def test_in_process_stores_are_stores_at_runtime():
    params = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]
    rule = optimizers.get("sgd", learning_rate=0.1)
    assert isinstance(ParameterStore(params, rule), Store)
    assert isinstance(ShardedStore(params, rule, 2), Store)
    assert not isinstance(object(), Store)
