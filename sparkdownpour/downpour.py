"""``Downpour``: asynchronous SGD with a master model server on the driver (DistBelief §4.1).

Driver side. Each epoch is one Spark job over the cached, validated DataFrame: every partition is
a model replica (``replica.loop.run_partition`` inside ``mapInArrow``) that fetches parameters
from and pushes gradients to the server, which applies each push on arrival with the update rule.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from sparkdownpour import data, optimizers
from sparkdownpour.config import DownpourConfig
from sparkdownpour.history import History, TrainingResult
from sparkdownpour.progress import ServerProgress
from sparkdownpour.replica.keras_model import (
    SPARSE_LOSSES,
    assign_trainable,
    driver_model as build_driver_model,
    loss_name,
    output_units,
    resolve_loss,
    trainable_arrays,
)
from sparkdownpour.replica.loop import STATS_DDL, ReplicaSpec, run_partition
from sparkdownpour.server import ParameterServer, ParameterStore
from sparkdownpour.session import driver_address, task_cpus
from sparkdownpour.spark_jobs import job_group

logger = logging.getLogger(__name__)


class Downpour:
    """Downpour SGD on Spark.

    ``model`` is a keras.Model (trained in place) or a zero-argument function that builds one.
    Keyword arguments are the fields of ``DownpourConfig`` (loss, optimizer, learning_rate,
    batch_size, epochs, n_fetch, n_push, num_shards, num_replicas, warmstart_steps, seed, ...).
    """

    def __init__(self, model, config: DownpourConfig | None = None, **kwargs) -> None:
        if config is not None and kwargs:
            raise TypeError(f"pass either config= or keyword knobs, not both (got config and "
                            f"{sorted(kwargs)})")
        self.model = model
        self.config = config if config is not None else DownpourConfig(**kwargs)
        self._rule = optimizers.get(self.config.optimizer, learning_rate=self.config.learning_rate) \
            if isinstance(self.config.optimizer, str) else self.config.optimizer

    def fit(self, df, features_col: str | Sequence[str] = "features", label_col: str = "label", *,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None,
            stop_when: Callable[[dict], bool] | None = None) -> TrainingResult:
        """Train on ``df``; return ``TrainingResult(model, history)``.

        ``validation_data=(x, y)`` (numpy) is scored on the driver after every epoch
        (``val_loss``, and ``val_accuracy`` for classification). ``stop_when(record)`` ends
        training early when it returns True for an epoch's history record.
        """
        cfg = self.config
        started = time.perf_counter()
        prepared = data.prepare(df, features_col, label_col)
        if cfg.num_replicas is not None:
            prepared = prepared.repartition(cfg.num_replicas)
        prepared = prepared.cache()  # parsed once; every epoch re-reads the cache, not the source
        try:
            summary = data.validate(prepared, features_col, label_col)
            driver_model, spec = build_driver_model(self.model, cfg.loss, summary.num_features,
                                                    features_col)
            data.check_labels_fit_loss(prepared, summary, label_col, loss_name(cfg.loss),
                                       output_units(driver_model))
            validation = _check_validation(validation_data, summary.num_features)
            history = History(info={"rows": summary.num_rows,
                                    "partitions": prepared.rdd.getNumPartitions(),
                                    "features": summary.num_features, "rule": repr(self._rule)})
            self._train(prepared, driver_model, spec, history, validation, stop_when)
        finally:
            prepared.unpersist()
        history.info["wall_time_s"] = time.perf_counter() - started
        return TrainingResult(driver_model, history)

    def _train(self, prepared, model, spec, history, validation, stop_when) -> None:
        cfg = self.config
        spark = prepared.sparkSession
        store = ParameterStore(trainable_arrays(model), self._rule)
        partitions = history.info["partitions"]
        # Exact for evenly filled partitions (each ends in a short batch and a final push).
        per_partition = -(-history.info["rows"] // (partitions * cfg.batch_size))
        expected_updates = partitions * -(-per_partition // cfg.n_push) * cfg.epochs
        with ParameterServer(store, host=driver_address(spark),
                             max_request_bytes=int(cfg.max_request_mb * 2**20)) as server, \
                ServerProgress(store, expected_updates, cfg.verbose) as progress:
            history.info["server"] = server.url
            base = ReplicaSpec(run_id=uuid.uuid4().hex, model=spec, url=server.url,
                               token=server.token, batch_size=cfg.batch_size, n_fetch=cfg.n_fetch,
                               n_push=cfg.n_push, epoch=0, seed=cfg.seed,
                               request_timeout=cfg.request_timeout, task_cpus=task_cpus(spark))
            if cfg.warmstart_steps:
                with job_group(spark, f"sparkdownpour downpour warm start ({cfg.warmstart_steps} "
                                      "steps on one replica)"):
                    _run_job(prepared.coalesce(1), replace(base, max_steps=cfg.warmstart_steps))
            for epoch in range(1, cfg.epochs + 1):
                progress.set_epoch(epoch, cfg.epochs)
                epoch_start = time.perf_counter()
                with job_group(spark, f"sparkdownpour downpour epoch {epoch}/{cfg.epochs} "
                                      f"({partitions} replicas)"):
                    stats = _run_job(prepared, replace(base, epoch=epoch))
                _, params = store.fetch()
                assign_trainable(model, params)
                record = _epoch_record(epoch, stats, store.status(), time.perf_counter() - epoch_start)
                if validation is not None:
                    record.update(_evaluate(model, cfg.loss, *validation))
                history.append(record)
                progress.set_epoch(epoch, cfg.epochs, loss=f"{record['loss']:.4f}",
                                   val_acc=(f"{record['val_accuracy']:.4f}"
                                            if "val_accuracy" in record else None))
                logger.info("epoch %d/%d: %s", epoch, cfg.epochs, record)
                if stop_when is not None and stop_when(record):
                    break


def _run_job(frame, spec: ReplicaSpec) -> list[dict]:
    rows = frame.mapInArrow(functools.partial(run_partition, spec=spec), STATS_DDL).collect()
    return [row.asDict() for row in rows]


def _epoch_record(epoch: int, stats: list[dict], status: dict, seconds: float) -> dict:
    examples = sum(s["examples"] for s in stats)
    staleness = status.get("staleness", {})
    return {
        "epoch": epoch,
        "loss": sum(s["loss_sum"] for s in stats) / max(examples, 1),
        "examples": examples,
        "steps": sum(s["steps"] for s in stats),
        "updates": status["updates_applied"],
        "staleness_mean": float(staleness.get("mean", 0.0)),
        "staleness_max": int(staleness.get("max", 0)),
        "replicas": len(stats),
        "wall_time_s": seconds,
        "compute_s": sum(s["compute_s"] for s in stats),
        "comm_s": sum(s["comm_s"] for s in stats),
    }


def _check_validation(validation_data, num_features: int):
    if validation_data is None:
        return None
    try:
        x, y = validation_data
    except (TypeError, ValueError) as exc:
        raise TypeError("validation_data must be a pair (x, y) of numpy arrays") from exc
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if x.ndim != 2 or x.shape[1] != num_features or len(x) != len(y):
        raise ValueError(f"validation_data has x of shape {x.shape} and y of shape {y.shape}; "
                         f"expected (n, {num_features}) and (n,)")
    return x, y


def _evaluate(model, loss, x: np.ndarray, y: np.ndarray) -> dict:
    predictions = model(x, training=False).numpy()
    units = predictions.shape[-1]
    y_true = y.reshape(-1, 1) if units == 1 and loss_name(loss) not in SPARSE_LOSSES else y
    record = {"val_loss": float(np.mean(resolve_loss(loss)(y_true, predictions)))}
    name = loss_name(loss)
    if name in SPARSE_LOSSES:
        record["val_accuracy"] = float(np.mean(np.argmax(predictions, axis=-1) == y))
    elif name in ("binary_crossentropy", "BinaryCrossentropy"):
        record["val_accuracy"] = float(np.mean((predictions[:, 0] > 0.5) == (y > 0.5)))
    return record
