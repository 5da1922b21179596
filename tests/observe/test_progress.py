"""The progress bar's total is the number of updates the run's mode really applies."""

from sparkdownpour.config import DownpourConfig
from sparkdownpour.observe.progress import ServerProgress, expected_updates


def test_async_counts_one_update_per_push_per_partition():
    # 4 partitions of 250 rows, 32 per batch: 8 mini-batches each, a push every 3 -> 3 pushes.
    cfg = DownpourConfig(batch_size=32, epochs=2, n_push=3)
    assert expected_updates(cfg, rows=1000, partitions=4) == 2 * 4 * 3


def test_sync_counts_one_update_per_round_not_per_replica():
    # Every replica's gradient of a round is averaged into one update: 8 rounds an epoch.
    cfg = DownpourConfig(batch_size=32, epochs=2, mode="sync")
    assert expected_updates(cfg, rows=1000, partitions=4) == 2 * 8


def test_easgd_counts_one_update_per_elastic_exchange():
    # An exchange every 3 mini-batches and one at the end: 3 per partition per epoch.
    cfg = DownpourConfig(batch_size=32, epochs=2, mode="easgd", easgd_tau=3)
    assert expected_updates(cfg, rows=1000, partitions=4) == 2 * 4 * 3


def test_warm_start_pushes_are_counted_and_capped_by_the_data():
    cfg = DownpourConfig(batch_size=32, epochs=1, warmstart_steps=7)
    assert expected_updates(cfg, rows=1000, partitions=4) == 4 * 8 + 7
    # 100 rows hold only 4 mini-batches for the one warm-start replica.
    assert expected_updates(cfg.replace(warmstart_steps=50), rows=100, partitions=1) == 4 + 4


class _Store:
    def status(self):
        return {"updates_applied": 16, "staleness": {"mean": 0.0}}


def test_bar_total_matches_a_sync_run_at_its_end():
    cfg = DownpourConfig(batch_size=32, epochs=2, mode="sync")
    with ServerProgress(_Store(), expected_updates(cfg, 1000, 4), verbose=1) as progress:
        bar = progress._bar
    assert (bar.n, bar.total) == (16, 16)
