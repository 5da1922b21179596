"""Executor side: the Downpour partition loop and the TensorFlow gradient (no SparkSession here)."""

from sparkdownpour.keras_model import ModelSpec, spec_for
from sparkdownpour.replica.gradient import GradientFunction
from sparkdownpour.replica.loop import STATS_DDL, ReplicaSpec, run_partition

__all__ = ["GradientFunction", "ModelSpec", "spec_for", "ReplicaSpec", "run_partition",
           "STATS_DDL"]
