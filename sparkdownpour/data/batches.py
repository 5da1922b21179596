"""Arrow record batches -> numpy mini-batches, on executors (no per-row Python)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from sparkdownpour.data.arrow_numpy import numeric_values
from sparkdownpour.data.names import FEATURES, LABEL
from sparkdownpour.data.sparse import CSR, concat_rows, csr_from_arrow


class _LazyRows:
    """A shuffled dense Arrow batch whose slices are ``Rows`` (nothing copied yet)."""

    __slots__ = ("base", "order")

    def __init__(self, base: np.ndarray, order: np.ndarray) -> None:
        self.base, self.order = base, order

    def __getitem__(self, part: slice) -> Rows:
        return Rows(self.base, self.order[part])


def batch_to_numpy(batch: pa.RecordBatch, num_features: int
                   ) -> tuple[np.ndarray | CSR, np.ndarray]:
    """Features as an (n, d) float32 matrix (a ``CSR`` one for sparse features) and labels as
    an (n,) float32 vector."""
    column = batch.column(batch.schema.get_field_index(FEATURES))
    y = numeric_values(batch.column(batch.schema.get_field_index(LABEL)))
    if pa.types.is_struct(column.type):  # sparse features (data.sparse): a CSR matrix
        return csr_from_arrow(column, num_features), np.asarray(y, dtype=np.float32)
    # flatten() honours slice offsets; every row has num_features values (checked on the driver).
    flat = numeric_values(column.flatten())
    x = np.asarray(flat, dtype=np.float32).reshape(len(batch), num_features)
    return x, np.asarray(y, dtype=np.float32)


class Rows:
    """Rows ``index`` of the dense matrix ``base``, not yet gathered (``mini_batches`` with
    ``gather_later``): a consumer that stacks several mini-batches into one matrix anyway
    (``stack_rows``) gathers them there, once, instead of copying every shuffled row twice."""

    __slots__ = ("base", "index")

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base, self.index = base, index

    def __len__(self) -> int:
        return len(self.index)

    def gather(self) -> np.ndarray:
        return self.base[self.index]


def _gathered(part):
    return part.gather() if isinstance(part, Rows) else part


def stack_rows(parts: Sequence) -> np.ndarray | CSR:
    """One matrix of the rows of ``parts`` (arrays, ``CSR`` blocks or ``Rows``), in order."""
    if len(parts) == 1:
        return _gathered(parts[0])
    first = parts[0]
    if isinstance(first, Rows) and all(isinstance(p, Rows) and p.base is first.base
                                       for p in parts):
        return first.base[np.concatenate([p.index for p in parts])]
    return concat_rows([_gathered(p) for p in parts])


def mini_batches(batches: Iterable[pa.RecordBatch], num_features: int, batch_size: int,
                 rng: np.random.Generator | None = None, gather_later: bool = False
                 ) -> Iterator[tuple[np.ndarray | CSR | Rows, np.ndarray]]:
    """Stream fixed-size mini-batches across Arrow batch boundaries; the last one may be short.

    With ``rng``, rows are shuffled within each Arrow batch (up to
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows), which keeps memory bounded while
    giving each epoch a different order. With ``gather_later`` a dense mini-batch's features
    come as ``Rows`` of the unshuffled batch (the same rows in the same order), for a consumer
    that stacks them with ``stack_rows``; a mini-batch that straddles two Arrow batches is
    gathered at once.
    """
    carry_x: list[np.ndarray] = []
    carry_y: list[np.ndarray] = []
    carried = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        x, y = batch_to_numpy(batch, num_features)
        if rng is not None:
            order = rng.permutation(len(y))
            y = y[order]
            # x[begin:end] is then the mini-batch's Rows, not a copy
            x = _LazyRows(x, order) if gather_later and isinstance(x, np.ndarray) else x[order]
        start = 0
        if carried:
            take = min(batch_size - carried, len(y))
            carry_x.append(_gathered(x[:take]))
            carry_y.append(y[:take])
            carried += take
            start = take
            if carried < batch_size:
                continue
            yield concat_rows(carry_x), np.concatenate(carry_y)
            carry_x, carry_y, carried = [], [], 0
        while start + batch_size <= len(y):
            yield x[start:start + batch_size], y[start:start + batch_size]
            start += batch_size
        if start < len(y):
            carry_x, carry_y, carried = [_gathered(x[start:])], [y[start:]], len(y) - start
    if carried:
        yield concat_rows(carry_x), np.concatenate(carry_y)
