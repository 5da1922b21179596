"""sparkdownpour: DistBelief's Downpour SGD and Sandblaster L-BFGS on Apache Spark."""

from sparkdownpour import tf_logs
from sparkdownpour.lazy_exports import lazy_exports

tf_logs.install()  # before anything imports TensorFlow: no C++ start-up lines (tf_logs)

__version__ = "0.1.0"

# Imported on first use: an executor's worker imports this file too (lazy_exports says why).
_EXPORTS = {
    "Downpour": "sparkdownpour.downpour",
    "Sandblaster": "sparkdownpour.sandblaster",
    "DeepDist": "sparkdownpour.deepdist",
    "DownpourConfig": "sparkdownpour.config",
    "SandblasterConfig": "sparkdownpour.config",
    "History": "sparkdownpour.history",
    "TrainingResult": "sparkdownpour.history",
    "ParameterServerError": "sparkdownpour.errors",
}
__all__ = [*_EXPORTS, "__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
