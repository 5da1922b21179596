"""Spark ML Estimators and Models for Downpour SGD and Sandblaster L-BFGS."""

from sparkdownpour.ml.estimators import DownpourEstimator, SandblasterEstimator
from sparkdownpour.ml.models import DownpourModel, KerasPredictionModel, SandblasterModel

__all__ = ["DownpourEstimator", "SandblasterEstimator", "DownpourModel", "SandblasterModel",
           "KerasPredictionModel"]
