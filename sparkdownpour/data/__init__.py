"""DataFrame columns -> checked ``features``/``label`` frames -> numpy mini-batches.

The names below are imported on first use: a replica imports ``data.sparse`` and ``data.batches``
and must not load pyspark.ml with ``data.columns`` (``sparkdownpour.lazy_exports`` says why)."""

from sparkdownpour.data.names import FEATURES, LABEL
from sparkdownpour.lazy_exports import lazy_exports

_EXPORTS = {
    "DataSummary": "sparkdownpour.data.columns",
    "check_labels_fit_loss": "sparkdownpour.data.columns",
    "prepare": "sparkdownpour.data.columns",
    "validate": "sparkdownpour.data.columns",
    "batch_to_numpy": "sparkdownpour.data.batches",
    "mini_batches": "sparkdownpour.data.batches",
}
__all__ = ["FEATURES", "LABEL", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
