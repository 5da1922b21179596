"""sparkdownpour: DistBelief's Downpour SGD and Sandblaster L-BFGS on Apache Spark."""

from sparkdownpour.config import DownpourConfig, SandblasterConfig
from sparkdownpour.deepdist import DeepDist
from sparkdownpour.downpour import Downpour
from sparkdownpour.errors import ParameterServerError
from sparkdownpour.history import History, TrainingResult
from sparkdownpour.sandblaster import Sandblaster

__version__ = "0.1.0"
__all__ = ["Downpour", "Sandblaster", "DeepDist", "DownpourConfig", "SandblasterConfig", "History", "TrainingResult",
           "ParameterServerError", "__version__"]
