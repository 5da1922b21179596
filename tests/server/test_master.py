"""serve_master: which server a Downpour run gets, and its advice on shard sizes."""

import logging

import numpy as np

from sparkdownpour import optimizers
from sparkdownpour.server.master import serve_master
from sparkdownpour.server.shards import ShardedStore
from sparkdownpour.server.store import ParameterStore


def _serve(params, num_shards):
    return serve_master(params, optimizers.get("sgd"), num_shards=num_shards, processes=False,
                        store_kwargs={}, host="127.0.0.1", port=0, token=None,
                        max_request_bytes=1 << 20, tls=None)


def test_shards_above_32_mb_are_warned_about_with_a_shard_count_that_fits(caplog):
    big = [np.zeros((9_000_000,), np.float32)]  # 36 MB
    with caplog.at_level(logging.WARNING, logger="sparkdownpour.server.master"):
        with _serve(big, 1) as master:
            assert isinstance(master.store, ParameterStore) and master.shard_urls == ()
        assert "holds 34 MB" in caplog.text and "num_shards=2 keeps each under 28 MB" in caplog.text
        caplog.clear()
        with _serve(big, 2) as master:
            assert isinstance(master.store, ShardedStore) and len(master.shard_urls) == 2
            assert master.dashboard is master.server and len(master.server.token) >= 32
    assert caplog.text == ""
