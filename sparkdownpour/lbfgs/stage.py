"""The executors' side of Sandblaster: data cached as numpy blocks, one loss/gradient pass each.

The data arrives as the cached DataFrame of numpy blocks built by ``lbfgs.blocks``, so an
evaluation re-reads raw float32 bytes instead of re-parsing rows. Every evaluation is one
``mapInArrow`` stage: each partition fetches the evaluation point from the shards (once per
Python worker and point), runs the Keras model over its blocks in chunks with TensorFlow, and
yields one row ``(its partition id, loss sum, gradient sum, rows, devices)``; ``evaluate`` adds
them up on the driver (or first in groups on the executors, for large gradients), checks that
every portion was counted once, and collects the set of devices the evaluators ran on, for the
history. DataFrame APIs only, so it runs in a Spark Connect session as in a classic one. No zero
vector is ever shipped in a closure (SPARK-18471): an empty partition sends no gradient bytes.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sparkdownpour.data.sparse import CSR
from sparkdownpour.keras_model import (
    BINARY_LOSSES,
    CATEGORICAL_LOSSES,
    SPARSE_LOSSES,
    ModelSpec,
    loss_name,
    output_units,
)
from sparkdownpour.lbfgs.linear import LinearEvaluator, LinearForm
from sparkdownpour.replica.devices import DeviceOptions, numpy_eligible, place
from sparkdownpour.replica.sparse_gradient import SparseInput, dense_chunk_rows
from sparkdownpour.replica.worker import configure_threads, freeze_long_lived_objects


@dataclass(frozen=True)
class StageSpec:
    """What an evaluation task needs, as plain values."""

    run_id: str
    model: ModelSpec
    shard_urls: tuple[str, ...]
    token: str
    request_timeout: float
    point: str = "x"
    version: int = 0        # evaluation number: "trial" names a different point every time
    task_cpus: int = 1
    chunk_rows: int = 8192  # rows per TensorFlow call: bounds activation memory for big models
    devices: DeviceOptions = DeviceOptions()  # see replica.devices; always float32
    state: tuple = ()  # the model's non-trainable arrays, fixed for the run (lbfgs.statistics)
    linear: LinearForm | None = None  # a one-Dense model: evaluated in numpy (lbfgs.linear)


class _Evaluator:
    """A built model and its compiled loss-and-gradient sum, kept per Python worker."""

    def __init__(self, spec: ModelSpec, task_cpus: int, device: str = "/CPU:0",
                 label: str = "CPU:0") -> None:
        import tensorflow as tf

        configure_threads(task_cpus)
        self.label = label  # where it runs, for the history (Placement.describe)
        with tf.device(device):  # the variables live where the evaluation runs
            self.model = model = spec.build()
        self.point: tuple | None = None
        self.run_id = ""  # the run it evaluates for now (evaluator_for)
        self.frozen = False  # see freeze_long_lived_objects: done after the first evaluation
        per_example, label_shape, label_dtype = _per_example_loss(model, spec.loss)
        self.label_rank2 = len(label_shape) == 2
        self.label_dtype = label_dtype
        variables = model.trainable_variables
        self.shapes = [tuple(v.shape) for v in variables]
        self.splits = np.cumsum([int(np.prod(s)) for s in self.shapes])[:-1]

        def loss_and_gradient(x, y):
            with tf.device(device), tf.GradientTape() as tape:
                losses = per_example(y, model(x, training=False))
                # The layers' own regularizers (kernel_regularizer=...) are part of the
                # objective, once: each chunk adds them times its rows, and the driver divides
                # the sum over all chunks by the number of rows.
                rows = tf.cast(tf.shape(x)[0], tf.float32)
                penalty = rows * tf.add_n([tf.cast(v, tf.float32) for v in model.losses]) \
                    if model.losses else tf.constant(0.0)
                total = tf.reduce_sum(losses) + penalty
            grads = tape.gradient(total, variables)
            flat = tf.concat([tf.reshape(tf.cast(g, tf.float64), [-1]) for g in grads], axis=0)
            return tf.reduce_sum(tf.cast(losses, tf.float64)) + tf.cast(penalty, tf.float64), \
                flat

        label_spec = tf.TensorSpec(label_shape, label_dtype)
        self._loss_and_gradient = tf.function(loss_and_gradient, input_signature=[
            tf.TensorSpec([None, spec.num_features], tf.float32), label_spec])
        # CSR blocks (sparse features): see replica.sparse_gradient; the gradient stays dense.
        self._sparse = SparseInput(loss_and_gradient, spec.num_features, [label_spec])

    def chunk_rows(self, x, limit: int) -> int:
        """Rows per TensorFlow call: ``limit``, fewer while a sparse block may be densified."""
        if isinstance(x, CSR) and self._sparse.densified is not False:
            return dense_chunk_rows(x.num_features, limit)
        return limit

    def assign(self, flat: np.ndarray) -> None:
        for variable, part, shape in zip(self.model.trainable_variables,
                                         np.split(flat, self.splits), self.shapes):
            variable.assign(part.reshape(shape))

    def block_sums(self, x, y: np.ndarray, limit: int) -> tuple[float, np.ndarray]:
        """Loss and gradient sums over one block, in TensorFlow calls of at most ``limit`` rows
        (fewer while a sparse block may be densified)."""
        loss_sum, grad_sum, start = 0.0, None, 0
        while start < len(y):
            stop = start + self.chunk_rows(x, limit)
            loss, grad = self(x[start:stop], y[start:stop])
            loss_sum += loss
            grad_sum = grad if grad_sum is None else grad_sum + grad
            start = stop
        return loss_sum, grad_sum

    def sums(self, blocks, limit: int) -> tuple[float, np.ndarray | None, int]:
        """``(loss sum, gradient sum, rows)`` over the ``(x, y)`` blocks at the assigned point
        (``block_sums`` for each); the first evaluation then freezes the worker's long-lived
        objects (``replica.worker.freeze_long_lived_objects``)."""
        loss_sum, grad_sum, rows = 0.0, None, 0
        for x, y in blocks:
            loss, grad = self.block_sums(x, y, limit)
            loss_sum += loss
            grad_sum = grad if grad_sum is None else grad_sum + grad
            rows += len(y)
        if not self.frozen:
            freeze_long_lived_objects()
            self.frozen = True
        return loss_sum, grad_sum, rows

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        y = y.astype(self.label_dtype.as_numpy_dtype, copy=False)
        if self.label_rank2:
            y = y.reshape(-1, 1)
        loss, grad = (self._sparse if isinstance(x, CSR) else self._loss_and_gradient)(x, y)
        return float(loss), grad.numpy()


def _per_example_loss(model, loss):
    """Per-row loss, computed from logits when the model ends in sigmoid or softmax.

    The worker's private copy of the model has that last activation removed, so the loss is
    exact where probabilities round to 0 or 1 (Keras' clipped probabilities would bias the
    objective that L-BFGS compares to 1e-6). Returns (fn, label shape, label dtype).
    """
    import keras
    import tensorflow as tf

    from sparkdownpour.keras_model import resolve_loss

    name = loss_name(loss)
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    units = output_units(model)
    if name in BINARY_LOSSES and activation == "sigmoid":
        last.activation = keras.activations.linear
        return (lambda y, z: tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, z), -1),
                [None, units], tf.float32)
    if name in SPARSE_LOSSES and activation == "softmax":
        last.activation = keras.activations.linear
        return (lambda y, z: tf.nn.sparse_softmax_cross_entropy_with_logits(y, z),
                [None], tf.int32)
    if name in CATEGORICAL_LOSSES and activation == "softmax":
        last.activation = keras.activations.linear
        return (lambda y, z: tf.nn.softmax_cross_entropy_with_logits(y, z), [None, units],
                tf.float32)
    loss_fn = resolve_loss(loss)
    rank2 = units == 1 and name not in SPARSE_LOSSES
    return loss_fn, ([None, 1] if rank2 else [None]), tf.float32


_EVALUATORS: OrderedDict[tuple[str, str], _Evaluator | LinearEvaluator] = OrderedDict()
_CLIENTS: dict[tuple, list] = {}


def evaluator_for(spec: StageSpec) -> _Evaluator | LinearEvaluator:
    # A later fit of the same model (ModelSpec.key) reuses the built model and its traced
    # function; the point it holds and its fixed state are the new run's.
    if spec.linear is not None and numpy_eligible(spec.devices):
        # A one-Dense model on the CPU: numpy, no TensorFlow import (lbfgs.linear)
        evaluator = _kept((spec.model.key or spec.run_id, "numpy"),
                          lambda: LinearEvaluator(spec.linear, spec.task_cpus))
    else:
        placement = place(spec.devices)  # before anything initialises TensorFlow here
        evaluator = _kept((spec.model.key or spec.run_id, placement.describe()),
                          lambda: _Evaluator(spec.model, spec.task_cpus, placement.device,
                                             placement.describe()))
    if evaluator.run_id != spec.run_id:
        evaluator.run_id, evaluator.point = spec.run_id, None
        if spec.state:  # BatchNorm statistics and frozen weights: the driver's, fixed
            from sparkdownpour.keras_model import assign_state

            assign_state(evaluator.model, spec.state)
    return evaluator


def _kept(key: tuple, build) -> _Evaluator | LinearEvaluator:
    """The Python worker's evaluator under ``key``, built by ``build()`` if missing; the two
    most recently used are kept."""
    evaluator = _EVALUATORS.get(key)
    if evaluator is None:
        evaluator = _EVALUATORS[key] = build()
        while len(_EVALUATORS) > 2:
            _EVALUATORS.popitem(last=False)
    _EVALUATORS.move_to_end(key)
    return evaluator


def clients_for(spec: StageSpec) -> list:
    from sparkdownpour.lbfgs.vector_client import VectorClient

    key = (spec.shard_urls, spec.token)
    clients = _CLIENTS.get(key)
    if clients is None:  # kept-alive connections, reused by every task of the run on this worker
        for old in _CLIENTS.values():
            for client in old:
                client.close()
        _CLIENTS.clear()
        clients = _CLIENTS[key] = [VectorClient(url, spec.token, timeout=spec.request_timeout)
                                   for url in spec.shard_urls]
    return clients


RESULT_DDL = "portions array<int>, loss double, grad binary, rows long, devices array<string>"


def _result_schema():
    import pyarrow as pa

    return pa.schema([("portions", pa.list_(pa.int32())), ("loss", pa.float64()),
                      ("grad", pa.binary()), ("rows", pa.int64()),
                      ("devices", pa.list_(pa.string()))])


def result_batch(portions: list[int], loss: float, grad: np.ndarray | None, rows: int,
            devices: list[str]):
    from sparkdownpour.data.arrow_numpy import row_batch  # no pandas in the worker

    return row_batch({
        "portions": portions, "loss": float(loss),
        "grad": b"" if grad is None else np.asarray(grad, "<f8").tobytes(), "rows": int(rows),
        "devices": sorted(devices)}, _result_schema())


def evaluate_partition(batches: Iterator, spec: StageSpec) -> Iterator:
    """``mapInArrow`` function over the cached blocks (``lbfgs.blocks``): one ``RESULT_DDL``
    row for the portion, ``(portions=[its partition id], loss sum, gradient sum as float64
    bytes, rows, devices)``; ``devices`` names where it ran, e.g. ``["GPU:0 (spark gpu 1)"]``.
    An empty portion yields ``rows=0`` and no gradient bytes."""
    from pyspark import TaskContext

    from sparkdownpour.lbfgs.blocks import read_blocks
    from sparkdownpour.lbfgs.vector_client import fetch_vector

    blocks = read_blocks(batches)  # streamed: one block in memory at a time
    first = next(blocks, None)
    loss_sum, grad_sum, rows, evaluator = 0.0, None, 0, None
    if first is not None:  # an empty portion builds no model and fetches nothing
        evaluator = evaluator_for(spec)
        point = (spec.run_id, spec.point, spec.version)
        if evaluator.point != point:  # several partitions on one worker fetch once
            evaluator.point = None
            evaluator.assign(fetch_vector(clients_for(spec), spec.point))
            evaluator.point = point
        loss_sum, grad_sum, rows = evaluator.sums(itertools.chain([first], blocks),
                                                  spec.chunk_rows)
    yield result_batch([TaskContext.get().partitionId()], loss_sum, grad_sum, rows,
                  [evaluator.label] if evaluator is not None else [])


def sum_partials(batches: Iterator) -> Iterator:
    """``mapInArrow`` function: the ``RESULT_DDL`` rows it is given, added up into one (their
    ``portions`` and ``devices`` joined); nothing for an empty partition."""
    total = None
    for batch in batches:
        for row in batch.to_pylist():
            total = _add(total, (row["portions"], row["loss"], _grad(row["grad"]), row["rows"],
                                 row["devices"]))
    if total is not None:
        yield result_batch(*total)


def _grad(raw) -> np.ndarray | None:
    return np.frombuffer(raw, "<f8") if len(raw) else None


def _add(a: tuple | None, b: tuple) -> tuple:
    """Two partial results ``(portions, loss, grad, rows, devices)`` added; ``None`` stands for
    nothing yet, and a None gradient for an empty portion's."""
    if a is None:
        return b
    grad = b[2] if a[2] is None else a[2] if b[2] is None else a[2] + b[2]
    return (list(a[0]) + list(b[0]), a[1] + b[1], grad, a[3] + b[3],
            sorted(set(a[4]) | set(b[4])))


def evaluate(blocks, spec: StageSpec, portions: int, depth: int = 1
             ) -> tuple[float, np.ndarray | None, int, tuple[str, ...]]:
    """One evaluation over the cached ``blocks`` DataFrame in ``portions`` partitions:
    ``(loss sum, gradient sum, rows, devices)``, from exactly one result per portion.

    ``depth`` 1 collects every portion's result and adds them on the driver; deeper, the
    results are first added in ``ceil(portions ** (1 / depth))`` groups on the executors (a
    shuffle stage, as ``treeReduce`` would) and the driver adds the groups' sums. Raises
    ``RuntimeError`` unless each portion's result was counted exactly once."""
    import functools
    import math

    from pyspark.sql import functions as F

    partials = blocks.mapInArrow(functools.partial(evaluate_partition, spec=spec), RESULT_DDL)
    if depth > 1 and portions > 2:
        groups = max(2, math.ceil(portions ** (1.0 / depth)))
        partials = partials.repartition(groups, F.element_at("portions", 1)) \
            .mapInArrow(sum_partials, RESULT_DDL)
    total = None
    for row in partials.collect():
        total = _add(total, (row["portions"], row["loss"], _grad(row["grad"]), row["rows"],
                             row["devices"]))
    counted = sorted(total[0]) if total is not None else []
    if counted != list(range(portions)):
        missing = sorted(set(range(portions)) - set(counted))
        doubled = sorted({p for p in counted if counted.count(p) > 1})
        raise RuntimeError(f"an evaluation must count each of the {portions} cached portions "
                           f"once; portions {missing} were missing and {doubled} doubled "
                           f"({len(counted)} results). The cached blocks' partitioning changed; "
                           "please report this")
    return total[1], total[2], total[3], tuple(total[4])
