"""Sandblaster's vector shards: the program interpreter and its HTTP routes on 127.0.0.1."""

import http.client
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.lbfgs.shard_server import ShardGroup
from sparkdownpour.lbfgs.vector_client import VectorClient, fetch_vector
from sparkdownpour.lbfgs.vectors import LocalVectors, VectorOpError, VectorShard, shard_bounds


@given(st.integers(1, 10_000), st.integers(1, 64))
def test_shard_bounds_cover_the_vector_contiguously_and_evenly(size, shards):
    if shards > size:
        with pytest.raises(ValueError, match="more than"):
            shard_bounds(size, shards)
        return
    bounds = shard_bounds(size, shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    lengths = [hi - lo for lo, hi in bounds]
    assert max(lengths) - min(lengths) <= 1


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_sharded_programs_equal_numpy_on_the_whole_vector(size, shards, seed):
    shards = min(shards, size)
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=size), rng.normal(size=size)
    space = LocalVectors(size, shards)
    result = space.run([["lincomb", "c", [["a", 2.0], ["b", -0.5]]], ["mul", "m", "a", "b"],
                        ["dot", "a", "b"], ["dot", "c", "m"], ["get", "c"]],
                       puts={"a": a, "b": b})
    c = 2.0 * a - 0.5 * b
    assert result.dots == pytest.approx([a @ b, c @ (a * b)], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(result.gets["c"], c, rtol=1e-12)


def test_a_bad_program_changes_nothing():
    shard = VectorShard(3)
    shard.run([], puts={"x": np.ones(3)})
    with pytest.raises(VectorOpError, match="no vector named 'missing'"):
        shard.run([["lincomb", "x", [["x", 2.0]]], ["dot", "x", "missing"]])
    np.testing.assert_array_equal(shard.get("x"), np.ones(3))
    for bad in (["explode", "x"], ["lincomb", "y", [["x", float("nan")]]], "lincomb",
                ["lincomb", "y", [["x"]]], ["get", "x" * 100]):
        with pytest.raises(VectorOpError):
            shard.run([bad])
    with pytest.raises(VectorOpError, match="has 4 values, this shard holds 3"):
        shard.run([], puts={"y": np.ones(4)})
    assert shard.names() == ["x"]


@pytest.fixture
def group():
    with ShardGroup(10, 3) as shards:
        yield shards


def test_remote_shards_run_programs_and_serve_slices(group):
    values = np.arange(10, dtype=np.float64)
    result = group.space.run([["lincomb", "y", [["v", 3.0]]], ["dot", "v", "y"], ["get", "y"]],
                             puts={"v": values})
    assert result.dots == [pytest.approx(3.0 * values @ values)]
    np.testing.assert_array_equal(result.gets["y"], 3.0 * values)
    # Every shard holds only its own slice; executors reassemble the vector.
    assert [shard.size for shard in group.shards] == [4, 3, 3]
    clients = [VectorClient(url, group.token) for url in group.urls]
    np.testing.assert_array_equal(fetch_vector(clients, "y"), (3.0 * values).astype(np.float32))
    assert [c.status()["fetches"] for c in clients] == [1, 1, 1]


def test_shards_refuse_strangers_bad_frames_pickles_and_nan(group):
    url = group.urls[0]
    with pytest.raises(ParameterServerError, match="401"):
        VectorClient(url, "wrong-token").get("x")
    with pytest.raises(ParameterServerError, match="404.*no vector named 'nothing'"):
        VectorClient(url, group.token).get("nothing")
    host, port = url.removeprefix("http://").split(":")
    for body in (pickle.dumps({"program": []}), b"SDPW garbage"):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST", "/v1/vec/run", body=body,
                     headers={"Authorization": f"Bearer {group.token}"})
        response = conn.getresponse()
        assert response.status == 400 and b"bad vector program" in response.read()
        conn.close()
    with pytest.raises(ParameterServerError, match="400.*non-finite"):
        group.space.run([], puts={"bad": np.full(10, np.nan)})
    assert group.shards[0].names() == []


def test_shard_servers_stop_together():
    with ShardGroup(4, 2) as shards:
        urls = shards.urls
    for url in urls:
        with pytest.raises(ParameterServerError):
            VectorClient(url, shards.token, retries=0, timeout=2).get("x")


def test_shards_in_their_own_processes_hold_the_slices_away_from_the_driver():
    import os

    values = np.arange(7, dtype=np.float64)
    with ShardGroup(7, 2, processes=True) as group:
        assert group.shards == []  # nothing held in this process
        result = group.space.run([["lincomb", "y", [["v", -2.0]]], ["dot", "v", "y"],
                                  ["get", "y"]], puts={"v": values})
        assert result.dots == [pytest.approx(-2.0 * values @ values)]
        np.testing.assert_array_equal(result.gets["y"], -2.0 * values)
        statuses = [VectorClient(url, group.token).status() for url in group.urls]
        pids = {status["pid"] for status in statuses}
        assert len(pids) == 2 and os.getpid() not in pids
        assert [status["size"] for status in statuses] == [4, 3]
        processes = [server.process for server in group.servers]
    assert not any(process.is_alive() for process in processes)
    for url in group.urls:
        with pytest.raises(ParameterServerError):
            VectorClient(url, group.token, retries=0, timeout=2).get("y")
