"""Downpour's parameter shards as child processes (``shard_processes=True``), on 127.0.0.1."""

import os
import signal
import socket

import numpy as np
import pytest
import requests

from sparkdownpour import optimizers
from sparkdownpour.errors import ParameterServerError
from sparkdownpour.observe.routes import create_status_app
from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from sparkdownpour.server.checkpoint import read_checkpoint, write_checkpoint
from sparkdownpour.server.ledger import Position
from sparkdownpour.server.sharded_client import ShardedClient
from sparkdownpour.server.shards import ShardedStore
from sparkdownpour.server.store_process import ProcessShardedServer

SHAPES = [(40, 10), (10,), (10, 3), (3,)]
TOKEN = "test-token-for-shard-processes"
pytestmark = pytest.mark.timeout(120)


def _params():
    rng = np.random.default_rng(7)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def _processes(num_shards, rule, **kwargs):
    return ProcessShardedServer(_params(), rule, num_shards, host="127.0.0.1", token=TOKEN,
                                max_request_bytes=1 << 24, **kwargs)


def _push_sequence(urls, num_shards, pushes=6):
    """The same pushes (with exactly-once positions) through the client replicas use."""
    rng = np.random.default_rng(3)
    if num_shards == 1:
        client = ParameterClient(urls[0], TOKEN, timeout=30)
    else:
        client = ShardedClient(urls, TOKEN, SHAPES, timeout=30)
    with client:
        steps, _ = client.fetch("r0")
        for k in range(pushes):
            grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
            steps = client.push(grads, base_step=steps, replica="r0", return_params=True,
                                position=Position(1, 0, k, k + 1)).step


@pytest.mark.parametrize("num_shards", [1, 3])
def test_shard_processes_apply_exactly_what_threaded_shards_apply(num_shards):
    rule = optimizers.get("adam", learning_rate=0.05)
    threaded = ParameterStore(_params(), rule) if num_shards == 1 else \
        ShardedStore(_params(), rule, num_shards)
    servers = [ParameterServer(s, host="127.0.0.1", token=TOKEN)
               for s in getattr(threaded, "stores", [threaded])]
    with _processes(num_shards, rule) as children:
        # The layout exists for one shard too (it raised AttributeError); it keeps the arrays.
        assert children.layout.num_shards == num_shards
        assert [a.shape for a in children.layout.merge(children.layout.split(_params()))] == \
            SHAPES
        children.store.open_epoch(1)
        threaded.open_epoch(1)
        for server in servers:
            server.start()
        try:
            _push_sequence([s.url for s in servers], num_shards)
            _push_sequence(children.urls, num_shards)
        finally:
            for server in servers:
                server.stop()
        for got, want in zip(children.store.snapshot(), threaded.snapshot()):
            np.testing.assert_array_equal(got, want)
        status = children.store.status()
        shards = status.get("shards", [status])
        assert [s["updates_applied"] for s in shards] == [6] * num_shards
        pids = [s["shard"]["pid"] for s in shards]
        assert pids == children.pids and os.getpid() not in pids and len(set(pids)) == num_shards
        assert children.store.progress(1, 0) == 6 and children.store.step == 6 * num_shards
    assert all(p.process is None for p in children.processes)


def test_a_checkpoint_of_shard_processes_restores_into_new_ones(tmp_path):
    rule = optimizers.get("adagrad", learning_rate=0.1)
    with _processes(3, rule) as first:
        first.store.open_epoch(1)
        _push_sequence(first.urls, 3, pushes=4)
        path = write_checkpoint(tmp_path, first.store.export_state(), config_hash="h")
        before = first.store.snapshot()
    state = read_checkpoint(path, config_hash="h")
    with _processes(3, rule) as again:
        again.store.restore_state(state)
        for a, b in zip(again.store.snapshot(), before):
            np.testing.assert_array_equal(a, b)
        assert again.store.progress(1, 0) == 4 and again.store.ledger.epoch == 1
    with _processes(2, rule) as other, pytest.raises(ValueError, match="3-shard"):
        other.store.restore_state(state)


def test_the_driver_may_call_only_the_store_commands():
    with _processes(1, optimizers.get("sgd")) as children:
        child = children.processes[0]
        for path in ("push", "_params", "rule.__class__"):
            with pytest.raises(KeyError, match="not a command"):
                child.call(path)
        assert child.call("step") == 0  # the channel is still in step after refusals


def test_a_killed_shard_process_is_named_and_the_others_still_stop():
    with _processes(2, optimizers.get("sgd")) as children:
        os.kill(children.pids[1], signal.SIGKILL)
        children.processes[1].process.join(10)
        with pytest.raises(ParameterServerError, match="sparkdownpour-shard-1 .*exit code -9"):
            children.store.status()
    assert all(p.process is None for p in children.processes)


def test_a_taken_port_fails_with_the_reason_and_starts_nothing():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = _processes(2, optimizers.get("sgd"), port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.__enter__()
    assert all(p.process is None for p in server.processes)


def test_the_driver_serves_status_and_metrics_over_every_shard_process():
    with _processes(2, optimizers.get("sgd")) as children, \
            ParameterServer(children.store, host="127.0.0.1", token=TOKEN,
                            app_factory=create_status_app) as dashboard:
        children.store.open_epoch(1)
        _push_sequence(children.urls, 2, pushes=3)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert requests.get(f"{dashboard.url}/v1/status", timeout=10).status_code == 401
        status = requests.get(f"{dashboard.url}/v1/status", headers=auth, timeout=10).json()
        assert status["num_shards"] == 2 and status["updates_applied"] == 3
        assert [s["shard"]["pid"] for s in status["shards"]] == children.pids
        metrics = requests.get(f"{dashboard.url}/metrics", headers=auth, timeout=10).text
        assert 'sparkdownpour_shard_updates_applied_total{shard="1"} 3.0' in metrics


def test_shard_processes_serve_tls_built_in_the_child(tmp_path):
    from tests.security.tls import self_signed

    cert, key = self_signed(tmp_path)
    with _processes(2, optimizers.get("sgd"), tls=(cert, key)) as children:
        assert all(url.startswith("https://127.0.0.1:") for url in children.urls)
        with ShardedClient(children.urls, TOKEN, SHAPES, timeout=10, ca_file=cert) as client:
            steps, params = client.fetch()
            assert steps == (0, 0) and [p.shape for p in params] == SHAPES
        with pytest.raises(ParameterServerError, match="CERTIFICATE_VERIFY_FAILED"):
            ParameterClient(children.urls[1], TOKEN, timeout=5, retries=0).fetch()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited); shared by the shard-process fault tests."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return "\nState:\tZ" not in handle.read()  # a zombie has exited
    except FileNotFoundError:
        return False


def test_children_exit_when_the_driver_is_killed():
    """A SIGKILLed driver cannot stop its children; each notices its pipe close and exits."""
    import subprocess
    import sys
    import time

    script = ("from sparkdownpour import optimizers\n"
              "from sparkdownpour.server.store_process import ProcessShardedServer\n"
              "import numpy as np, time\n"
              "with ProcessShardedServer([np.zeros(10, np.float32)], optimizers.get('sgd'), 2,"
              " host='127.0.0.1', token='t' * 20, max_request_bytes=1 << 20) as s:\n"
              "    print(*s.pids, flush=True)\n"
              "    time.sleep(120)\n")
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 2 and all(process_alive(p) for p in pids)
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 15
        while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(process_alive(p) for p in pids)
    finally:
        driver.kill()
