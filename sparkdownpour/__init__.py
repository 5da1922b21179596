"""sparkdownpour: DistBelief's Downpour SGD (and, later, Sandblaster L-BFGS) on Apache Spark."""

from sparkdownpour.config import DownpourConfig
from sparkdownpour.deepdist import DeepDist
from sparkdownpour.downpour import Downpour
from sparkdownpour.errors import ParameterServerError
from sparkdownpour.history import History, TrainingResult

__version__ = "0.1.0"
__all__ = ["Downpour", "DeepDist", "DownpourConfig", "History", "TrainingResult",
           "ParameterServerError", "__version__"]
