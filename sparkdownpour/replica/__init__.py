"""Executor side only: what runs inside a Spark task. Never imports a trainer or a session."""

from sparkdownpour.keras_model import ModelSpec, spec_for
from sparkdownpour.replica.gradient import GradientFunction
from sparkdownpour.replica.loop import PartitionLoop, run_partition
from sparkdownpour.replica.spec import STATS_DDL, ReplicaSpec, ReplicaStep

__all__ = ["STATS_DDL", "GradientFunction", "ModelSpec", "PartitionLoop", "ReplicaSpec",
           "ReplicaStep", "run_partition", "spec_for"]
