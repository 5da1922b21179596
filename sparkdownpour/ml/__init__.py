"""Spark ML Estimators and Models for Downpour SGD and Sandblaster L-BFGS, and a
``foreachBatch`` callback that trains per micro-batch of a stream."""

from sparkdownpour.ml.estimators import DownpourEstimator, SandblasterEstimator
from sparkdownpour.ml.models import (
    DownpourModel,
    KerasPredictionModel,
    SandblasterModel,
)
from sparkdownpour.ml.streaming import MicroBatchTrainer

__all__ = ["DownpourEstimator", "DownpourModel", "KerasPredictionModel", "MicroBatchTrainer",
           "SandblasterEstimator", "SandblasterModel"]
