"""Sandblaster's objective for models with BatchNormalization: full-data statistics, fixed.

L-BFGS needs one deterministic objective, but a BatchNorm layer normalises with the statistics
of whatever batch it sees in training mode, and with its moving averages in inference mode.
Sandblaster defines the objective as the model in **inference mode** (``training=False``:
Dropout off) whose BatchNorm layers normalise with the **mean and (population) variance over
the whole data set of their inputs, at the starting point**, held fixed while L-BFGS runs:

- before the first iteration, one Spark stage per BatchNorm layer, in the model's layer order,
  computes the exact mean and variance of that layer's input over every row (per channel: all
  axes but the layer's ``axis`` are reduced), with the trainable parameters at the starting
  point and the BatchNorm layers before it already normalising with their fixed statistics;
- they become the layers' ``moving_mean`` and ``moving_variance`` in the driver's model and in
  every evaluator, and stay fixed: the objective is then a smooth function of the trainable
  parameters, ``mean loss(model(x, training=False)) + l2 penalty``, and the returned model
  evaluates exactly the objective L-BFGS minimised.

The starting point is the model's weights when ``fit`` starts (the checkpoint's point when it
resumes). A model whose BatchNorm layers are nested inside another layer or model cannot be
probed this way and is refused before any Spark job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MomentsSpec", "batchnorm_layers", "collect_moments", "combine_moments",
           "fix_batchnorm_statistics", "moments_partition"]


def batchnorm_layers(model) -> list:
    """The model's own BatchNormalization layers in layer order; nested ones are refused."""
    import keras

    from sparkdownpour.keras_model import all_layers

    own = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    nested = [layer.name for layer in all_layers(model)
              if isinstance(layer, keras.layers.BatchNormalization) and layer not in own]
    if nested:
        raise ValueError(f"Sandblaster fixes each BatchNormalization layer's statistics over the "
                         f"data before L-BFGS, which needs the layers at the model's top level; "
                         f"{nested} are nested inside another layer or model. Build the model "
                         "flat (one Functional or Sequential model)")
    return own


def _probe(model, layer):
    """A model from ``model``'s inputs to ``layer``'s input."""
    import keras

    try:
        return keras.Model(model.inputs, layer.input)
    except Exception as exc:  # subclassed models have no symbolic graph to cut
        raise ValueError(f"cannot read the input of BatchNormalization layer {layer.name!r} "
                         f"({type(exc).__name__}: {exc}); Sandblaster needs a Functional or "
                         "Sequential model to fix its BatchNorm statistics") from exc


def _reduced_axes(layer, rank: int) -> tuple[int, ...]:
    kept = {a % rank for a in np.atleast_1d(layer.axis)}
    return tuple(a for a in range(rank) if a not in kept)


def _moments(values: np.ndarray, axes: tuple[int, ...]) -> tuple[int, np.ndarray, np.ndarray]:
    """``(count, mean, sum of squared deviations)`` over ``axes``, in float64."""
    values = np.asarray(values, dtype=np.float64)
    count = int(np.prod([values.shape[a] for a in axes]))
    mean = values.mean(axis=axes)
    shape = [1 if a in axes else s for a, s in enumerate(values.shape)]
    m2 = ((values - mean.reshape(shape)) ** 2).sum(axis=axes)
    return count, mean, m2


def combine_moments(a, b):
    """Chan et al.'s pairwise combination of ``(count, mean, m2)``; None: an empty portion."""
    if a is None or b is None:
        return b if a is None else a
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta ** 2 * (na * nb / n)


@dataclass(frozen=True)
class MomentsSpec:
    """One statistics pass: the evaluation stage's spec, which BatchNorm layer, the state so
    far (every non-trainable floating array, in ``keras_model.state_variables`` order)."""

    stage: Any  # lbfgs.stage.StageSpec: model, shards (the point "x"), token, devices
    layer: int
    state: tuple = ()


_MODELS: dict = {}


def _model_for(spec: MomentsSpec):
    import tensorflow as tf

    from sparkdownpour.keras_model import assign_state, assign_trainable
    from sparkdownpour.lbfgs.stage import clients_for
    from sparkdownpour.lbfgs.vector_client import fetch_vector
    from sparkdownpour.replica.devices import place
    from sparkdownpour.replica.worker import configure_threads

    stage = spec.stage
    placement = place(stage.devices)
    key = (stage.run_id, placement.device)
    cached = _MODELS.get(key)
    if cached is None:
        _MODELS.clear()
        configure_threads(stage.task_cpus)
        with tf.device(placement.device):
            model = stage.model.build()
        cached = _MODELS[key] = (model, placement.device, {})
        flat = fetch_vector(clients_for(stage), stage.point)
        shapes = [tuple(v.shape) for v in model.trainable_variables]
        parts = np.split(flat, np.cumsum([int(np.prod(s)) for s in shapes])[:-1])
        assign_trainable(model, [p.reshape(s) for p, s in zip(parts, shapes)])
    model, device, probes = cached
    assign_state(model, spec.state)
    if spec.layer not in probes:
        probes[spec.layer] = _probe(model, batchnorm_layers(model)[spec.layer])
    return model, device, probes[spec.layer]


MOMENTS_DDL = "portion int, count long, mean binary, m2 binary"


def moments_partition(batches: Iterator, spec: MomentsSpec) -> Iterator:
    """``mapInArrow`` function over the cached blocks: one ``MOMENTS_DDL`` row, the portion's
    partition id and ``(count, mean, m2)`` of the layer's input over its rows (float64 bytes,
    flattened); an empty portion has count 0."""
    import pyarrow as pa
    import tensorflow as tf
    from pyspark import TaskContext

    from sparkdownpour.lbfgs.blocks import read_blocks

    total = None
    for x, _ in read_blocks(batches):
        if x is None or not len(x):
            continue
        model, device, probe = _model_for(spec)
        layer = batchnorm_layers(model)[spec.layer]
        for start in range(0, len(x), spec.stage.chunk_rows):
            with tf.device(device):
                values = probe(x[start:start + spec.stage.chunk_rows], training=False)
            values = np.asarray(values)
            total = combine_moments(total, _moments(values, _reduced_axes(layer, values.ndim)))
    count, mean, m2 = total if total is not None else (0, np.zeros(0), np.zeros(0))
    yield pa.RecordBatch.from_pylist([{
        "portion": TaskContext.get().partitionId(), "count": int(count),
        "mean": np.asarray(mean, "<f8").tobytes(), "m2": np.asarray(m2, "<f8").tobytes()}],
        schema=pa.schema([("portion", pa.int32()), ("count", pa.int64()),
                          ("mean", pa.binary()), ("m2", pa.binary())]))


def collect_moments(blocks, spec: MomentsSpec, portions: int):
    """One statistics pass over the cached ``blocks`` DataFrame: the combined
    ``(count, mean, m2)``, or None for no rows; each portion must answer exactly once."""
    import functools

    rows = blocks.mapInArrow(functools.partial(moments_partition, spec=spec),
                             MOMENTS_DDL).collect()
    if sorted(row["portion"] for row in rows) != list(range(portions)):
        raise RuntimeError(f"a BatchNorm statistics pass must count each of the {portions} "
                           f"cached portions once; it had {len(rows)} results, from portions "
                           f"{sorted(row['portion'] for row in rows)}. Please report this")
    total = None
    for row in sorted(rows, key=lambda r: r["portion"]):  # the same sum whatever the order
        if row["count"]:
            total = combine_moments(total, (int(row["count"]), np.frombuffer(row["mean"], "<f8"),
                                            np.frombuffer(row["m2"], "<f8")))
    return total


def fix_batchnorm_statistics(model, run_pass: Callable[[int, tuple], Any]) -> list[dict]:
    """Set each BatchNorm layer of the driver's ``model`` to its full-data statistics, layer
    after layer; ``run_pass(index, state)`` runs one pass (a Spark stage) and returns the
    combined ``(count, mean, m2)``. Returns one description per layer for the history."""
    from sparkdownpour.keras_model import state_arrays

    layers = batchnorm_layers(model)
    for layer in layers:
        _probe(model, layer)  # refuse an unprobeable model before any Spark job
    described = []
    for index, layer in enumerate(layers):
        moments = run_pass(index, tuple(state_arrays(model)))
        if moments is None:
            raise ValueError("the data set is empty: no statistics for BatchNormalization "
                             f"layer {layer.name!r}")
        count, mean, m2 = moments
        shape = tuple(layer.moving_mean.shape)
        layer.moving_mean.assign(np.asarray(mean, np.float32).reshape(shape))
        layer.moving_variance.assign(np.asarray(m2 / count, np.float32).reshape(shape))
        described.append({"layer": layer.name, "values_per_channel": int(count)})
    return described


def fixed_state(model, blocks, portions: int, stage, space, x0: np.ndarray, info: dict,
                job: Callable[[str], Any]) -> tuple:
    """Sandblaster's step before L-BFGS: fix the BatchNorm statistics of the driver's
    ``model`` at the point ``x0`` (put on the vector shards as ``stage.point``, where the
    passes' tasks read it) and return the model's state for the evaluators (``StageSpec.state``:
    every non-trainable floating array, so they also hold the driver's frozen weights).
    ``blocks`` is the cached DataFrame of blocks in ``portions`` partitions (``lbfgs.blocks``);
    ``job(what)`` is the job group each pass runs under; ``info`` (``history.info``) gets
    ``"batchnorm_statistics"``. A model without state returns ``()``, running nothing."""
    from sparkdownpour.driver_model import driver_cpu
    from sparkdownpour.keras_model import state_arrays

    with driver_cpu():
        if not state_arrays(model):
            return ()
        layers = batchnorm_layers(model)
    if layers:
        space.run([], puts={stage.point: np.asarray(x0, dtype=np.float64)})

        def run_pass(index: int, state: tuple):
            spec = MomentsSpec(stage=stage, layer=index, state=state)
            with job(f"BatchNorm statistics {index + 1}/{len(layers)}"):
                return collect_moments(blocks, spec, portions)

        with driver_cpu():
            described = fix_batchnorm_statistics(model, run_pass)
        info["batchnorm_statistics"] = {
            "layers": described,
            "definition": "mean and population variance of each BatchNormalization layer's "
                          "input over the whole data set at the starting point, fixed during "
                          "L-BFGS; the objective is evaluated with training=False"}
    with driver_cpu():
        return tuple(state_arrays(model))
