"""DataFrame columns -> checked ``features``/``label`` frames -> numpy mini-batches."""

from sparkdownpour.data.batches import batch_to_numpy, mini_batches
from sparkdownpour.data.columns import (
    FEATURES,
    LABEL,
    DataSummary,
    check_labels_fit_loss,
    prepare,
    validate,
)

__all__ = ["FEATURES", "LABEL", "DataSummary", "prepare", "validate", "check_labels_fit_loss",
           "batch_to_numpy", "mini_batches"]
