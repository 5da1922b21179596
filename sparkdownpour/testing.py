"""Fault injection for tests of sparkdownpour and of code built on it.

The library never imports this module. Everything here works through the public
``fit(callbacks=[...])`` seam, so a test exercises exactly the code a user runs.

>>> Downpour(build, epochs=2).fit(df, callbacks=[FailFirstAttempt(after_steps=5, epoch=2)])
"""

from __future__ import annotations

from sparkdownpour.callbacks import Callback

__all__ = ["FailFirstAttempt", "InjectedFailure"]


class InjectedFailure(RuntimeError):
    """Raised inside a Spark task by ``FailFirstAttempt``."""


class FailFirstAttempt(Callback):
    """The first attempt (Spark's attemptNumber 0) of every task raises ``InjectedFailure``
    after computing ``after_steps`` mini-batches, so Spark retries the task halfway.

    ``epoch``: only in this epoch (0: every epoch). ``partitions``: only these partitions
    (None: all).
    """

    def __init__(self, after_steps: int, *, epoch: int = 0,
                 partitions: tuple[int, ...] | None = None) -> None:
        if not isinstance(after_steps, int) or after_steps < 1:
            raise ValueError(f"after_steps must be an integer >= 1, received {after_steps!r}")
        self.after_steps, self.epoch = after_steps, epoch
        self.partitions = None if partitions is None else tuple(partitions)

    def on_replica_step(self, step) -> None:
        if step.attempt != 0 or step.steps != self.after_steps:
            return
        if self.epoch not in (0, step.epoch):
            return
        if self.partitions is not None and step.partition not in self.partitions:
            return
        raise InjectedFailure(f"injected failure after {step.steps} mini-batches on the first "
                              f"attempt of partition {step.partition}, epoch {step.epoch} "
                              "(sparkdownpour.testing.FailFirstAttempt)")
