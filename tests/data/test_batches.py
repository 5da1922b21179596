"""Arrow batches become fixed-size numpy mini-batches, across batch boundaries, none lost."""

import numpy as np
import pyarrow as pa
import pytest

from sparkdownpour.data import mini_batches
from sparkdownpour.data.batches import Rows, stack_rows


def arrow_batches(sizes, d=3):
    start, out = 0, []
    for size in sizes:
        ids = np.arange(start, start + size)
        features = pa.array([[float(i)] * d for i in ids], type=pa.list_(pa.float32()))
        out.append(pa.RecordBatch.from_arrays([features, pa.array(ids, pa.float32())],
                                              ["features", "label"]))
        start += size
    return out, start


@pytest.mark.parametrize("sizes,batch_size", [([10], 4), ([3, 5, 0, 7], 4), ([1, 1, 1], 2),
                                              ([32, 32], 32), ([5], 8)])
def test_every_row_exactly_once_in_full_batches(sizes, batch_size):
    batches, total = arrow_batches(sizes)
    out = list(mini_batches(batches, 3, batch_size))
    assert [len(y) for y in [y for _, y in out][:-1]] == [batch_size] * (len(out) - 1)
    labels = np.concatenate([y for _, y in out])
    np.testing.assert_array_equal(labels, np.arange(total))
    for x, y in out:
        assert x.shape == (len(y), 3) and x.dtype == np.float32
        np.testing.assert_array_equal(x[:, 0], y)  # rows stay aligned with their labels


def test_shuffle_changes_order_within_batch_not_content():
    batches, total = arrow_batches([50, 30])
    out = list(mini_batches(batches, 3, 16, np.random.default_rng(0)))
    labels = np.concatenate([y for _, y in out])
    assert sorted(labels) == list(range(total)) and not np.array_equal(labels, np.arange(total))
    assert all(np.array_equal(x[:, 0], y) for x, y in out)


def test_sliced_arrow_batch_honours_offsets():
    (batch,), _ = arrow_batches([10])
    (x, y), = list(mini_batches([batch.slice(4, 3)], 3, 8))
    np.testing.assert_array_equal(y, [4, 5, 6])
    np.testing.assert_array_equal(x[:, 2], [4, 5, 6])


@pytest.mark.parametrize("sizes,batch_size", [([50, 30], 16), ([7, 3, 20], 4), ([40], 40)])
def test_rows_gathered_later_are_the_rows_gathered_at_once(sizes, batch_size):
    """gather_later hands out the shuffled mini-batches as Rows of the unshuffled batch; stacking
    them (one gather, as the summed gradient does) gives exactly the matrix the eager path gives,
    mini-batches that straddle Arrow batches included."""
    batches, total = arrow_batches(sizes)
    eager = list(mini_batches(batches, 3, batch_size, np.random.default_rng(7)))
    lazy = list(mini_batches(batches, 3, batch_size, np.random.default_rng(7), gather_later=True))
    assert len(lazy) == len(eager)
    assert any(isinstance(x, Rows) for x, _ in lazy)
    for (ex, ey), (lx, ly) in zip(eager, lazy):
        np.testing.assert_array_equal(ly, ey)
        assert len(lx) == len(ly)
        np.testing.assert_array_equal(stack_rows([lx]), ex)
    stacked = stack_rows([x for x, _ in lazy])
    np.testing.assert_array_equal(stacked, np.concatenate([x for x, _ in eager]))
    np.testing.assert_array_equal(stacked[:, 0], np.concatenate([y for _, y in lazy]))
    assert sorted(stacked[:, 0]) == list(range(total))


def test_gather_later_without_a_shuffle_gives_plain_views():
    batches, _ = arrow_batches([10])
    (x, y), = list(mini_batches(batches, 3, 16, gather_later=True))
    assert isinstance(x, np.ndarray) and not isinstance(x, Rows)
    np.testing.assert_array_equal(x[:, 0], y)
