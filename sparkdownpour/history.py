"""What ``fit`` returns: the trained model and a per-epoch history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class History:
    """Per-epoch records (dicts), readable by row (``history.epochs[-1]``) or by key
    (``history["loss"]``), like ``keras.callbacks.History.history``."""

    epochs: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # run-wide facts: rows, partitions, server address

    def append(self, record: dict) -> None:
        self.epochs.append(record)

    def to_pandas(self):
        """The records as a ``pandas.DataFrame``, one row per epoch (or L-BFGS iteration)."""
        from sparkdownpour.observe.history_views import to_pandas

        return to_pandas(self)

    def plot(self, path, *, keys=None) -> str:
        """Save the training curve(s) as a PNG at ``path`` (matplotlib, Agg); returns the path.

        ``keys`` defaults to the loss-like columns present (``loss``, ``val_loss``,
        ``val_accuracy`` or ``objective``, ``grad_norm``).
        """
        from sparkdownpour.observe.history_views import plot

        return plot(self, path, keys=keys)

    def __getitem__(self, key: str) -> list:
        if self.epochs and key not in self.epochs[-1]:
            raise KeyError(f"{key!r} is not in the history; it has {sorted(self.epochs[-1])}")
        return [record.get(key) for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def history(self) -> dict[str, list]:
        """Keras-style dict of lists."""
        keys = self.epochs[-1].keys() if self.epochs else ()
        return {key: self[key] for key in keys}

    @property
    def final(self) -> dict:
        return dict(self.epochs[-1]) if self.epochs else {}

    def __repr__(self) -> str:
        last = self.final
        shown = {k: last[k] for k in ("epoch", "loss", "val_accuracy", "updates",
                                      "staleness_mean", "staleness_max") if k in last}
        return f"History({len(self)} epochs, last={shown})"


@dataclass
class TrainingResult:
    model: Any
    history: History

    def __iter__(self):  # model, history = Downpour(...).fit(df)
        return iter((self.model, self.history))
