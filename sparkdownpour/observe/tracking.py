"""Experiment tracking for ``fit(..., log_dir=..., mlflow=...)``: TensorBoard and MLflow.

``Tracking`` is a ``Callback``: it receives every history record as it is appended:
TensorBoard gets one scalar per numeric field at step = epoch (Downpour) or iteration
(Sandblaster); MLflow gets the knobs as params at the start, the same metrics per step, and
the trained model (a ``.keras`` file) plus the run's ``history.info`` as artifacts at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from typing import Any

from sparkdownpour.callbacks import Callback

logger = logging.getLogger(__name__)

__all__ = ["Tracking", "numeric_fields"]

STEP_KEYS = ("epoch", "iteration")


def numeric_fields(record: dict) -> dict[str, float]:
    """The finite int/float fields of a record, the step key left out (bools are not metrics)."""
    return {k: float(v) for k, v in record.items()
            if k not in STEP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def _require_mlflow():
    try:
        import mlflow
    except ImportError as e:
        raise RuntimeError("fit(mlflow=True) needs the mlflow package, which is not installed: "
                           "pip install 'sparkdownpour[mlflow]' (or leave mlflow=False)") from e
    return mlflow


def _params(config: Any) -> dict[str, str]:
    """A config dataclass as MLflow params (strings, at most 500 characters each)."""
    fields = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {k: str(v)[:500] for k, v in fields.items()}


class Tracking(Callback):
    """Context manager around a fit; a no-op when neither ``log_dir`` nor ``mlflow`` is set."""

    def __init__(self, log_dir: str | os.PathLike | None, mlflow: bool, *, algorithm: str,
                 config: Any) -> None:
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path (str or os.PathLike) or None, got "
                            f"{type(log_dir).__name__}")
        if not isinstance(mlflow, bool):
            raise TypeError(f"mlflow must be True or False, got {mlflow!r}")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._mlflow = _require_mlflow() if mlflow else None  # fail before any Spark job
        self.algorithm, self.config = algorithm, config
        self._writer = None
        self._started_run = False

    def __enter__(self) -> Tracking:
        if self.log_dir is not None:
            import tensorflow as tf

            from sparkdownpour.driver_model import driver_cpu

            os.makedirs(self.log_dir, exist_ok=True)
            with driver_cpu():  # summaries are TensorFlow ops: never a GPU context on the driver
                self._writer = tf.summary.create_file_writer(self.log_dir)
            logger.info("TensorBoard scalars go to %s (tensorboard --logdir %s)",
                        self.log_dir, self.log_dir)
        if self._mlflow is not None:
            mlflow = self._mlflow
            if mlflow.active_run() is None:
                mlflow.start_run()
                self._started_run = True
            mlflow.log_params({"algorithm": self.algorithm, **_params(self.config)})
        return self

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.record(logs)

    def record(self, record: dict) -> None:
        """One history record (an epoch or an L-BFGS iteration)."""
        step = next((int(record[k]) for k in STEP_KEYS if k in record), None)
        values = numeric_fields(record)
        if self._writer is not None:
            import tensorflow as tf

            from sparkdownpour.driver_model import driver_cpu

            with driver_cpu(), self._writer.as_default():
                for key, value in values.items():
                    tf.summary.scalar(key, value, step=step or 0)
            self._writer.flush()  # an interrupted fit keeps what it logged
        if self._mlflow is not None:
            self._mlflow.log_metrics(values, step=step)

    def finish(self, model: Any, info: dict) -> None:
        """After a successful fit: the model and run facts go to MLflow as artifacts."""
        if self._mlflow is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.keras")
            model.save(path)
            self._mlflow.log_artifact(path, artifact_path="model")
        self._mlflow.log_dict(json.loads(json.dumps(info, default=str)), "history_info.json")

    def __exit__(self, exc_type, *exc) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._started_run:
            self._mlflow.end_run(status="FINISHED" if exc_type is None else "FAILED")
