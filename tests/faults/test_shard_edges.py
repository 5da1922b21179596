"""Bad input at the edges of sharding: a push cut off from one shard, a shard answering
another shard's range, a checkpoint of 4 shards resumed with 2."""

import socket
import threading

import numpy as np
import pytest

from sparkdownpour import Downpour, ParameterServerError
from sparkdownpour.server import ParameterServer, ParameterStore
from sparkdownpour.server.checkpoint import latest_checkpoint, write_checkpoint
from sparkdownpour.server.ledger import Position
from sparkdownpour.server.sharded_client import ShardedClient
from sparkdownpour.server.shards import ShardedStore, serve_all
from tests.server.conftest import PlainSGD

SHAPES = [(40, 10), (10,), (10, 3), (3,)]  # 443 parameters
TOKEN = "token-for-shard-edge-tests"
pytestmark = pytest.mark.timeout(60)


class CuttingProxy:
    """A TCP relay in front of one shard that can cut the next request's connection: before
    the request reaches the shard (``"request"``) or after the shard answered it
    (``"answer"``, so the shard applied a push whose answer never arrives)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut: str | None = None
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._relay, args=(client, upstream, "request"),
                             daemon=True).start()
            threading.Thread(target=self._relay, args=(upstream, client, "answer"),
                             daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while data := source.recv(1 << 16):
                if self.cut == direction and (direction == "answer" or b"/v1/update" in data):
                    self.cut, self.cuts = None, self.cuts + 1
                    break  # drop it and cut both ends
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def four_shards():
    rng = np.random.default_rng(5)
    initial = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    store = ShardedStore(initial, PlainSGD(1.0), 4)
    servers = [ParameterServer(s, host="127.0.0.1", token=TOKEN) for s in store.stores]
    with serve_all(servers):
        yield store, servers, initial


@pytest.mark.parametrize("cut", ["request", "answer"])
def test_a_push_cut_off_from_one_shard_is_completed_by_the_retry_and_applied_once(four_shards,
                                                                                  cut):
    store, servers, initial = four_shards
    store.open_epoch(1)
    proxy = CuttingProxy(servers[2].port)
    urls = [s.url for s in servers]
    urls[2] = proxy.url
    rng = np.random.default_rng(9)
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(3)]
    try:
        # retries=0: the cut push fails the replica's attempt, as a dead connection would.
        with ShardedClient(urls, TOKEN, SHAPES, timeout=10, retries=0) as client:
            steps, _ = client.fetch("r0")
            steps = client.push(grads[0], base_step=steps, replica="r0", return_params=True,
                                position=Position(1, 0, 0, 1)).step
            proxy.cut = cut
            with pytest.raises(ParameterServerError, match=proxy.url):
                client.push(grads[1], base_step=steps, replica="r0", return_params=True,
                            position=Position(1, 0, 1, 2))
            assert proxy.cuts == 1
        applied = [s["updates_applied"] for s in store.status()["shards"]]
        assert applied == [2, 2, 2 if cut == "answer" else 1, 2]
        # The retried attempt resumes where every shard has its mini-batches (the least
        # progress), re-pushes what some shard lacks, then goes on.
        with ShardedClient(urls, TOKEN, SHAPES, timeout=10, retries=0) as client:
            done = client.progress(1, 0, attempt=1)
            assert done == (2 if cut == "answer" else 1)
            steps, _ = client.fetch("r0")
            for k in range(done, 3):
                outcome = client.push(grads[k], base_step=steps, replica="r0",
                                      position=Position(1, 0, k, k + 1))
                assert outcome.applied, outcome
                steps = outcome.step
    finally:
        proxy.close()
    shards = store.status()["shards"]
    assert [s["updates_applied"] for s in shards] == [3, 3, 3, 3]  # none lost, none doubled
    assert [s["duplicates_refused"] for s in shards] == ([0] * 4 if cut == "answer"
                                                         else [1, 1, 0, 1])
    for got, first, *pushed in zip(store.snapshot(), initial, *grads):
        np.testing.assert_allclose(got, first - sum(pushed), rtol=1e-5, atol=1e-5)


def test_a_shard_answering_another_shards_range_is_named_not_merged(four_shards):
    _, servers, _ = four_shards
    urls = [s.url for s in servers]
    # 443 parameters over 4 shards: 111, 111, 111, 110. Shard 3's server given as shard 0's:
    urls[0], urls[3] = urls[3], urls[0]
    with ShardedClient(urls, TOKEN, SHAPES, timeout=10) as client, \
            pytest.raises(ParameterServerError) as raised:
        client.fetch()
    message = str(raised.value)
    assert message.startswith(f"parameter shard 0 of 4 at {servers[3].url} answered arrays of "
                              "shapes [(110,)], expected [(111,)] (parameters 0..110 of 443)")
    assert "shard order" in message


def test_a_checkpoint_of_four_shards_is_refused_by_two_shards_naming_both(four_shards, tmp_path):
    store, _, _ = four_shards
    path = write_checkpoint(tmp_path, store.export_state(), config_hash="written-by-4")
    with pytest.raises(ValueError, match=f"{path} was written by a 4-shard server and this run "
                                         "has num_shards=2: resume with num_shards=4"):
        latest_checkpoint(tmp_path, config_hash="another-hash", num_shards=2)
    with pytest.raises(ValueError, match="written by a 4-shard server, this one has 1"):
        ParameterStore([np.zeros(s, np.float32) for s in SHAPES], PlainSGD()).restore_state(
            latest_checkpoint(tmp_path))
    two = ShardedStore([np.zeros(s, np.float32) for s in SHAPES], PlainSGD(), 2)
    with pytest.raises(ValueError, match="written by a 4-shard server, this one has 2"):
        two.restore_state(latest_checkpoint(tmp_path))
    assert latest_checkpoint(tmp_path, num_shards=4)["step"] == 0  # the same count reads it


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_fit_resuming_a_four_shard_checkpoint_with_two_shards_refuses_before_training(
        spark, tmp_path):
    from sparkdownpour.examples import arrays_to_frame

    store = ShardedStore([np.zeros(s, np.float32) for s in [(4, 2), (2,)]], PlainSGD(), 4)
    write_checkpoint(tmp_path, store.export_state(), config_hash="whatever")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    frame = arrays_to_frame(spark, x, (x[:, 0] > 0).astype(np.int64), 2)

    def build():
        import keras
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])

    trainer = Downpour(build, num_shards=2, checkpoint_dir=str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match="4-shard server and this run has num_shards=2"):
        trainer.fit(frame, resume=True)
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
