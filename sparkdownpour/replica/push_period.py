"""``n_push="auto"`` (the default): each replica picks its push period from its own step costs.

A replica that pushes every mini-batch pays a round trip to the server per mini-batch (1-2 ms
on loopback, more across a network). Where its gradient costs less than that, communication
takes most of the task: issue 15 measured a compute share of 0.3 on a 100-64-4 MLP. With
``n_push="auto"`` a replica pushes every mini-batch for its first ``PROBE_STEPS``, measures its
compute and its communication per step, then pushes every ``p`` mini-batches (and fetches in
the same request): the smallest ``p`` that leaves communication at most an eighth of compute
(with the task's other costs, a compute share near 0.8), capped at ``MAX_PERIOD`` and so
that every replica still pushes at least ``MIN_PUSHES_PER_EPOCH`` times an epoch.

Small data sets therefore keep pushing every mini-batch, the same updates as ``n_push=1``:
a period only pays where there are thousands of mini-batches, and it costs accuracy where
there are few (digits, 11 mini-batches a replica and epoch: 0.961 to 0.947 held-out with
``n_push = n_fetch = 4``).
"""

from __future__ import annotations

import math

__all__ = ["AUTO", "PeriodProbe", "choose_period", "period_cap", "push_periods"]

AUTO = "auto"
SKIP_STEPS = 4            # the first steps trace the gradient function: not measured
PROBE_STEPS = 20          # the period is chosen after this many steps (pushed one by one)
REFINE_PUSHES = 10        # ... and looked at again after this many pushes at that period
COMPUTE_PER_COMM = 8.0    # compute / communication per step to reach (4.0 measured share 0.68)
MAX_PERIOD = 16
MIN_PUSHES_PER_EPOCH = 256


def period_cap(rows: int, replicas: int, batch_size: int) -> int:
    """The largest period ``"auto"`` may choose: every replica keeps at least
    ``MIN_PUSHES_PER_EPOCH`` pushes an epoch (rows spread evenly), and at most ``MAX_PERIOD``."""
    steps = rows // max(1, replicas * batch_size)
    return max(1, min(MAX_PERIOD, steps // MIN_PUSHES_PER_EPOCH))


def choose_period(compute_per_step: float, comm_per_push: float, cap: int) -> int:
    """The smallest period whose communication per step (``comm_per_push / period``) is at most
    ``1/COMPUTE_PER_COMM`` of the compute per step, within ``1..cap``."""
    if compute_per_step <= 0:
        return cap
    return max(1, min(cap, math.ceil(COMPUTE_PER_COMM * comm_per_push / compute_per_step)))


def push_periods(config, rows: int, replicas: int, rule=None) -> dict:
    """``ReplicaSpec``'s ``n_fetch``, ``n_push`` and ``push_period_cap`` for a
    ``DownpourConfig`` and its update ``rule`` (a cap of 0: the periods are fixed). A rule
    that cannot take a summed push as well as one push a mini-batch (``takes_summed_pushes``
    False: DC-ASGD's g*g term, AdaRevision's accumulators) keeps ``"auto"`` at 1."""
    if config.n_push != AUTO:
        return {"n_fetch": config.n_fetch, "n_push": config.n_push, "push_period_cap": 0}
    if config.n_fetch != 1:
        # A fetch period chosen by hand: "auto" (which fetches with every push) stands aside
        # and pushes every mini-batch, as n_push=1 did before "auto" was the default.
        return {"n_fetch": config.n_fetch, "n_push": 1, "push_period_cap": 0}
    summable = rule is None or getattr(rule, "takes_summed_pushes", False)
    cap = period_cap(rows, replicas, config.batch_size) \
        if config.mode == "async" and summable else 1
    return {"n_fetch": 1, "n_push": 1, "push_period_cap": cap if cap > 1 else 0}


class PeriodProbe:
    """Watches a replica's steps; ``observe`` returns a new period when it chooses one.

    Two looks: after ``PROBE_STEPS`` steps pushed one by one, and again after ``REFINE_PUSHES``
    pushes at that period. The second look is needed because a period makes compute cheaper
    per mini-batch too (a push's mini-batches are one TensorFlow call, ``PartitionLoop.flush``),
    so the communication share it leaves is larger than the first look predicts; it may only
    lengthen the period."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.period = 1
        self.done = False
        self.start: tuple[int, float, float] | None = None  # (steps, compute_s, comm_s)
        self.pushes = 0  # since start, at the chosen period

    def observe(self, steps: int, compute_s: float, comm_s: float) -> int | None:
        """Called after each push with the loop's step count and running times."""
        if self.done or steps < SKIP_STEPS:
            return None
        if self.start is None:
            self.start = (steps, compute_s, comm_s)
            return None
        self.pushes += 1
        if steps < PROBE_STEPS if self.period == 1 else self.pushes < REFINE_PUSHES:
            return None
        first_steps, first_compute, first_comm = self.start
        chosen = choose_period((compute_s - first_compute) / max(steps - first_steps, 1),
                               (comm_s - first_comm) / self.pushes, self.cap)
        self.done = self.period > 1 or chosen in (1, self.cap)
        self.start, self.pushes = (steps, compute_s, comm_s), 0
        if chosen <= self.period:
            return None
        self.period = chosen
        return chosen
