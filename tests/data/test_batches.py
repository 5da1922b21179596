"""Arrow batches become fixed-size numpy mini-batches, across batch boundaries, none lost."""

import numpy as np
import pyarrow as pa
import pytest

from sparkdownpour.data import mini_batches


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
