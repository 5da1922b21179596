"""The Downpour model replica: one Spark task's loop over its data partition.

Runs inside ``DataFrame.mapInArrow`` on an executor. Every ``n_fetch`` mini-batches it fetches the
parameters from the master model server, computes ``gradient()`` with TensorFlow on each
mini-batch, accumulates, and pushes the accumulated gradient every ``n_push`` mini-batches. When a
push is immediately followed by a fetch, one request does both (the server answers the push with
the fresh parameters), which halves the round trips of the common ``n_fetch = n_push = 1`` case.
Yields one statistics row per partition.

Sharded servers: ``spec.shard_urls`` lists every shard; ``ShardedClient`` fetches from and pushes
to all of them at once, so the base step is a tuple (one step per shard). A push staler than the
server's ``max_staleness`` is refused (its mini-batches count as consumed): the replica refetches
before its next mini-batch.

Exactly once: every push names the mini-batches it covers (epoch, partition, [begin, end)). An
attempt first asks the server how far its partition got and skips those mini-batches without
computing them (the order is deterministic: cached data, a seeded shuffle); a push refused as a
duplicate (a speculative twin got there first) makes it skip ahead the same way.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from sparkdownpour.data.batches import Rows, mini_batches
from sparkdownpour.data.sparse import CSR
from sparkdownpour.replica.push_period import PeriodProbe
from sparkdownpour.replica.refusal import continue_after_refusal
from sparkdownpour.replica.sparse_gradient import sparse_push
from sparkdownpour.replica.spec import STATS_DDL, ReplicaSpec, ReplicaStep, new_stats
from sparkdownpour.replica.state import ReplicaState
from sparkdownpour.replica.worker import client_for, replica_for, stats_batch, task_identity
from sparkdownpour.server.client import PushOutcome
from sparkdownpour.server.ledger import Position

__all__ = ["STATS_DDL", "PartitionLoop", "ReplicaSpec", "clip_by_global_norm", "run_partition"]

logger = logging.getLogger(__name__)

OK, SKIP, STOP = "ok", "skip", "stop"  # what the loop does after a push's outcome


_END = object()
MAX_STRETCH = 1.5  # a stretched push takes in at most this many periods of mini-batches


def with_last(items: Iterator) -> Iterator[tuple[object, bool]]:
    """Pair each item with whether it is the last, so the final push asks for nothing back."""
    iterator = iter(items)
    previous = next(iterator, _END)
    while previous is not _END:
        current = next(iterator, _END)
        yield previous, current is _END
        previous = current


def clip_by_global_norm(grads: list[np.ndarray], clip_norm: float) -> tuple[list[np.ndarray], float]:
    """Scale ``grads`` so their joint L2 norm is at most ``clip_norm``; also return the norm."""
    norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
    if np.isfinite(norm) and norm > clip_norm:
        scale = np.float32(clip_norm / norm)
        grads = [g * scale for g in grads]
    return grads, norm


class _Pending:
    """The gradient accumulated since the last push, and what the push will report."""

    def __init__(self, begin: int) -> None:
        self.begin, self.count = begin, 0
        self.grads: list[np.ndarray] | None = None
        self.loss_sum, self.rows, self.nonfinite, self.clipped = 0.0, 0, 0, 0
        self.sparse_input = False  # a CSR mini-batch went in: push first layers row-sparse
        self.queued: list[tuple[np.ndarray, np.ndarray]] = []  # counted, not yet computed

    def add(self, grads, loss: float, rows: int) -> None:
        self.grads = grads if self.grads is None else [a + g for a, g in zip(self.grads, grads)]
        self.loss_sum, self.rows = self.loss_sum + loss * rows, self.rows + rows

    def report(self, with_count: bool) -> dict:
        """The push's meta beside its gradient; ``with_count`` for a push without a position,
        which tells the server how many mini-batches it sums (Adagrad/Adam count them)."""
        loss = self.loss_sum / self.rows if self.rows else None
        report = {"loss": loss if loss is not None and np.isfinite(loss) else None}
        if with_count and self.count > 1:
            report["batches"] = self.count
        if self.nonfinite:
            report["nonfinite"] = self.nonfinite
        if self.clipped:
            report["clipped"] = self.clipped
        return report


class PartitionLoop:
    """One replica's pass over its partition: ``fetch`` / ``compute`` / ``push`` / ``settle``.

    With ``spec.overlap`` a push (answered with the fresh parameters when the next step
    fetches) runs on a background thread while the next mini-batch computes on the parameters
    at hand (DistBelief's weakly synchronized threads): at most one push in flight, collected
    before the next push or fetch, so pushes stay in order and exactly-once; each gradient
    pushes the base step it was computed on, so the extra staleness is counted. With
    ``n_push="auto"`` a push due while the last is still out takes in more mini-batches, up to
    ``MAX_STRETCH`` periods, rather than wait for it (``_stretch``).
    """

    def __init__(self, spec: ReplicaSpec, identity: tuple[int, int] | None = None) -> None:
        self.spec = spec
        # (partition, attempt): the task's own, unless a resident task trains several
        self.partition, self.attempt = identity or task_identity()
        self.replica, self.build_s = replica_for(spec)
        self.replica_id = f"p{self.partition}-a{self.attempt}"
        self.client = client_for(spec, self.replica)
        self.state = ReplicaState(spec, self.replica.model, self.partition, self.attempt)
        self.courier = ThreadPoolExecutor(1, "sparkdownpour-push") if spec.overlap else None
        self.stats = new_stats()
        self.loss_sum = self.compute_s = self.comm_s = 0.0
        self.base_step: tuple[int, ...] = (0,) * len(self.client.clients)
        self.fresh = False     # the parameters at hand are the server's latest we asked for
        self.since_sync = 0    # mini-batches since the last fetch
        self.resume_at = 0     # mini-batches of this partition the server already applied
        self.pending = _Pending(0)
        # n_push="auto": pushes one by one until the probe has chosen the period
        self.n_fetch, self.n_push = spec.n_fetch, spec.n_push
        self.probe = PeriodProbe(spec.push_period_cap) if spec.push_period_cap > 1 else None
        # Overlap with n_push="auto": a push may take in a few mini-batches more than the
        # period while the one before it is still out (see _stretch); it fetches with every push.
        self.stretches = self.probe is not None and self.courier is not None
        self.extra = 0  # mini-batches this push takes in beyond the period
        self.periodic = [0, 0]  # (mini-batches, pushes) since the period was chosen
        # Mini-batches of one push at the same weights, summed in one TensorFlow call (see
        # flush) where that sum is exact: per mini-batch clipping or NaN skipping needs each
        # gradient on its own.
        self.sums_batches = self.replica.gradient.sums_batches and not spec.clip_norm \
            and not spec.skip_nonfinite
        # (future, want_params, position) of the push on the background thread
        self.in_flight: tuple[Future, bool, Position | None] | None = None

    # -- the four steps ------------------------------------------------------------------

    def fetch(self) -> None:
        self.flush()  # the queued mini-batches at the weights they were counted on
        t0 = time.perf_counter()
        self.base_step, params = self.client.fetch(self.replica_id)
        self.replica.assign(params)
        self.comm_s += time.perf_counter() - t0
        self.stats["fetches"] += 1

    def compute(self, x: np.ndarray, y: np.ndarray, index: int) -> None:
        """One mini-batch's gradient, clipped or dropped as configured, into ``pending``."""
        spec, stats, pending = self.spec, self.stats, self.pending
        if self.sums_batches and isinstance(x, (np.ndarray, Rows)):
            pending.queued.append((x, y))  # gathered and computed with the others by flush()
            self._count_step(len(y), None)
            return
        t0 = time.perf_counter()
        loss, grads = self.replica.gradient(x, y)
        usable = True
        if spec.clip_norm or spec.skip_nonfinite:
            clipped, norm = clip_by_global_norm(grads, spec.clip_norm) if spec.clip_norm \
                else (grads, float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads))))
            usable = bool(np.isfinite(norm) and np.isfinite(loss)) or not spec.skip_nonfinite
            if not usable:
                pending.nonfinite += 1
                stats["nonfinite"] += 1
                logger.warning("replica %s: non-finite loss or gradient at mini-batch %d of "
                               "epoch %d; skipped (skip_nonfinite=True)", self.replica_id,
                               index, spec.epoch)
            elif clipped is not grads:
                grads = clipped
                pending.clipped += 1
                stats["clipped"] += 1
        pending.sparse_input |= isinstance(x, CSR)
        if usable:
            pending.add(grads, loss, len(y))
        self.compute_s += time.perf_counter() - t0
        self._count_step(len(y), loss)

    def _count_step(self, rows: int, loss: float | None) -> None:
        stats, spec = self.stats, self.spec
        stats["steps"] += 1
        stats["examples"] += rows
        if loss is not None:  # a queued mini-batch's loss is added by flush()
            self.loss_sum += loss * rows if np.isfinite(loss) else 0.0
        self.since_sync += 1
        self.pending.count += 1
        if spec.step_callbacks:  # a few microseconds a mini-batch otherwise, for nothing
            step = ReplicaStep(spec.epoch, self.partition, self.attempt, stats["steps"])
            for callback in spec.step_callbacks:
                callback.on_replica_step(step)

    def flush(self) -> None:
        """Compute the queued mini-batches' summed gradient into ``pending``, in one call."""
        pending = self.pending
        if not pending.queued:
            return
        t0 = time.perf_counter()
        loss_sum, grads = self.replica.gradient.summed(pending.queued)
        rows = sum(len(y) for _, y in pending.queued)
        pending.queued = []
        pending.add(grads, loss_sum / rows, rows)
        self.loss_sum += loss_sum if np.isfinite(loss_sum) else 0.0
        self.compute_s += time.perf_counter() - t0

    def push(self, computed_on: tuple[int, ...], end: int, last: bool) -> str:
        """Send ``pending`` (mini-batches up to ``end``), in the background where allowed."""
        spec = self.spec
        action = self.collect()  # the previous push first: pushes stay in order
        if action != OK:
            return action
        if self.stretches:  # a fetch with every push, however many mini-batches it sums
            self.since_sync = 0
        want_params = self.since_sync % self.n_fetch == 0 and not last  # the next step fetches
        position = Position(spec.epoch, self.partition, self.pending.begin, end, self.attempt) \
            if spec.exactly_once else None
        grads = sparse_push(self.pending.grads, self.pending.sparse_input,
                            spec.model.num_features, len(self.client.clients), spec.compression)
        send = functools.partial(self.client.push, grads, base_step=computed_on,
                                 replica=self.replica_id, return_params=want_params,
                                 position=position,
                                 report=self.pending.report(with_count=position is None))
        if self.courier is not None and not last:
            self.in_flight = (self.courier.submit(send), want_params, position)
            self.fresh = want_params  # the parameters are on their way: no fetch
            return OK
        t0 = time.perf_counter()
        outcome = send()
        self.comm_s += time.perf_counter() - t0
        return self.settle(outcome, want_params, position)

    def settle(self, outcome: PushOutcome, want_params: bool, position: Position | None) -> str:
        """Act on a push's outcome: OK, SKIP (resume at the server's progress) or STOP."""
        if outcome.applied:
            self.stats["pushes"] += 1
            if want_params:
                self.flush()  # overlap: the mini-batches counted since, at the old weights
                self.base_step = outcome.step
                self.replica.assign(outcome.params)
                self.stats["fetches"] += 1
                self.fresh = True
            return OK
        if outcome.refusal == "stale":  # dropped as too stale: refetch, go on
            self.stats["stale"] += 1
            self.since_sync, self.fresh = 0, False
            return OK
        self.stats["duplicates"] += 1
        if not continue_after_refusal(outcome, position, self.replica_id):
            return STOP
        self.resume_at, self.since_sync, self.fresh = outcome.progress, 0, False
        self.pending = _Pending(self.resume_at)  # fetch before computing again
        return SKIP

    def collect(self) -> str:
        """Wait for the push in flight, if any, and settle it."""
        if self.in_flight is None:
            return OK
        (future, want_params, position), self.in_flight = self.in_flight, None
        t0 = time.perf_counter()
        outcome = future.result()
        self.comm_s += time.perf_counter() - t0  # only the wait the computation did not hide
        return self.settle(outcome, want_params, position)

    # -- the pass ------------------------------------------------------------------------

    def run(self, batches: Iterator[pa.RecordBatch]) -> pa.RecordBatch:
        """Train on the partition; returns the task's one statistics row (``task_s``: the
        pass's wall time, the model build excluded)."""
        started = time.perf_counter()
        try:
            self._train(batches)
        finally:
            if self.courier is not None:
                self.courier.shutdown(wait=True)
            self.client.close()
            self.state.close()
        return stats_batch(self.replica, partition=self.partition, attempt=self.attempt,
                           loss_sum=self.loss_sum, compute_s=self.compute_s,
                           comm_s=self.comm_s, model_build_s=self.build_s,
                           task_s=time.perf_counter() - started, push_period=self._period(),
                           **self.stats)

    def _train(self, batches: Iterator[pa.RecordBatch]) -> None:
        spec = self.spec
        if spec.exactly_once:
            t0 = time.perf_counter()
            self.resume_at = self.client.progress(
                spec.epoch, self.partition, attempt=self.attempt, pid=os.getpid(),
                device=self.replica.placement.describe())
            self.comm_s += time.perf_counter() - t0
        self.pending = _Pending(self.resume_at)
        self.comm_s += self.state.pull()  # BatchNorm statistics etc. (replica.state)
        rng = np.random.default_rng([spec.seed, spec.epoch, self.partition])
        max_steps = spec.max_steps or -1
        has_state = self.state.active
        for index, ((x, y), last) in enumerate(with_last(
                mini_batches(batches, spec.model.num_features, spec.batch_size, rng,
                             gather_later=self.sums_batches))):
            last = last or index + 1 == max_steps
            if self._fetch_due():
                if self.collect() == STOP:
                    break
                if index < self.resume_at:  # applied already, by an earlier or a concurrent
                    self.stats["skipped"] += 1  # attempt
                    if last:
                        break
                    continue
                if self._fetch_due():  # (collecting the push in flight may have fetched)
                    self.fetch()
            self.fresh = False
            computed_on = self.base_step
            self.compute(x, y, index)
            if has_state:
                self.comm_s += self.state.step()
            if self.pending.count < self.n_push + self.extra and not last:
                continue
            self.flush()
            if not last and self._stretch():
                continue
            if self.stretches and self.probe is None:
                self.periodic = [self.periodic[0] + self.pending.count, self.periodic[1] + 1]
            self.extra = 0
            if self.pending.grads is not None:
                action = self.push(computed_on, index + 1, last)
                if action == STOP or (action == SKIP and last):
                    break
                if action == SKIP:
                    continue
                self.pending = _Pending(index + 1)
            self.pending.count = 0
            if last:
                break
            if self.probe is not None:
                self._probe_period()
        self.collect()
        self.comm_s += self.state.report()

    def _fetch_due(self) -> bool:
        if self.fresh:
            return False
        # stretched pushes fetch with every push: only the first step and a refusal fetch
        return self.since_sync == 0 if self.stretches else self.since_sync % self.n_fetch == 0

    def _stretch(self) -> bool:
        """True to compute a few more mini-batches into this push (a quarter of the period)
        rather than wait for the push still in flight, up to ``MAX_STRETCH`` times the period.

        Under load the server's answer comes later than the period's compute (measured on the
        1M-row run with 2 replicas on 2 cores: a median round trip of 1.0-1.6 ms, 2-4 ms one
        time in ten, against about 2 ms of compute a period): waiting for it left a replica idle
        10-17% of its task. The extra mini-batches are summed into the next push, as a longer
        period would, computed on the parameters at hand (the push names their base step)."""
        if not self.stretches or self.probe is not None or self.in_flight is None:
            return False
        chunk = max(1, self.n_push // 4)
        if self.pending.count + chunk > MAX_STRETCH * self.n_push or self.in_flight[0].done():
            return False
        self.extra += chunk
        return True

    def _period(self) -> float:
        """The chosen period, or with stretched pushes the mini-batches a push took in since."""
        batches, pushes = self.periodic
        return batches / pushes if pushes else self.n_push

    def _probe_period(self) -> None:
        period = self.probe.observe(self.stats["steps"], self.compute_s, self.comm_s)
        if period is not None:
            # Fetch with every push from here on: a push (answered with the parameters when
            # want_params) has just been sent, so the count restarts at it.
            self.n_push = self.n_fetch = period
            self.since_sync = 0
        if self.probe.done:
            self.probe = None


def run_partition(batches: Iterator[pa.RecordBatch], spec: ReplicaSpec) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: train on one partition against the server; yield one row."""
    yield PartitionLoop(spec).run(batches)
