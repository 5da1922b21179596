"""What lives as long as a Spark Python worker: thread pools, the garbage collector, and the
replica's built model, reused across the worker's tasks, partitions, epochs and fits of the
same model."""

from __future__ import annotations

import gc
import os
import time
from collections import OrderedDict

import pyarrow as pa

from sparkdownpour.data.arrow_numpy import row_batch
from sparkdownpour.keras_model import assign_trainable
from sparkdownpour.replica.dense_stack import DenseStack, DenseStackGradient
from sparkdownpour.replica.devices import Placement, numpy_eligible, place
from sparkdownpour.replica.gradient import GradientFunction
from sparkdownpour.replica.precision import build_model
from sparkdownpour.replica.spec import STATS_SCHEMA, ReplicaSpec
from sparkdownpour.server.sharded_client import ShardedClient


def configure_threads(cpus: int) -> None:
    """One op thread per task CPU, so two replicas on two cores don't each spawn a full pool."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(cpus)
    except RuntimeError:  # TensorFlow already initialised in this worker: keep its pools
        pass


def freeze_long_lived_objects() -> None:
    """Move every object alive now (TensorFlow, the model, its traced functions) out of the
    garbage collector's reach.

    PySpark's daemon runs a full ``gc.collect()`` after every task of a reused worker. With
    TensorFlow imported that walk takes about 0.3 s per task on this project's machine, which
    made an 8-task stage cost 2.5 s instead of 0.35 s. Frozen objects are skipped by that walk;
    they live as long as the worker anyway. Called once per built model, after its first use.
    """
    gc.collect()
    gc.freeze()


class Replica:
    """A built model and its compiled gradient, kept per Python worker and reused."""

    def __init__(self, spec: ReplicaSpec, placement: Placement) -> None:
        import tensorflow as tf

        configure_threads(spec.task_cpus)
        with tf.device(placement.device):  # the variables live where the gradient runs
            self.model = build_model(spec.model, spec.precision)
        self.gradient = GradientFunction(self.model, spec.model.loss, placement.device,
                                         spec.precision)
        variables = self.model.trainable_variables
        self.shapes = [tuple(v.shape) for v in variables]
        # Where TensorFlow really put the weights (a Keras variable wraps a tf.Variable).
        self.variable_device = str(getattr(getattr(variables[0], "value", None), "device", "")) \
            if variables else ""
        self.compute_dtype = str(next((layer.compute_dtype for layer in self.model.layers
                                       if layer.weights), self.model.compute_dtype))
        self.placement = placement  # the current task's (tasks of a worker run one at a time)
        self.run_id = spec.run_id  # the run it serves now
        self.frozen = False  # see freeze_long_lived_objects: done after the first traced step

    def assign(self, arrays) -> None:
        """The server's parameters, into the model's trainable variables."""
        assign_trainable(self.model, arrays)


# The history's device for a numpy replica: no TensorFlow device is involved.
NUMPY_PLACEMENT = Placement("/CPU:0 (numpy)", (), "numpy: TensorFlow not imported")


class NumpyReplica:
    """A Dense chain computed in numpy (``replica.dense_stack``): ``Replica``'s interface, with
    no Keras model (so no state to pull or report) and no TensorFlow in the worker."""

    model = None

    def __init__(self, spec: ReplicaSpec, form: DenseStack) -> None:
        self.gradient = DenseStackGradient(form, spec.task_cpus)
        self.shapes = form.shapes
        self.variable_device, self.compute_dtype = "numpy", "float32"
        self.placement = NUMPY_PLACEMENT
        self.run_id = spec.run_id
        self.frozen = False

    def assign(self, arrays) -> None:
        self.gradient.assign(arrays)


_REPLICAS: OrderedDict[tuple, Replica | NumpyReplica] = OrderedDict()
_KEEP = 2  # two models alternating on one worker (e.g. two notebooks' fits) keep both warm


def replica_key(spec: ReplicaSpec, device: str) -> tuple:
    """What a built replica can be reused for: the same model (``ModelSpec.key``; without one,
    this run only), device, precision and replica count (BatchNorm momentum, see
    replica.state). A later fit of the same model reuses the built model and its traced
    step (0.05-0.1 s a task on the digits MLP, seconds for big models): its weights and
    state come from the new run's server before the first step, as on a fresh build."""
    return (spec.model.key or spec.run_id, device, spec.precision, spec.state_replicas)


def replica_for(spec: ReplicaSpec) -> tuple[Replica | NumpyReplica, float]:
    """This worker's replica for the run, on the device this task was given (see devices):
    in numpy for a Dense chain on a CPU task (``replica.dense_stack``), else TensorFlow."""
    form = spec.dense_stack if spec.dense_stack is not None and \
        numpy_eligible(spec.devices) else None
    # place() before anything initialises TensorFlow in this worker; numpy imports none.
    placement = NUMPY_PLACEMENT if form is not None else place(spec.devices)
    key = replica_key(spec, placement.device)
    cached = _REPLICAS.get(key)
    if cached is not None:
        _REPLICAS.move_to_end(key)
        cached.placement = placement
        if cached.run_id != spec.run_id:  # a new fit: nothing of the last one's carries over
            cached.run_id = spec.run_id
            cached.gradient.reset()
        return cached, 0.0
    start = time.perf_counter()
    replica = NumpyReplica(spec, form) if form is not None else Replica(spec, placement)
    _REPLICAS[key] = replica
    while len(_REPLICAS) > _KEEP:
        _REPLICAS.popitem(last=False)
    return replica, time.perf_counter() - start


def task_identity() -> tuple[int, int]:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:  # called outside Spark (tests of the loop itself)
        return 0, 0
    return ctx.partitionId(), ctx.attemptNumber()


def stats_batch(replica: Replica, **row) -> pa.RecordBatch:
    """The task's one statistics row; also freezes the worker's long-lived objects once."""
    if not replica.frozen:
        freeze_long_lived_objects()
        replica.frozen = True
    placement = replica.placement
    return row_batch({
        "pid": os.getpid(), **row, "device": placement.device,
        "gpu_addresses": ",".join(placement.addresses), "visible": placement.visible,
        "device_note": placement.note, "variable_device": replica.variable_device,
        "compute_dtype": replica.compute_dtype}, STATS_SCHEMA)  # no pandas (data.arrow_numpy)


def client_for(spec: ReplicaSpec, replica: Replica) -> ShardedClient:
    return ShardedClient(spec.shard_urls or (spec.url,), spec.token, replica.shapes,
                         timeout=spec.request_timeout, retries=spec.request_retries,
                         ca_data=spec.tls_ca, compression=spec.compression,
                         topk_ratio=spec.topk_ratio)
