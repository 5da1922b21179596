"""The ``fit`` skeleton both trainers share (pyspark's ``fit`` -> ``_fit``, horovod's ``_fit`` ->
``_fit_on_prepared_data``).

``Trainer._fit`` does what every run does, in this order: refuse ``resume`` without a checkpoint
directory, open tracking, project the DataFrame (lazily), check the devices, check that the
cache will fit (unless the trainer does it in its validation pass), cache and validate the data
(the trainer's own way), build the driver's model, check the labels against the loss,
start the history, train (the trainer's own part), and always release the cache. A subclass
gives ``algorithm``, ``config_class`` and four steps: ``_cache``, ``_validate``,
``_fit_on_prepared_data`` and ``_release``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sparkdownpour import data
from sparkdownpour.callbacks import Callback, CallbackList
from sparkdownpour.data.memory import check_cache_fits
from sparkdownpour.driver_model import check_devices_on_driver, driver_cpu, driver_model
from sparkdownpour.history import History, TrainingResult
from sparkdownpour.inputs import check_inputs, unwrap
from sparkdownpour.keras_model import loss_name, output_units
from sparkdownpour.observe.tracking import Tracking

__all__ = ["Run", "Trainer"]


@dataclass
class Run:
    """One ``fit``'s driver-side state, handed to the trainer's steps."""

    run_id: str
    started: float
    callbacks: CallbackList
    resume: bool
    options: dict = field(default_factory=dict)  # the trainer's own fit arguments

    def record(self, history: History, record: dict, step: int) -> None:
        """Append ``record`` to the history and tell the callbacks."""
        history.epochs.append(record)
        self.callbacks.on_epoch_end(step, record)


@dataclass
class Validated:
    """What ``_validate`` learned: the data summary, and run facts for ``history.info``."""

    summary: data.DataSummary
    info: dict = field(default_factory=dict)
    non_integer_labels: int | None = None  # counted already (spares a Spark job), or None
    label_frame: Any = None  # the frame the label checks read (None: the prepared one)
    frame: Any = None  # the frame training reads (None: the cached one), e.g. coalesced


class Trainer:
    """Base of ``Downpour`` and ``Sandblaster``: a model and a validated config."""

    algorithm: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    # True: ``_validate`` checks that the cache will fit from its own pass, before caching
    # (``data.memory.estimate_from_summary``), which spares the separate estimate's job.
    sizes_cache_in_validation: ClassVar[bool] = False

    def __init__(self, model, config=None, **kwargs) -> None:
        self.model = model
        self.config = self.config_class.resolve(config, kwargs)

    def _fit(self, df, features_col: str | Sequence[str], label_col: str, *, resume: bool,
             log_dir: str | None, mlflow: bool, callbacks: Sequence[Callback] | None,
             **options: Any) -> TrainingResult:
        cfg = self.config
        if resume and cfg.checkpoint_dir is None:
            raise ValueError(f"fit(resume=True) needs checkpoint_dir set in the "
                             f"{type(self).__name__} config, where the earlier run wrote its "
                             "checkpoints")
        user_callbacks = CallbackList(callbacks)  # refuses non-callbacks before any Spark job
        tracking = Tracking(log_dir, mlflow, algorithm=self.algorithm, config=cfg)
        run = Run(run_id=uuid.uuid4().hex, started=time.perf_counter(),
                  callbacks=CallbackList([tracking, *user_callbacks.callbacks]), resume=resume,
                  options=options)
        with driver_cpu():  # a model with several inputs: columns mapped and checked
            slots = check_inputs(self.model, df, features_col)
        if slots:
            features_col = [slot.column for slot in slots]  # concatenated in input order
        prepared = data.prepare(df, features_col, label_col)  # lazy (a vector column: 1 row read)
        check_devices_on_driver(cfg.device, prepared.sparkSession)
        if self._sizes_cache_first(prepared, run):  # refuse before an OOM (data.memory)
            check_cache_fits(df, features_col, prepared)
        cached = self._cache(prepared, run)
        try:
            validated = self._validate(cached, prepared, features_col, label_col, run)
            summary = validated.summary
            with driver_cpu():  # the driver never opens a GPU context (replica.devices)
                model, spec = driver_model(self.model, cfg.loss, summary.num_features,
                                           features_col, slots)
            labels = validated.label_frame if validated.label_frame is not None else prepared
            data.check_labels_fit_loss(labels, summary, label_col, loss_name(cfg.loss),
                                       output_units(model),
                                       validated.non_integer_labels
                                       if validated.non_integer_labels is not None
                                       else summary.non_integer_labels)
            history = History(info={"run_id": run.run_id, "rows": summary.num_rows,
                                    "features": summary.num_features, **validated.info})
            with tracking:
                run.callbacks.on_train_begin(history.info)
                frame = validated.frame if validated.frame is not None else cached
                self._fit_on_prepared_data(frame, model, spec, history, run)
                tracking.finish(model, history.info)
        finally:
            self._release(cached, run)
        history.info["wall_time_s"] = time.perf_counter() - run.started
        run.callbacks.on_train_end(history)
        return TrainingResult(unwrap(model) if slots else model, history)

    # -- a trainer's own steps -----------------------------------------------------------

    def _sizes_cache_first(self, prepared, run: Run) -> bool:
        """Whether ``_fit`` estimates the cache's size with its own Spark job before ``_cache``
        (no: the trainer sizes it in its validation pass, or caches nothing of its own)."""
        return not self.sizes_cache_in_validation

    def _cache(self, prepared, run: Run):
        """The cached form of the prepared frame every pass reads (lazy or not)."""
        raise NotImplementedError

    def _validate(self, cached, prepared, features_col, label_col, run: Run) -> Validated:
        """Check the data (a Spark job) and describe it."""
        raise NotImplementedError

    def _fit_on_prepared_data(self, cached, model, spec, history: History, run: Run) -> None:
        """Train ``model`` (the driver's keras.Model) in place; fill ``history``."""
        raise NotImplementedError

    def _release(self, cached, run: Run) -> None:
        """Free what ``_cache`` and ``_validate`` cached; runs whatever happened."""
        raise NotImplementedError
