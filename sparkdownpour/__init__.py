"""sparkdownpour: DistBelief's Downpour SGD and Sandblaster L-BFGS on Apache Spark."""

from sparkdownpour import tf_logs

tf_logs.install()  # before anything imports TensorFlow: no C++ start-up lines (tf_logs)

from sparkdownpour.config import DownpourConfig, SandblasterConfig  # noqa: E402
from sparkdownpour.deepdist import DeepDist  # noqa: E402
from sparkdownpour.downpour import Downpour  # noqa: E402
from sparkdownpour.errors import ParameterServerError  # noqa: E402
from sparkdownpour.history import History, TrainingResult  # noqa: E402
from sparkdownpour.sandblaster import Sandblaster  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Downpour", "Sandblaster", "DeepDist", "DownpourConfig", "SandblasterConfig", "History",
           "TrainingResult", "ParameterServerError", "__version__"]
