"""``Downpour``: asynchronous SGD with a master model server on the driver (DistBelief §4.1).

Driver side. Each epoch is one Spark job over the cached, validated DataFrame: every partition is
a model replica (``replica.loop.run_partition`` inside ``mapInArrow``) that fetches parameters
from and pushes gradients to the server, which applies each push on arrival with the update rule.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from sparkdownpour import data, optimizers
from sparkdownpour.callbacks import Callback, LambdaCallback
from sparkdownpour.config import DownpourConfig
from sparkdownpour.data.memory import check_estimate_fits, estimate_from_summary
from sparkdownpour.data.sparse import is_sparse_frame
from sparkdownpour.driver_model import (
    adopt_server_state,
    device_options,
    driver_cpu,
    raise_if_no_gpu,
    state_info,
)
from sparkdownpour.epoch_records import check_validation, epoch_record, evaluate
from sparkdownpour.errors import ParameterServerError
from sparkdownpour.history import TrainingResult
from sparkdownpour.keras_model import (
    assign_trainable,
    loss_name,
    state_arrays,
    trainable_arrays,
)
from sparkdownpour.observe.links import announce, read_token_file
from sparkdownpour.observe.progress import ServerProgress, expected_updates
from sparkdownpour.reachability import check_bindable, check_reachable, replica_nice
from sparkdownpour.replica.dense_stack import shipped_model
from sparkdownpour.replica.devices import device_label
from sparkdownpour.replica.easgd import run_easgd_partition
from sparkdownpour.replica.loop import run_partition
from sparkdownpour.replica.priority import at_spec_nice
from sparkdownpour.replica.push_period import push_periods
from sparkdownpour.replica.spec import STATS_DDL, ReplicaSpec
from sparkdownpour.replica.sync import run_sync_partition
from sparkdownpour.replica_count import merged_for_slots, plan_replicas, requested_replicas, task_slots
from sparkdownpour.resident_replicas import ResidentReplicas, resident_tasks
from sparkdownpour.server.checkpoint import Checkpointer, latest_checkpoint
from sparkdownpour.server.master import serve_master
from sparkdownpour.session import driver_address, num_partitions, task_cpus
from sparkdownpour.spark_jobs import cancel_run, describe, job_group
from sparkdownpour.trainer import Run, Trainer, Validated
from sparkdownpour.transport.http_server import tls_context

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0  # the reachability probe's connect/read timeout (docs/connect.md)


class Downpour(Trainer):
    """Downpour SGD on Spark.

    Args:
        model: a keras.Model (trained in place) or a zero-argument function that builds one
            (shipped to executors with cloudpickle).
        config: a ``DownpourConfig``; or give its fields as keyword arguments instead (loss,
            optimizer, learning_rate, batch_size, epochs, n_fetch, n_push, num_shards, ...).

    Raises:
        TypeError, ValueError: a knob of the wrong type or value, named with what was received.
    """

    algorithm = "downpour"
    config_class = DownpourConfig

    def __init__(self, model, config: DownpourConfig | None = None, **kwargs) -> None:
        super().__init__(model, config, **kwargs)
        self._rule = optimizers.get(self.config.optimizer, learning_rate=self.config.learning_rate) \
            if isinstance(self.config.optimizer, str) else self.config.optimizer

    def fit(self, df, features_col: str | Sequence[str] = "features", label_col: str = "label", *,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None,
            stop_when: Callable[[dict], bool] | None = None,
            resume: bool = False, log_dir: str | None = None,
            mlflow: bool = False, callbacks: Sequence[Callback] | None = None) -> TrainingResult:
        """Train on ``df``.

        Args:
            df: a DataFrame (classic or Spark Connect session) holding the features and labels.
            features_col: a vector or ``array<float|double>`` column, or several numeric columns.
            label_col: an integer or double column.
            validation_data: ``(x, y)`` numpy arrays scored on the driver after every epoch
                (``val_loss``, and ``val_accuracy`` for classification).
            stop_when: ends training early when it returns True for an epoch's history record.
            resume: continue from the newest valid checkpoint in ``checkpoint_dir`` (written by
                an earlier, interrupted ``fit`` with the same model, data partitioning and
                knobs): completed epochs are skipped and the interrupted one resumes after the
                last mini-batch each partition had applied. Without one it starts afresh.
            log_dir: write every epoch's numeric record fields as TensorBoard scalars there.
            mlflow: log the knobs, per-epoch metrics and the final model to the active MLflow
                run (one is started if none is active).
            callbacks: ``sparkdownpour.callbacks.Callback`` instances (``on_server_start``,
                ``on_epoch_end``, ...).

        Returns:
            ``TrainingResult(model, history)``. While it runs, the master model server serves a
            live dashboard; its one-time link is logged and kept in ``history.info["dashboard"]``.

        Raises:
            ValueError, TypeError: bad data (naming the column), labels the loss cannot take.
            ParameterServerError: a replica lost the master model server.
        """
        return self._fit(df, features_col, label_col, resume=resume, log_dir=log_dir,
                         mlflow=mlflow, callbacks=callbacks, validation_data=validation_data,
                         stop_when=stop_when)

    sizes_cache_in_validation = True

    def _cache(self, prepared, run: Run):
        if self.config.num_replicas is not None:
            return requested_replicas(prepared, self.config.num_replicas)
        frame, run.options["partitions_given"] = merged_for_slots(prepared)
        return frame  # cached by _validate, once it knows the cache will fit

    def _validate(self, frame, prepared, features_col, label_col, run: Run) -> Validated:
        # One pass checks the data and sizes its cache (data.memory), then it is cached.
        summary, spark = data.validate(frame, features_col, label_col), frame.sparkSession
        check_estimate_fits(estimate_from_summary(summary, spark), features_col, spark)
        partitions, slots = summary.partitions or num_partitions(frame), task_slots(spark)
        action, replicas = plan_replicas(partitions, summary.nonempty_partitions,
                                         summary.num_rows, slots, self.config.batch_size,
                                         wanted=self.config.num_replicas)
        if action == "spread":  # see replica_count
            frame = frame.repartition(replicas)  # once, before caching
        frame = cached = run.options["cached"] = frame.cache()
        if action == "merge":  # not merged before the pass (Spark Connect): now
            frame = cached.coalesce(replicas)
        info = {"partitions": replicas, "rule": repr(self._rule)}
        if self.config.num_replicas is None:
            given = run.options["partitions_given"] or partitions
            info["replicas_chosen"] = (
                f"{replicas} replicas for {given} partitions on {slots} task slots"
                + (f" (rows in {summary.nonempty_partitions}: spread by a shuffle)"
                   if action == "spread" else ""))
        return Validated(summary, info=info, label_frame=cached, frame=frame)

    def _release(self, frame, run: Run) -> None:
        run.options.get("cached", frame).unpersist()  # _validate's (spread: a new frame)

    def _fit_on_prepared_data(self, cached, model, spec, history, run: Run) -> None:
        validation = check_validation(run.options["validation_data"], history.info["features"])
        self._train(cached, model, spec, history, validation, run)

    def _train(self, prepared, model, spec, history, validation, run: Run) -> None:
        cfg = self.config
        spark = prepared.sparkSession
        # A sync round's answers wait for its last push: give up before the replicas do.
        store_kwargs = {"divergence_factor": cfg.divergence_factor,
                        "max_staleness": cfg.max_staleness,
                        "sync_timeout": 0.8 * cfg.request_timeout}
        # easgd: the server holds the center variable; the replicas run the rule themselves.
        rule = optimizers.ElasticAverage() if cfg.mode == "easgd" else self._rule
        params = trainable_arrays(model)
        with driver_cpu():
            store_kwargs["state"] = state_arrays(model)  # BatchNorm statistics: model_state
        config_hash = _config_hash(cfg, self._rule, [p.shape for p in params], history.info)
        partitions = history.info["partitions"]
        total_updates = expected_updates(cfg, history.info["rows"], partitions)
        tls, tls_ca = _tls(cfg)
        host = driver_address(spark, cfg.server_host)
        check_bindable(host)
        max_request_bytes = int(cfg.max_request_mb * 2**20)
        with serve_master(params, rule, num_shards=cfg.num_shards,
                          processes=cfg.shard_processes, store_kwargs=store_kwargs,
                          host=host, port=cfg.server_port,
                          token=read_token_file(cfg.token_file), tls=tls,
                          max_request_bytes=max_request_bytes,
                          on_shard_death=functools.partial(cancel_run, spark,
                                                           history.info["run_id"])) as master, \
                contextlib.ExitStack() as stack:
            store, server = master.store, master.server
            tasks = resident_tasks(spark, partitions, history.info) if cfg.resident else None
            replicas = None if tasks is None else stack.enter_context(ResidentReplicas(
                partitions, tasks, host=host, token=server.token,
                max_request_bytes=max_request_bytes, timeout=cfg.request_timeout,
                ssl_context=tls and tls_context(*tls)))
            # Every executor must reach every server before a replica starts (or fail now).
            history.info["probe_s"] = check_reachable(
                spark, (server.url, *master.shard_urls, *([replicas.url] if replicas else ())),
                server.token, tasks=partitions,
                timeout=min(cfg.request_timeout, PROBE_TIMEOUT_S), ca_data=tls_ca, host=host)
            first_epoch, warm_start = 1, bool(cfg.warmstart_steps)
            if run.resume:  # the servers are up, no replica has run yet
                first_epoch, warm_start = _resume(store, cfg, config_hash, history, warm_start)
            epochs_done = {"n": first_epoch - 1}
            # Sync rounds carry no exactly-once positions: only epoch-end checkpoints are
            # consistent (a resume redoes the interrupted epoch from the last one).
            sync = cfg.mode == "sync"
            checkpoints = Checkpointer(store, cfg.checkpoint_dir, config_hash=config_hash,
                                       keep=cfg.checkpoint_keep,
                                       every_updates=0 if sync else cfg.checkpoint_every_updates,
                                       every_s=float("inf") if sync else cfg.checkpoint_every_s,
                                       extra=lambda: {"epochs_done": epochs_done["n"]}) \
                if cfg.checkpoint_dir is not None else None
            history.info["server"] = server.url
            if master.shard_urls:
                history.info["shards"] = list(master.shard_urls)
            if master.dashboard is not server:  # shard processes: the driver serves it
                history.info["dashboard_server"] = master.dashboard.url
            run_id = history.info["run_id"]
            view = announce(master.dashboard, history, cfg.verbose, f"Downpour run {run_id[:8]}",
                            plan={"epochs": cfg.epochs, "updates": total_updates})
            if view is not None:
                run.callbacks.append(LambdaCallback(
                    on_epoch_end=lambda epoch, logs: view.note_record(logs)))
            run.callbacks.on_server_start(server)
            shipped, stack = shipped_model(model, spec, cfg.precision, is_sparse_frame(prepared))
            base = ReplicaSpec(run_id=run_id, model=shipped, url=server.url,
                               token=server.token, batch_size=cfg.batch_size, epoch=0,
                               **push_periods(cfg, history.info["rows"], partitions, rule), seed=cfg.seed,
                               request_timeout=cfg.request_timeout, task_cpus=task_cpus(spark),
                               request_retries=cfg.request_retries,
                               skip_nonfinite=cfg.skip_nonfinite, clip_norm=cfg.clip_norm or 0.0,
                               tls_ca=tls_ca, devices=device_options(cfg),
                               precision=cfg.precision, shard_urls=master.shard_urls,
                               compression=cfg.compression, topk_ratio=cfg.topk_ratio,
                               overlap=cfg.overlap, state_replicas=partitions, dense_stack=stack,
                               nice=replica_nice(spark, cfg.replica_nice),
                               step_callbacks=run.callbacks.replica_callbacks(),
                               **_easgd_fields(cfg, self._rule, partitions))
            history.info["replica_nice"] = base.nice
            with ServerProgress(store, total_updates, cfg.verbose) as progress, \
                    (checkpoints or contextlib.nullcontext()):
                if warm_start:
                    store.open_epoch(0)
                    with job_group(spark, describe("downpour", run_id, f"warm start "
                                                   f"({cfg.warmstart_steps} steps on one "
                                                   "replica)"), run_id=run_id):
                        _run_job(prepared.coalesce(1),
                                 replace(base, max_steps=cfg.warmstart_steps, push_period_cap=0))
                if replicas is not None and first_epoch <= cfg.epochs:  # resumed: some left
                    replicas.start(prepared, base, functools.partial(
                        _resident_job, spark=spark, run_id=run_id,
                        what=f"epochs {first_epoch}-{cfg.epochs} ({history.info['epoch_jobs']})"),
                        cancel=functools.partial(cancel_run, spark, run_id))
                for epoch in range(first_epoch, cfg.epochs + 1):
                    progress.set_epoch(epoch, cfg.epochs)
                    record = self._epoch(prepared, base, epoch, store, model, validation,
                                         partitions, replicas)
                    epochs_done["n"] = epoch
                    if checkpoints is not None:
                        checkpoints.write()
                    run.record(history, record, epoch)
                    history.info["devices"] = sorted(set(history.info.get("devices", [])) | {
                        device_label(d["device"], d["gpu_addresses"])
                        for d in record["devices"].values()})
                    progress.set_epoch(epoch, cfg.epochs, loss=f"{record['loss']:.4f}",
                                       val_acc=(f"{record['val_accuracy']:.4f}"
                                                if "val_accuracy" in record else None))
                    logger.info("epoch %d/%d: %s", epoch, cfg.epochs, record)
                    stop_when = run.options["stop_when"]
                    if stop_when is not None and stop_when(record):
                        break
            _, params = store.fetch()
            with driver_cpu():
                assign_trainable(model, params)
            adopt_server_state(model, store)
            if state_info(model) is not None:
                history.info["model_state"] = state_info(model, store.status(), partitions)

    def _epoch(self, prepared, base: ReplicaSpec, epoch: int, store, model, validation,
               partitions: int, replicas: ResidentReplicas | None) -> dict:
        """One epoch (a Spark job, or a post to the resident replicas); the driver's model then
        holds the server's parameters. Returns the epoch's history record."""
        cfg = self.config
        started = time.perf_counter()
        store.open_epoch(epoch)  # stragglers of earlier epochs are refused from now on
        if replicas is not None:
            stats = replicas.run_epoch(epoch)
        else:
            with job_group(prepared.sparkSession,
                           describe("downpour", base.run_id, f"epoch {epoch}/{cfg.epochs} "
                                    f"({partitions} replicas, {cfg.mode})"),
                           run_id=base.run_id):
                stats = _run_job(prepared, replace(base, epoch=epoch), cfg.mode)
        _, params = store.fetch()
        with driver_cpu():
            assign_trainable(model, params)
        adopt_server_state(model, store)
        status = store.status()
        record = epoch_record(epoch, stats, status, time.perf_counter() - started)
        if "model_state" in status:  # how many partitions' reports the state averages
            record["state_partitions"] = status["model_state"]["partitions_reporting"]
        if status["diverging"]:
            logger.warning("epoch %d: diverging replicas: %s", epoch, status["diverging"])
        if validation is not None:
            with driver_cpu():
                record.update(evaluate(model, cfg.loss, *validation))
        return record


def _resume(store, cfg: DownpourConfig, config_hash: str, history, warm_start: bool
            ) -> tuple[int, bool]:
    """Restore the newest usable checkpoint into ``store``; returns (first epoch, warm start)."""
    state = latest_checkpoint(cfg.checkpoint_dir, config_hash=config_hash,
                              num_shards=cfg.num_shards)
    if state is None:
        logger.warning("resume=True but no usable checkpoint in %s: starting afresh",
                       cfg.checkpoint_dir)
        return 1, warm_start
    store.restore_state(state)
    first_epoch = state["extra"].get("epochs_done", 0) + 1
    history.info["resumed_from"] = {"path": state["path"], "step": state["step"],
                                    "epochs_done": first_epoch - 1}
    logger.info("resuming from %s at step %d, epoch %d", state["path"], state["step"],
                first_epoch)
    return first_epoch, warm_start and store.ledger.epoch in (None, 0)


def _easgd_fields(cfg: DownpourConfig, rule, replicas: int) -> dict:
    if cfg.mode != "easgd":
        return {}
    if not callable(getattr(rule, "get_config", None)):
        raise TypeError(f"mode='easgd' runs the rule on the replicas and needs an UpdateRule "
                        f"from sparkdownpour.optimizers (or its name), received {rule!r}")
    alpha = cfg.easgd_alpha if cfg.easgd_alpha is not None else 0.9 / replicas
    return {"local_rule": rule.get_config(), "easgd_tau": cfg.easgd_tau,
            "easgd_alpha": float(alpha)}


def _tls(cfg: DownpourConfig):
    """``(cert, key)`` for the server (checked here, loaded again where it serves) and the CA
    text replicas verify it with; ``(None, None)``: plain HTTP."""
    if cfg.tls_cert is None:
        return None, None
    tls = (str(cfg.tls_cert), str(cfg.tls_key))
    tls_context(*tls)  # a bad certificate or key fails here, before any server starts
    ca_path = str(cfg.tls_ca or cfg.tls_cert)
    try:
        with open(ca_path, encoding="ascii") as handle:
            return tls, handle.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read tls_ca {ca_path!r} (PEM text): {e}") from e


def _config_hash(cfg: DownpourConfig, rule, shapes, info: dict) -> str:
    """What must match for a checkpoint to be resumable: model, rule, data layout, cadence."""
    described = {"shapes": [list(s) for s in shapes], "rule": repr(rule),
                 "loss": str(loss_name(cfg.loss)), "batch_size": cfg.batch_size,
                 "n_push": cfg.n_push, "seed": cfg.seed, "rows": info["rows"],
                 "partitions": info["partitions"], "warmstart_steps": cfg.warmstart_steps}
    # Absent at their defaults, so checkpoints written before these knobs stay resumable.
    if cfg.num_shards != 1:
        described["num_shards"] = cfg.num_shards
    if cfg.mode != "async":
        described["mode"] = cfg.mode
    if cfg.resident:  # the same mini-batches, unless Arrow's byte limit cuts batches short
        described["resident"] = True
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _run_job(frame, spec: ReplicaSpec, mode: str = "async") -> list[dict]:
    function = {"async": run_partition, "sync": run_sync_partition,
                "easgd": run_easgd_partition}[mode]
    # sync: a barrier stage, every replica's task running at once (Spark refuses to start
    # one with more partitions than free task slots).
    rows = _collected(lambda: frame.mapInArrow(functools.partial(at_spec_nice, function, spec=spec),
                                               STATS_DDL, barrier=mode == "sync").collect(),
                      f"epoch {spec.epoch}")
    return [row.asDict() for row in rows]


def _resident_job(collect, *, spark, run_id: str, what: str) -> list:
    """The resident replicas' stage (``resident_replicas``), tagged as the run's."""
    with job_group(spark, describe("downpour", run_id, what), run_id=run_id):
        return _collected(collect, what)


def _collected(collect, what: str) -> list:
    try:
        return collect()
    except Exception as e:
        # A replica that lost the server fails its task (and its retries) with a
        # ParameterServerError; say so on the driver with the same type, not as a Py4J error.
        raise_if_no_gpu(e, what)  # device="gpu" where no GPU is usable
        text = str(e)
        if "ParameterServerError" in text:
            start = text.find("ParameterServerError")
            detail = text[start:start + 600].splitlines()[0]
            raise ParameterServerError(f"{what} failed: a replica lost the "
                                       f"parameter server ({detail})") from e
        raise
