"""Sharded server: exact split/merge, independent shards over real HTTP, nothing lost under
concurrent pushes, per-shard status, exactly-once and checkpoints per shard."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkdownpour import optimizers
from sparkdownpour.server import ParameterServer
from sparkdownpour.server.checkpoint import read_checkpoint, write_checkpoint
from sparkdownpour.server.client import PushOutcome
from sparkdownpour.server.layout import ShardLayout
from sparkdownpour.server.ledger import Position
from sparkdownpour.server.sharded_client import ShardedClient, combine_outcomes
from sparkdownpour.server.shards import ShardedStore, serve_all
from tests.server.conftest import PlainSGD

shapes_st = st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
                     min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(shapes=shapes_st, data=st.data())
def test_split_then_merge_is_exact_for_any_model_and_shard_count(shapes, data):
    size = sum(int(np.prod(s)) for s in shapes)
    n = data.draw(st.integers(1, max(size, 1)))
    rng = np.random.default_rng(size)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    layout = ShardLayout(shapes, n)
    parts = layout.split(arrays)
    assert len(parts) == n
    sizes = [sum(a.size for a in p) for p in parts]
    assert sum(sizes) == size and max(sizes) - min(sizes) <= 1
    for got, want in zip(layout.merge(parts), arrays):
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.array_equal(got, want)  # bit for bit


def test_too_many_shards_is_refused_with_the_limit():
    with pytest.raises(ValueError, match="num_shards=7 is more than the 6 parameters"):
        ShardLayout([(2, 3)], 7)


SHAPES = [(40, 10), (10,), (10, 3), (3,)]


@pytest.fixture
def sharded():
    store = ShardedStore([np.zeros(s, np.float32) for s in SHAPES], PlainSGD(1.0), 4)
    servers = [ParameterServer(s, host="127.0.0.1", token="t0k") for s in store.stores]
    with serve_all(servers):
        yield store, [s.url for s in servers]


@pytest.mark.timeout(60)
def test_concurrent_pushes_to_four_shards_from_eight_threads_lose_nothing(sharded):
    store, urls = sharded
    sums = [[np.zeros(s, np.float64) for s in SHAPES] for _ in range(8)]
    errors, pushes = [], 15

    def replica(r):
        rng = np.random.default_rng(r)
        try:
            with ShardedClient(urls, "t0k", SHAPES, timeout=30) as client:
                steps, _ = client.fetch(f"r{r}")
                for k in range(pushes):
                    grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
                    out = client.push(grads, base_step=steps, replica=f"r{r}",
                                      return_params=bool(k % 2))
                    steps = out.step
                    assert out.applied and (out.params is not None) == bool(k % 2)
                    for total, g in zip(sums[r], grads):
                        total += g
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(r,)) for r in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    status = store.status()
    assert [s["updates_applied"] for s in status["shards"]] == [8 * pushes] * 4
    assert [s["shard"]["index"] for s in status["shards"]] == [0, 1, 2, 3]
    assert status["updates_applied"] == 8 * pushes and status["num_shards"] == 4
    for got, want in zip(store.snapshot(), [-sum(s[i] for s in sums) for i in range(4)]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_each_shard_has_its_own_step_and_status_route(sharded):
    store, urls = sharded
    with ShardedClient(urls, "t0k", SHAPES) as client:
        steps, params = client.fetch()
        assert steps == (0, 0, 0, 0) and [p.shape for p in params] == SHAPES
        # Push to shard 2 alone: only its step moves.
        client.clients[2].push([np.ones(store.layout.shard_shapes(2)[0], np.float32)],
                               base_step=0, replica="x")
        steps, _ = client.fetch()
        assert steps == (0, 0, 1, 0)
        routes = client.status()
    assert [r["step"] for r in routes] == [0, 0, 1, 0]
    lo, hi = store.layout.bounds[2]
    assert routes[2]["shard"] == {"index": 2, "of": 4, "range": [lo, hi]}


def test_exactly_once_per_shard_a_retry_completes_a_half_applied_push(sharded):
    """A push that reached only shard 0 (the attempt died) is completed by the retry:
    shard 0 refuses its copy as a duplicate, the others apply it; the sum is applied once."""
    store, urls = sharded
    store.open_epoch(1)
    grads = [np.ones(s, np.float32) for s in SHAPES]
    position = Position(1, 0, 0, 1)
    with ShardedClient(urls, "t0k", SHAPES) as client:
        part = store.layout.split(grads)[0]
        client.clients[0].push(part, base_step=0, replica="a0", position=position)
        assert client.progress(1, 0) == 0  # the least progress over the shards
        client.push(grads, base_step=(0, 0, 0, 0), replica="a1", position=position)
        assert client.last_push.applied and client.progress(1, 0) == 1
        client.push(grads, base_step=(1, 1, 1, 1), replica="a1", position=position)
        assert (client.last_push.applied, client.last_push.refusal) == (False, "duplicate")
    for p in store.snapshot():
        np.testing.assert_array_equal(p, -1.0)
    assert store.status()["duplicates_refused"] == 4 + 1  # shard 0 once, then all four


def test_combined_outcome_stops_on_out_of_order_anywhere():
    ok = PushOutcome(step=3, staleness=0, applied=True, progress=2, refusal=None)
    bad = PushOutcome(step=3, staleness=-1, applied=False, progress=5, refusal="out_of_order")
    combined = combine_outcomes([ok, bad])
    assert (combined.refusal, combined.applied, combined.step) == ("out_of_order", False, (3, 3))


def test_checkpoint_of_a_sharded_store_round_trips(tmp_path):
    rule = optimizers.get("adam", learning_rate=0.1)
    store = ShardedStore([np.zeros(s, np.float32) for s in SHAPES], rule, 3)
    store.open_epoch(1)
    rng = np.random.default_rng(0)
    for k in range(3):
        grads = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        for shard, part in zip(store.stores, store.layout.split(grads)):
            shard.push(part, replica="r", base_step=shard.step, position=Position(1, 0, k, k + 1))
    path = write_checkpoint(tmp_path, store.export_state(), config_hash="h")
    again = ShardedStore([np.zeros(s, np.float32) for s in SHAPES], rule, 3)
    again.restore_state(read_checkpoint(path, config_hash="h"))
    for a, b in zip(again.snapshot(), store.snapshot()):
        np.testing.assert_array_equal(a, b)
    assert again.progress(1, 0) == 3 and [s.step for s in again.stores] == [3, 3, 3]
    grads = [np.ones(s, np.float32) for s in SHAPES]
    for x in (store, again):  # the rule state came back too: the next update agrees
        for shard, part in zip(x.stores, x.layout.split(grads)):
            shard.push(part, replica="r", base_step=shard.step)
    for a, b in zip(again.snapshot(), store.snapshot()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="3-shard"):
        ShardedStore([np.zeros(s, np.float32) for s in SHAPES], rule, 2).restore_state(
            read_checkpoint(path))


def test_stale_pushes_are_refused_over_http_and_counted_per_shard():
    store = ShardedStore([np.zeros(s, np.float32) for s in SHAPES], PlainSGD(1.0), 2,
                         max_staleness=0)
    servers = [ParameterServer(s, host="127.0.0.1", token="t0k") for s in store.stores]
    grads = [np.ones(s, np.float32) for s in SHAPES]
    with serve_all(servers), ShardedClient([s.url for s in servers], "t0k", SHAPES) as a, \
            ShardedClient([s.url for s in servers], "t0k", SHAPES) as b:
        steps_a, _ = a.fetch("a")
        steps_b, _ = b.fetch("b")
        a.push(grads, base_step=steps_a, replica="a")
        out = b.push(grads, base_step=steps_b, replica="b", return_params=True)
        assert out.params is None  # refused everywhere: no parameters come back
        assert (out.applied, out.refusal, out.staleness) == (False, "stale", 1)
        steps_b, _ = b.fetch("b")  # the replica refetches, then its push is fresh again
        assert b.push(grads, base_step=steps_b, replica="b").applied
    status = store.status()
    assert [s["stale_refused"] for s in status["shards"]] == [1, 1]
    assert status["stale_refused"] == 2 and status["updates_applied"] == 2
    for p in store.snapshot():
        np.testing.assert_array_equal(p, -2.0)


def test_sync_round_answers_wait_for_the_last_push_and_time_out_alone():
    """Two replicas' round: the first answer comes only once the second push applied the
    mean; a round whose other replica never comes is abandoned after sync_timeout."""
    from sparkdownpour.server import ParameterStore
    from sparkdownpour.server.sync import SyncTag

    store = ParameterStore([np.zeros(2, np.float32)], PlainSGD(1.0), sync_timeout=5.0)
    answers = []
    first = threading.Thread(target=lambda: answers.append(store.push(
        [np.full(2, 1.0, np.float32)], replica="a", base_step=0, sync=SyncTag(1, 0, 2, 1))))
    first.start()
    first.join(0.3)
    assert first.is_alive() and store.step == 0  # waiting for replica b
    store.push([np.full(2, 4.0, np.float32)], replica="b", base_step=0, sync=SyncTag(1, 0, 2, 3))
    first.join(5)
    assert answers[0].applied and store.step == 1
    np.testing.assert_allclose(store.snapshot()[0], -(1 * 1 + 4 * 3) / 4)  # row-weighted mean
    lonely = ParameterStore([np.zeros(2, np.float32)], PlainSGD(1.0), sync_timeout=0.2)
    result = lonely.push([np.ones(2, np.float32)], replica="a", base_step=0,
                         sync=SyncTag(1, 0, 2, 1))
    assert (result.applied, result.refusal, lonely.step) == (False, "sync_timeout", 0)
    assert lonely.status()["sync"]["pending"] == 0


def test_status_combines_every_shards_staleness_histogram_like_its_mean_and_max():
    from prometheus_client import CollectorRegistry, generate_latest

    from sparkdownpour.observe.metrics import _Families, downpour_families
    from tests.observe.test_metrics import samples

    store = ShardedStore([np.zeros(s, np.float32) for s in SHAPES], PlainSGD(1.0), 2)
    grads = [np.ones(s, np.float32) for s in SHAPES]
    first, second = store.layout.split(grads)
    store.stores[0].push(first, replica="a", base_step=0)       # shard 0: staleness 0
    store.stores[1].push(second, replica="a", base_step=0)      # shard 1: staleness 0
    store.stores[1].push(second, replica="b", base_step=0)      # shard 1: staleness 1
    store.stores[1].push(second, replica="c", base_step=0)      # shard 1: staleness 2
    stale = store.status()["staleness"]
    # Shard 0 alone saw only staleness 0; the combined histogram holds all four updates.
    assert stale["histogram"] == {"0": 2, "1": 1, "2": 1}
    assert (stale["mean"], stale["max"]) == (0.75, 2)
    registry = CollectorRegistry()
    registry.register(_Families(downpour_families(store.status)))
    m = samples(generate_latest(registry).decode())
    assert m[("sparkdownpour_staleness_count", frozenset())] == 4
    assert m[("sparkdownpour_staleness_sum", frozenset())] == pytest.approx(3.0)
