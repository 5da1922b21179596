"""Arrow record batches -> numpy mini-batches, on executors (no per-row Python)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from sparkdownpour.data.arrow_numpy import numeric_values
from sparkdownpour.data.names import FEATURES, LABEL
from sparkdownpour.data.sparse import CSR, concat_rows, csr_from_arrow


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


def mini_batches(batches: Iterable[pa.RecordBatch], num_features: int, batch_size: int,
                 rng: np.random.Generator | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream fixed-size mini-batches across Arrow batch boundaries; the last one may be short.

    With ``rng``, rows are shuffled within each Arrow batch (up to
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows), which keeps memory bounded while
    giving each epoch a different order.
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
            x, y = x[order], y[order]
        start = 0
        if carried:
            take = min(batch_size - carried, len(y))
            carry_x.append(x[:take])
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
            carry_x, carry_y, carried = [x[start:]], [y[start:]], len(y) - start
    if carried:
        yield concat_rows(carry_x), np.concatenate(carry_y)
