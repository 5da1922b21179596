"""Sparse mini-batches into a Keras model: a ``tf.SparseTensor``, or a dense fallback.

A ``data.sparse.CSR`` mini-batch reaches the model as a ``tf.SparseTensor``: Keras's ``Dense``
layer then computes a sparse-dense product (``tf.sparse.sparse_dense_matmul``), whose cost and
memory follow the non-zeros. Keras itself densifies the input of a layer that does not declare
sparse support. A model that still cannot take one (a subclassed model whose ``call`` runs
``tf.convert_to_tensor`` on its input, say) fails when the sparse function is first traced;
``SparseInput`` then falls back, for the rest of the run, to densifying each mini-batch inside
the traced function. That fallback holds one
``rows x num_features`` float32 matrix at a time: ``batch_size x num_features x 4`` bytes in
Downpour (32 MiB for 32 rows of 2^18 features), and ``dense_chunk_rows`` rows at a time in
Sandblaster's evaluation (``DENSE_CHUNK_BYTES``). The gradient is dense either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sparkdownpour.data.sparse import CSR
from sparkdownpour.optimizers.sparse import row_sparse

__all__ = ["DENSE_CHUNK_BYTES", "SparseInput", "dense_chunk_rows", "sparse_push"]

logger = logging.getLogger(__name__)

DENSE_CHUNK_BYTES = 64 * 2**20  # a densified chunk of a sparse block, at most


def dense_chunk_rows(num_features: int, limit: int) -> int:
    """Rows per densified chunk: at most ``limit`` and ``DENSE_CHUNK_BYTES`` of float32."""
    return max(1, min(limit, DENSE_CHUNK_BYTES // (4 * max(num_features, 1))))


class SparseInput:
    """``body(x, *rest)`` traced for a sparse ``x`` (``tf.SparseTensorSpec``), densified in the
    graph when the model refuses sparse input.

    ``rest_specs`` are the ``tf.TensorSpec`` of the other arguments. ``densified`` tells which
    path is in use (None before the first call).
    """

    def __init__(self, body: Callable, num_features: int, rest_specs: Sequence) -> None:
        import tensorflow as tf

        spec = tf.SparseTensorSpec([None, num_features], tf.float32)
        self._sparse = tf.function(body, input_signature=[spec, *rest_specs])
        self._dense = tf.function(lambda x, *rest: body(tf.sparse.to_dense(x), *rest),
                                  input_signature=[spec, *rest_specs])
        self.densified: bool | None = None

    def __call__(self, x: CSR, *rest):
        tensor = x.to_tf()
        if self.densified is None:
            try:
                result = self._sparse(tensor, *rest)
            except (TypeError, ValueError, NotImplementedError) as exc:
                logger.warning("the model does not take sparse input (%s: %s); each mini-batch "
                               "is densified instead (%d features x 4 bytes per row)",
                               type(exc).__name__, str(exc)[:200], x.num_features)
                self.densified = True
            else:
                self.densified = False
                return result
        return (self._dense if self.densified else self._sparse)(tensor, *rest)


def sparse_push(grads: list, sparse_input: bool, num_features: int, shards: int,
                compression: str | None) -> list:
    """What a replica pushes: with sparse inputs, each first-layer gradient (an array with one
    row per input feature) whose non-zero rows are at most half of them as a ``RowSparse``
    (``optimizers.sparse``); everything else as it is.

    Dense where the wire cannot carry rows: several shards (each holds a flat range of the
    parameters) or compressed pushes."""
    if not sparse_input or shards != 1 or compression:
        return grads
    return [row_sparse(g) if g.ndim == 2 and g.shape[0] == num_features else g for g in grads]
