"""``Sandblaster``: batch L-BFGS where every loss/gradient evaluation is a Spark stage (DistBelief §4.2).

Driver side. The data set is validated, split into many more portions than cores (so fast
executors take more of them: DistBelief's load balancing) and cached once as numpy blocks. The
coordinator (``lbfgs.coordinator``) runs L-BFGS with every vector, the history included, on the
parameter shards; each objective evaluation is one Spark stage whose tasks fetch the evaluation
point from the shards and return one partial sum per portion (``lbfgs.stage``: DataFrame APIs
only, so a Spark Connect session works as a classic one does). Evaluations are pure functions of
the data and the point, so Spark's speculative backup tasks (``spark.speculation=true``) and
task retries are safe: one result per portion is counted, and checked.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace

import numpy as np

from sparkdownpour import data
from sparkdownpour.callbacks import Callback
from sparkdownpour.config import SandblasterConfig
from sparkdownpour.data import summary_memo
from sparkdownpour.data.sparse import is_sparse_frame
from sparkdownpour.driver_model import (
    device_options,
    driver_cpu,
    raise_if_no_gpu,
)
from sparkdownpour.history import TrainingResult
from sparkdownpour.keras_model import (
    assign_trainable,
    trainable_arrays,
)
from sparkdownpour.lbfgs import checkpoints
from sparkdownpour.lbfgs.blocks import (
    block_rows,
    cache_and_check,
    check_without_caching,
    in_portions,
    numpy_blocks,
)
from sparkdownpour.lbfgs.coordinator import LBFGSOptions, minimize
from sparkdownpour.lbfgs.linear import linear_form
from sparkdownpour.lbfgs.resident import ResidentEvaluations
from sparkdownpour.lbfgs.shard_server import ShardGroup
from sparkdownpour.lbfgs.stage import StageSpec
from sparkdownpour.lbfgs.stage import evaluate as evaluate_stage
from sparkdownpour.lbfgs.statistics import fixed_state
from sparkdownpour.observe.links import iteration_dashboard
from sparkdownpour.reachability import check_bindable, check_reachable
from sparkdownpour.session import conf_value, default_parallelism, driver_address, task_cpus
from sparkdownpour.spark_jobs import cancel_run, describe, job_group
from sparkdownpour.trainer import Run, Trainer, Validated

logger = logging.getLogger(__name__)

SMALL_AGGREGATE_BYTES = 64 * 2**20  # float64 partial gradients the driver collects directly
PROBE_TIMEOUT_S = 10.0  # the reachability probe's connect/read timeout (docs/connect.md)


class Sandblaster(Trainer):
    """Sandblaster L-BFGS on Spark.

    Args:
        model: a keras.Model (trained in place) or a zero-argument function that builds one.
        config: a ``SandblasterConfig``; or give its fields as keyword arguments instead (loss,
            max_iter, tol, gtol, l2, history_size, num_shards, portions_per_core, ...).

    Raises:
        TypeError, ValueError: a knob of the wrong type or value, named with what was received.
    """

    algorithm = "sandblaster"
    config_class = SandblasterConfig

    def fit(self, df, features_col: str | Sequence[str] = "features", label_col: str = "label",
            *, num_portions: int | None = None, resume: bool = False,
            log_dir: str | None = None, mlflow: bool = False,
            callbacks: Sequence[Callback] | None = None) -> TrainingResult:
        """Minimise the mean loss (+ L2) over ``df``.

        Args:
            df: a DataFrame holding the features and labels.
            features_col: a vector or ``array<float|double>`` column, or several numeric columns.
            label_col: an integer or double column.
            num_portions: overrides ``portions_per_core x spark.default.parallelism``.
            resume: start from the point in the newest matching checkpoint in
                ``checkpoint_dir`` (written every ``checkpoint_every`` iterations and at the
                end of an earlier ``fit``); see ``lbfgs.checkpoints``. Without a usable one it
                starts afresh.
            log_dir: TensorBoard scalars per iteration, as in ``Downpour.fit``.
            mlflow: as in ``Downpour.fit``.
            callbacks: ``sparkdownpour.callbacks.Callback`` instances; ``on_epoch_end`` gets
                each L-BFGS iteration's record.

        Returns:
            ``TrainingResult(model, history)``: one history record per L-BFGS iteration
            (objective, grad_norm, step_size, evaluations, wall_time_s);
            ``history.info["stop_reason"]`` says why it stopped. While it runs, a small
            dashboard server on the driver charts the objective and gradient norm; its one-time
            link is in ``history.info["dashboard"]``.

        Raises:
            ValueError, TypeError: bad data (naming the column), labels the loss cannot take.
        """
        return self._fit(df, features_col, label_col, resume=resume, log_dir=log_dir,
                         mlflow=mlflow, callbacks=callbacks, num_portions=num_portions)

    def _sizes_cache_first(self, prepared, run: Run) -> bool:
        return self._plan(prepared, run)["rows_key"] is None

    def _plan(self, prepared, run: Run) -> dict:
        """How this fit reads its data, chosen once: ``evaluation``, ``portions``, and
        ``rows_key`` (``data.summary_memo``), not None where the data is read in place:
        resident evaluators over rows Spark holds cached already, which are neither cached
        again as blocks nor sized (``lbfgs.blocks.check_without_caching``)."""
        if "evaluation" not in run.options:
            spark = prepared.sparkSession
            evaluation, portions = _evaluation_plan(run.options["num_portions"], self.config,
                                                    spark)
            key = summary_memo.cached_rows_key(prepared) if evaluation == "resident" else None
            run.options.update(session=spark, evaluation=evaluation, portions=portions,
                               rows_key=key)
        return run.options

    def _cache(self, prepared, run: Run):
        plan = self._plan(prepared, run)
        if plan["rows_key"] is not None:
            return None  # nothing of ours to cache; the portions are chosen after the check
        with job_group(prepared.sparkSession, describe("sandblaster", run.run_id,
                                                       "count the data's partitions"),
                       run_id=run.run_id):
            return numpy_blocks(prepared, plan["portions"])  # lazy, but for one small job

    def _validate(self, blocks, prepared, features_col, label_col, run: Run) -> Validated:
        portions, key = run.options["portions"], run.options["rows_key"]
        memo_key = (key, "sandblaster blocks", portions) if key else None
        stats = summary_memo.recall(memo_key)
        remembered = stats is not None
        if stats is None:
            what = "check" if key else "cache and check"
            with job_group(prepared.sparkSession, describe(
                    "sandblaster", run.run_id, f"{what} {portions} portions"), run_id=run.run_id):
                # one pass: parse, (cache) and validate
                stats = check_without_caching(prepared, portions) if key else \
                    cache_and_check(blocks)
            if stats is not None and stats.clean:
                summary_memo.remember(memo_key, stats)  # None: nothing to remember
        cached_s = time.perf_counter() - run.started
        if stats is None or not stats.clean:
            data.validate(prepared, features_col, label_col)  # names the column and value
            raise ValueError(f"the data failed the caching pass's checks ({stats}) but not "
                             "data.validate; please report this")
        summary = data.DataSummary(stats.rows, stats.max_cols, stats.label_min, stats.label_max)
        read_from = None
        if key:
            # The check counted the partitions holding rows: no job to find empty ones. The
            # resident evaluators parse these rows themselves (lbfgs.resident); the blocks,
            # never cached, serve only a BatchNorm model's statistics passes.
            frame, shuffled = in_portions(prepared, portions, nonempty=stats.nonempty)
            run.options["rows"] = (frame, shuffled, is_sparse_frame(prepared))
            read_from = block_rows(frame)
        return Validated(summary, frame=read_from, info={"partitions": stats.portions,
                                        "shards": self.config.num_shards,
                                        "evaluation": run.options["evaluation"],
                                        "read_in_place": key is not None,
                                        "data_check": "remembered" if remembered else "ran",
                                        "cache_s": cached_s},
                         non_integer_labels=stats.non_integer_labels)

    def _release(self, blocks, run: Run) -> None:
        if blocks is not None:  # read in place: nothing was cached, and the user's cache stays
            blocks.unpersist()

    def _fit_on_prepared_data(self, blocks, model, spec, history, run: Run) -> None:
        history.info["setup_s"] = time.perf_counter() - run.started
        result = self._minimize(blocks, model, spec, history, run)
        with driver_cpu():
            assign_trainable(model, _unflatten(result.x, trainable_arrays(model)))
        history.epochs.extend(result.records)
        history.info.update(stop_reason=result.stop_reason, message=result.message,
                            objective=result.value, grad_norm=result.grad_norm,
                            iterations=result.iterations, evaluations=result.evaluations)
        logger.info("sandblaster stopped after %d iterations: %s", result.iterations,
                    result.message)

    def _minimize(self, blocks, model, spec, history, run: Run):
        cfg = self.config
        spark = run.options["session"]
        host = driver_address(spark, cfg.server_host)
        check_bindable(host)
        arrays = trainable_arrays(model)
        x0 = np.concatenate([a.ravel() for a in arrays]).astype(np.float64)
        digest = checkpoints.config_hash(cfg, [a.shape for a in arrays], history.info["rows"],
                                         history.info["features"])
        done = 0  # iterations an earlier, checkpointed run did
        found = checkpoints.resume_point(cfg.checkpoint_dir, digest) if run.resume else None
        if found is not None:
            x0, done, path = found
            history.info["resumed_from"] = {"path": path, "iterations_done": done}
            logger.info("resuming Sandblaster from %s after iteration %d", path, done)
        # Kernels are regularised, biases (1-D variables) only when asked.
        mask = np.concatenate([np.full(a.size, 1.0 if a.ndim > 1 or cfg.l2_biases else 0.0)
                               for a in arrays])
        options = LBFGSOptions(max_iter=max(cfg.max_iter - done, 0), tol=cfg.tol, gtol=cfg.gtol,
                               history_size=cfg.history_size, l2=cfg.l2, c1=cfg.c1, c2=cfg.c2,
                               max_line_search=cfg.max_line_search, f_noise=cfg.f_noise)
        run_id = history.info["run_id"]

        def in_job(what: str):
            return job_group(spark, describe("sandblaster", run_id, what), run_id=run_id)

        with ShardGroup(x0.size, cfg.num_shards, host=host,
                        max_request_bytes=int(cfg.max_request_mb * 2**20),
                        timeout=cfg.request_timeout,
                        processes=cfg.shard_processes) as shards, \
                _IterationProgress(cfg.max_iter, cfg.verbose) as progress, \
                iteration_dashboard(host, history, cfg.verbose,
                                    f"Sandblaster run {run_id[:8]}") as view, \
                ExitStack() as stack:
            history.info["shard_urls"] = shards.urls
            linear = None if spec.inputs else linear_form(model, spec.loss)
            # The numpy evaluator (lbfgs.linear) builds no model: shipped as its JSON, not its
            # builder, whose unpickling alone would import Keras and TensorFlow on every
            # executor; a task given a GPU builds the TensorFlow evaluator from the JSON.
            stage_model = replace(spec, builder=None, config_json=model.to_json()) \
                if linear else spec
            base = StageSpec(run_id=run_id, model=stage_model, shard_urls=tuple(shards.urls),
                             token=shards.token, request_timeout=cfg.request_timeout,
                             task_cpus=task_cpus(spark), devices=device_options(cfg),
                             linear=linear)
            resident = None
            if run.options["evaluation"] == "resident":
                resident = stack.enter_context(ResidentEvaluations(
                    blocks, history.info["partitions"], x0.size, host=host, token=shards.token,
                    max_request_bytes=int(cfg.max_request_mb * 2**20),
                    timeout=cfg.request_timeout, rows=run.options.get("rows")))
            history.info["probe_s"] = check_reachable(
                spark, shards.urls + ([resident.url] if resident else []), shards.token,
                tasks=history.info["partitions"],
                timeout=min(cfg.request_timeout, PROBE_TIMEOUT_S), host=host)
            run.callbacks.on_server_start(shards)
            base = replace(base, state=fixed_state(  # BatchNorm: lbfgs.statistics
                model, blocks, history.info["partitions"], base, shards.space, x0,
                history.info, in_job))
            counter = itertools.count(1)
            depth = None  # resident evaluators' sums are added up on the board
            if resident is None:
                depth = history.info["aggregation_depth"] = _aggregation_depth(
                    cfg, history.info["partitions"], x0.size)
            else:
                resident.start(base, lambda collect: _run_resident(collect, in_job, history),
                               cancel=lambda: cancel_run(spark, run_id, "evaluators stuck"))

            def evaluate(point: str) -> tuple[float, np.ndarray]:
                number = next(counter)
                if resident is not None:
                    loss_sum, grad_sum, rows, devices = resident.evaluate(point)
                else:
                    stage = replace(base, point=point, version=number)
                    with in_job(f"evaluation {number} ({history.info['partitions']} portions)"):
                        try:
                            loss_sum, grad_sum, rows, devices = evaluate_stage(
                                blocks, stage, history.info["partitions"], depth)
                        except Exception as e:
                            raise_if_no_gpu(e, f"evaluation {number}")
                            raise
                history.info["devices"] = sorted(set(history.info.get("devices", [])) |
                                                 set(devices))
                if rows != history.info["rows"]:  # a lost or doubled portion must not pass
                    raise RuntimeError(f"evaluation {number} covered {rows} rows, the data has "
                                       f"{history.info['rows']}")
                return loss_sum / rows, grad_sum / rows

            saver = checkpoints.IterationCheckpoints(
                cfg.checkpoint_dir, every=cfg.checkpoint_every, keep=cfg.checkpoint_keep,
                digest=digest, done=done,
                fetch_x=lambda: shards.space.run([["get", "x"]]).gets["x"]) \
                if cfg.checkpoint_dir is not None else None

            def callback(record: dict) -> None:  # None: never asks the coordinator to stop
                record["iteration"] += done  # numbered from the first run's start
                progress.update(record)
                view.note_record(record)
                run.callbacks.on_epoch_end(record["iteration"], record)
                if saver is not None:
                    saver.note(record)

            result = minimize(shards.space, evaluate, x0, options, mask=mask, callback=callback)
            if saver is not None:  # the shards still hold x: the end point is resumable too
                saver.finish(done + result.iterations, result.value)
            return result


def _evaluation_plan(num_portions: int | None, cfg: SandblasterConfig, spark
                     ) -> tuple[str, int]:
    """``(evaluation, portions)``: resident with one portion per task slot where a barrier
    stage can hold them all, else a stage per evaluation over ``portions_per_core`` x
    parallelism portions (or ``num_portions``)."""
    if num_portions is not None and (isinstance(num_portions, bool) or
                                     not isinstance(num_portions, int) or num_portions < 1):
        raise ValueError(f"num_portions must be an integer >= 1, received {num_portions!r}")
    parallelism = default_parallelism(spark)
    slots = max(parallelism // task_cpus(spark), 1)
    dynamic = (conf_value(spark, "spark.dynamicAllocation.enabled", "false") or "").lower()
    if cfg.evaluation == "resident" and dynamic != "true" and (num_portions or slots) <= slots:
        return "resident", num_portions or slots
    return "stages", num_portions or cfg.portions_per_core * parallelism


def _run_resident(collect, in_job, history) -> list:
    """The resident evaluators' Spark job (``lbfgs.resident``), tagged as the run's."""
    with in_job(f"resident evaluators ({history.info['partitions']} portions)"):
        try:
            return collect()
        except Exception as e:
            raise_if_no_gpu(e, "the resident evaluators")
            raise


def _aggregation_depth(cfg: SandblasterConfig, portions: int, size: int) -> int:
    """The configured depth, else 1 while the driver can take every portion's gradient at once.

    A deeper one adds up the portions' results in groups on the executors first (``lbfgs.stage``),
    a shuffle stage that costs PySpark about 0.5 s per evaluation; it pays only when many
    portions would each send the driver a large gradient.
    """
    if cfg.aggregation_depth is not None:
        return cfg.aggregation_depth
    return 1 if portions * size * 8 <= SMALL_AGGREGATE_BYTES else 2


def _unflatten(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    splits = np.cumsum([a.size for a in like])[:-1]
    return [part.reshape(a.shape).astype(np.float32) for part, a in zip(np.split(flat, splits), like)]


class _IterationProgress:
    """A tqdm bar over L-BFGS iterations (notebook-aware); silent with ``verbose=0``."""

    def __init__(self, total: int, verbose: int) -> None:
        self._bar = None
        if verbose:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="it", desc="sandblaster", dynamic_ncols=True)

    def __enter__(self) -> _IterationProgress:
        return self

    def update(self, record: dict) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(f=f"{record['objective']:.6g}",
                                  grad=f"{record['grad_norm']:.2e}", evals=record["evaluations"])

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
