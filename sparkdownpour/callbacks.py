"""``fit(callbacks=[...])``: observe a run from the driver, and a replica's steps from executors.

In the spirit of ``keras.callbacks.Callback``: subclass ``Callback`` and override what you need.
Driver-side methods run in the driver's ``fit`` thread, in the order the callbacks were given::

    on_train_begin(info)        the data is validated, the driver's model built; info: run facts
    on_server_start(server)     Downpour's master model server (or Sandblaster's vector shards)
                                is up and no replica has run yet
    on_epoch_end(epoch, logs)   a Downpour epoch's (a Sandblaster iteration's) history record
    on_train_end(history)       training ended normally (not called when ``fit`` raises)

``on_replica_step(step)`` is the one executor-side method: it runs inside each Spark task after
every mini-batch the replica computes (``step`` is a ``replica.spec.ReplicaStep``). Only callbacks
whose class overrides it are shipped to executors, by Spark's closure pickling, so such a
callback must be picklable and should keep no driver state. ``sparkdownpour.testing`` uses it to
inject faults; the library itself never does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Callback", "CallbackList", "LambdaCallback"]


class Callback:
    """Base class: every method does nothing."""

    def on_train_begin(self, info: dict) -> None:
        """The run is about to train; ``info`` is ``history.info`` (rows, partitions, ...)."""

    def on_server_start(self, server: Any) -> None:
        """The server is up (``server.url``, ``server.token``); no replica has run yet."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """``logs`` is the record just appended to the history (do not modify it)."""

    def on_train_end(self, history: Any) -> None:
        """Training ended normally; ``history`` is the run's ``History``."""

    def on_replica_step(self, step: Any) -> None:
        """Executor side, after each computed mini-batch (see the module docstring)."""


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda e, logs: ...)``.

    Driver side only (``on_replica_step`` is not accepted: subclass ``Callback`` for that)."""

    _NAMES = ("on_train_begin", "on_server_start", "on_epoch_end", "on_train_end")

    def __init__(self, **functions: Callable) -> None:
        unknown = sorted(set(functions) - set(self._NAMES))
        if unknown:
            raise TypeError(f"LambdaCallback takes {list(self._NAMES)}, received {unknown}")
        for name, function in functions.items():
            if not callable(function):
                raise TypeError(f"LambdaCallback {name} must be callable, received "
                                f"{type(function).__name__}")
            setattr(self, name, function)


class CallbackList:
    """The callbacks of one ``fit``, called in order."""

    def __init__(self, callbacks: Iterable[Callback] | None = None) -> None:
        self.callbacks = list(callbacks or [])
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks must be sparkdownpour.callbacks.Callback instances, "
                                f"received {type(callback).__name__}")

    def append(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def on_train_begin(self, info: dict) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(info)

    def on_server_start(self, server: Any) -> None:
        for callback in self.callbacks:
            callback.on_server_start(server)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_train_end(self, history: Any) -> None:
        for callback in self.callbacks:
            callback.on_train_end(history)

    def replica_callbacks(self) -> tuple[Callback, ...]:
        """The callbacks that override ``on_replica_step``: these travel to executors."""
        return tuple(c for c in self.callbacks
                     if type(c).on_replica_step is not Callback.on_replica_step)
