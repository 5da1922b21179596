"""``History`` as a table and as a PNG: what ``History.to_pandas`` and ``History.plot`` do.

Kept out of ``history.py`` so that importing the history (executors, ``ml`` persistence) does
not import pandas or matplotlib.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

logger = logging.getLogger(__name__)

# What a plot shows by default, in this order, when the history has it.
DEFAULT_KEYS = ("loss", "val_loss", "val_accuracy", "objective", "grad_norm")
# Log scale for the quantities L-BFGS drives towards zero over orders of magnitude.
LOG_KEYS = {"grad_norm"}


def to_pandas(history):
    """One row per record; list-valued fields (e.g. ``diverging_replicas``) stay lists."""
    import pandas as pd

    frame = pd.DataFrame.from_records(list(history.epochs))
    index = "epoch" if "epoch" in frame.columns else "iteration" \
        if "iteration" in frame.columns else None
    if index is not None:
        frame = frame.set_index(index, drop=False)
        frame.index.name = None  # keep the column too, without an ambiguous index name
    return frame


def _x_key(history) -> str | None:
    last = history.epochs[-1]
    return "epoch" if "epoch" in last else "iteration" if "iteration" in last else None


def plot(history, path, *, keys: Sequence[str] | None = None) -> str:
    """One small panel per key, against the epoch (or iteration); saved as PNG at ``path``."""
    if not history.epochs:
        raise ValueError("the history is empty: nothing to plot (did fit run any epoch?)")
    available = set().union(*(record.keys() for record in history.epochs))
    if keys is None:
        keys = [k for k in DEFAULT_KEYS if k in available]
        if not keys:
            raise ValueError(f"none of the default keys {list(DEFAULT_KEYS)} is in the history; "
                             f"pass keys= from {sorted(available)}")
    else:
        if isinstance(keys, str):
            keys = [keys]
        missing = [k for k in keys if k not in available]
        if missing:
            raise ValueError(f"keys {missing} are not in the history; it has {sorted(available)}")
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"plot writes PNG files; the path must end in .png, got {path!r}")

    # Agg draws to files without a display; the Figure API below never touches pyplot's global
    # backend or figure registry, so a notebook's own matplotlib setup is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x_key = _x_key(history)
    figure = Figure(figsize=(4.0 * len(keys), 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for i, key in enumerate(keys):
        axes = figure.add_subplot(1, len(keys), i + 1)
        points = [(record.get(x_key, n + 1) if x_key else n + 1, record.get(key))
                  for n, record in enumerate(history.epochs)]
        points = [(x, y) for x, y in points if isinstance(y, (int, float))]
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3)
        if key in LOG_KEYS and all(y > 0 for _, y in points):
            axes.set_yscale("log")
        axes.set_title(key)
        axes.set_xlabel(x_key or "record")
        axes.grid(True, alpha=0.3)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png")
    logger.info("training curve saved to %s", path)
    return path
