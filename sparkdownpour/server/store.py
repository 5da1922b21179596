"""The parameters, one lock and the update rule: the state of the master model server.

No Flask here, so the store can be driven directly by the driver (and by tests) and the HTTP
layer stays a thin translation of requests into ``fetch`` / ``push`` calls.

The update rule is duck-typed (``init(params) -> state`` and
``update(grads, state, params) -> (new_params, new_state)``) so the server does not depend on
``sparkdownpour.optimizers`` (only on its pure ``sparse.apply_update`` for row-sparse pushes). A
rule with ``delay_aware = True`` (the staleness rules) is also
given the push's staleness and the replica's *backup*: what ``rule.backup(state, params)``
returned when that replica last read the parameters (DC-ASGD's w_bak, AdaRevision's gradient
sum at the read). Backups are kept here, per replica id, only for such rules.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from sparkdownpour.optimizers.sparse import RowSparse, apply_update, densify
from sparkdownpour.server.ledger import Position, ProgressLedger
from sparkdownpour.server.model_state import ModelState
from sparkdownpour.server.store_state import CheckpointState, this_epoch_status
from sparkdownpour.server.sync import SyncRounds, SyncTag
from sparkdownpour.transport.frames import encode_frame

__all__ = ["ParameterStore", "PushResult"]

logger = logging.getLogger(__name__)

# Staleness histogram: one bucket per value 0..64, then everything larger in ">64".
HISTOGRAM_MAX = 64


class PushResult(NamedTuple):
    """What one push did: the server step after it and its staleness; for a positioned push,
    whether it was applied and the partition's progress after it (see ``ledger``)."""

    step: int
    staleness: int
    applied: bool = True
    progress: int | None = None
    refusal: str | None = None  # "duplicate", "out_of_order", "closed_epoch" or "stale"


class ParameterStore(CheckpointState):
    """Thread-safe parameters plus update rule; every push is applied on arrival (Downpour).

    ``step`` counts applied updates. A push carries the step the replica last fetched
    (``base_step``); its staleness is how many other updates landed in between.
    """

    def __init__(self, params: Sequence[Any], rule: Any, *, divergence_factor: float = 4.0,
                 max_staleness: int | None = None, label: dict | None = None,
                 sync_timeout: float = 600.0, state: Sequence[Any] | None = None) -> None:
        if not callable(getattr(rule, "init", None)) or not callable(getattr(rule, "update", None)):
            raise TypeError(
                f"rule must have init(params) and update(grads, state, params) methods, "
                f"got {type(rule).__name__}"
            )
        if isinstance(params, np.ndarray):
            raise TypeError("params must be a list of arrays, got a single ndarray; wrap it in [...]")
        # Own copies: the caller's arrays (e.g. a keras model's weights) must not alias ours.
        self._params = [np.array(p, dtype=np.float32, order="C", copy=True) for p in params]
        if not self._params:
            raise ValueError("params is empty: the store needs at least one array")
        self._shapes = tuple(p.shape for p in self._params)
        self.rule = rule
        self._state = rule.init([p.copy() for p in self._params])
        self._lock = threading.Lock()
        self._step = 0
        self._frame: tuple[int, bytes] | None = None  # (step, encoded params frame)
        self._applied = 0
        self._rejected = 0
        self._replicas: dict[str, int] = {}
        self._stale_sum = 0
        self._stale_max = 0
        self._histogram: dict[str, int] = {}
        self._this_epoch = (0, 0, 0)  # the open epoch's (updates applied, staleness sum, max)
        self._bytes_in = 0
        self._bytes_out = 0
        self._started = time.monotonic()
        self.ledger = ProgressLedger(divergence_factor)
        if max_staleness is not None and (isinstance(max_staleness, bool) or
                                          not isinstance(max_staleness, int) or max_staleness < 0):
            raise ValueError(f"max_staleness must be None or an integer >= 0, got {max_staleness!r}")
        self.max_staleness = max_staleness
        self._stale_refused = 0
        self._delay_aware = bool(getattr(rule, "delay_aware", False))
        self._backups: dict[str, Any] = {}  # replica -> rule.backup(...) at its last read
        self._sync = SyncRounds()  # mode="sync": one averaged update per round
        self._round_done = threading.Condition(self._lock)
        self.sync_timeout = float(sync_timeout)
        self.label = dict(label or {})  # e.g. {"index": 1, "of": 4, "range": [lo, hi]} for a shard
        # The model's non-trainable state (BatchNorm statistics): never touched by the rule.
        self.model_state = ModelState(state) if state is not None and len(state) else None

    # -- read side -------------------------------------------------------------------------

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of every parameter array, in order (fixed for the store's lifetime)."""
        return self._shapes

    @property
    def step(self) -> int:
        """Number of updates applied so far."""
        with self._lock:
            return self._step

    def fetch(self) -> tuple[int, list[np.ndarray]]:
        """A consistent ``(step, copies of the params)`` snapshot."""
        with self._lock:
            return self._step, [p.copy() for p in self._params]

    def snapshot(self) -> list[np.ndarray]:
        """Copies of the current params (for the driver: checkpoints, the final model)."""
        return self.fetch()[1]

    def fetch_frame(self, replica: str | None = None) -> bytes:
        """The current params as an encoded ``params`` frame (``replica``: who reads them,
        for the delay-aware rules' per-replica backup).

        Cached per step: when many replicas fetch between two pushes the parameters are
        encoded once. Encoding happens under the lock, so the frame is never torn by a
        concurrent update even if a rule were to modify arrays in place.
        """
        with self._lock:
            if replica is not None:
                self._note_read(replica)
            if self._frame is None or self._frame[0] != self._step:
                self._frame = (self._step, encode_frame(self._params, kind="params", step=self._step))
            return self._frame[1]

    def fetch_state(self) -> list[np.ndarray]:
        """The combined non-trainable state (``server.model_state``); [] when none is held."""
        return self.model_state.fetch()[1] if self.model_state is not None else []

    def status(self) -> dict[str, Any]:
        """Counters as a JSON-serializable dict (served by ``GET /v1/status``)."""
        state = self.model_state.status() if self.model_state is not None else None
        with self._lock:
            applied = self._applied
            return {
                "step": self._step,
                "updates_applied": applied,
                "updates_rejected": self._rejected,
                "stale_refused": self._stale_refused,
                "max_staleness": self.max_staleness,
                **({"shard": dict(self.label)} if self.label else {}),
                **({"model_state": state} if state is not None else {}),
                "sync": self._sync.status(),
                "replicas": dict(self._replicas),
                "staleness": {
                    "mean": self._stale_sum / applied if applied else 0.0,
                    "max": self._stale_max,
                    "histogram": dict(self._histogram),
                },
                "this_epoch": this_epoch_status(*self._this_epoch),
                "num_arrays": len(self._shapes),
                "num_params": sum(math.prod(s) for s in self._shapes),
                "bytes_in": self._bytes_in,
                "bytes_out": self._bytes_out,
                "uptime_s": time.monotonic() - self._started,
                "rule": getattr(self.rule, "name", type(self.rule).__name__),
                "epoch": self.ledger.epoch,
                "progress": self.ledger.progress_by_partition(),
                "refused": dict(self.ledger.refused),
                "duplicates_refused": self.ledger.refused["duplicate"],
                "attempts": {k: dict(v) for k, v in self.ledger.attempts.items()},
                "devices": dict(self.ledger.devices),
                "nonfinite_skipped": self.ledger.nonfinite_skipped,
                "clipped": self.ledger.clipped,
                "diverging": self.ledger.diverging(),
            }

    def live_loss(self) -> float | None:
        """The mean of the replicas' smoothed recent losses, or None before any report."""
        with self._lock:
            losses = [v for v in self.ledger.loss_ema().values()
                      if v is not None and math.isfinite(v)]
        return sum(losses) / len(losses) if losses else None

    # -- write side ------------------------------------------------------------------------

    def _check_grads(self, grads: Sequence[Any]) -> list[np.ndarray]:
        """Shape/finiteness checks; raise ValueError naming the array, store untouched."""
        if len(grads) != len(self._shapes):
            raise ValueError(f"expected {len(self._shapes)} arrays, got {len(grads)}")
        out = []
        for i, (g, shape) in enumerate(zip(grads, self._shapes)):
            if isinstance(g, RowSparse):  # a first layer's non-zero rows (optimizers.sparse)
                try:
                    g.check(shape)
                except ValueError as e:
                    raise ValueError(f"row-sparse array {i}: {e}") from None
                if not np.isfinite(g.values).all():
                    raise ValueError(f"non-finite value (NaN/Inf) in array {i} (shape {shape})")
                out.append(g)
                continue
            arr = np.asarray(g, dtype=np.float32)
            if arr.shape != shape:
                raise ValueError(f"shape mismatch at array {i}: got {arr.shape} expected {shape}")
            # A NaN/Inf update would poison the parameters for every replica.
            if not np.isfinite(arr).all():
                raise ValueError(f"non-finite value (NaN/Inf) in array {i} (shape {shape})")
            out.append(arr)
        return out

    def push(self, grads: Sequence[Any], *, replica: str, base_step: int,
             position: Position | None = None, report: dict | None = None,
             reread: bool = False, sync: SyncTag | None = None) -> PushResult:
        """Validate ``grads`` and apply them with the rule; returns the new step and staleness.

        Raises ``ValueError`` (and counts a rejection) for the wrong number, shape or
        non-finite arrays, or a bad ``base_step``; the params are unchanged then.
        With a ``position`` the push is applied at most once (see ``ledger``): a duplicate or
        out-of-order one is refused, counted, and answered with ``applied=False``.
        ``report`` (loss, skipped batches) feeds the divergence watch in ``status()``; a push
        without a position says in it how many mini-batches it sums (``batches``, default 1).
        A push staler than ``max_staleness`` is refused (``refusal="stale"``) and counted; its
        position is recorded, so its mini-batches count as consumed (their gradient is dropped)
        and the replica goes on after refetching. ``reread``: the replica receives the new
        params in the answer (``return_params``), which is a read for the backups.
        A ``sync`` push joins its round (``server.sync``) and is applied, averaged with the
        round's other pushes, by the round's last one; the others' answers wait (the lock
        released) until then, so every answer means "the round is applied". A round not
        complete within ``sync_timeout`` seconds is abandoned (``refusal="sync_timeout"``).
        """
        try:
            if not isinstance(base_step, int) or isinstance(base_step, bool) or base_step < 0:
                raise ValueError(f"base_step must be a non-negative integer, got {base_step!r}")
            if not isinstance(replica, str):
                raise TypeError(f"replica must be a string, got {type(replica).__name__}")
            checked = self._check_grads(grads)
            if sync is not None or self._delay_aware:  # rounds average, delay rules: dense
                checked = densify(checked)
        except (ValueError, TypeError):
            self.note_rejected()
            raise
        with self._lock:
            if report:
                self.ledger.report(replica, report)
            if position is not None:
                refusal = self.ledger.verdict(position)
                if refusal is not None:
                    self.ledger.refuse(refusal)
                    return PushResult(self._step, -1, False,
                                      self.ledger.applied(position.epoch, position.partition),
                                      refusal)
            # A base step from the future (e.g. after the driver reset the store) counts as
            # fresh rather than negative.
            staleness = max(0, self._step - base_step)
            if sync is not None:
                refusal = self._sync.verdict(sync)
                if refusal is not None:
                    self.ledger.refuse(refusal)
                    return PushResult(self._step, -1, False, self._sync.round, refusal)
                mean = self._sync.add(checked, sync)
                if mean is None:  # wait for the round's other replicas
                    self._round_done.wait_for(lambda: not self._sync.pending(sync),
                                              self.sync_timeout)
                    if self._sync.applied(sync):
                        return PushResult(self._step, 0, True, None)
                    if self._sync.pending(sync):  # timed out: nobody else will finish it
                        self._sync.abandon()
                        self._round_done.notify_all()
                    return PushResult(self._step, -1, False, self._sync.round, "sync_timeout")
                checked, staleness = mean, 0
            if self.max_staleness is not None and staleness > self.max_staleness:
                self._stale_refused += 1
                if position is not None:
                    self.ledger.record(position)
                return PushResult(self._step, staleness, False,
                                  None if position is None else position.end, "stale")
            if self._delay_aware:
                new_params, new_state = self.rule.update(
                    checked, self._state, self._params, staleness=staleness,
                    backup=self._backups.get(replica))
            else:
                # a push of mini-batches [begin, end) sums their gradients; one without a
                # position (exactly_once=False) says how many it sums in its report
                batches = max(1, position.end - position.begin) if position is not None \
                    else (report or {}).get("batches", 1)
                new_params, new_state = apply_update(self.rule, checked, self._state,
                                                     self._params, batches)
            self._params = self._adopt(new_params)
            self._state = new_state
            if position is not None:  # recorded only once the update itself succeeded
                self.ledger.record(position)
            self._step += 1
            self._applied += 1
            self._replicas[replica] = self._replicas.get(replica, 0) + 1
            self._stale_sum += staleness
            self._stale_max = max(self._stale_max, staleness)
            bucket = str(staleness) if staleness <= HISTOGRAM_MAX else f">{HISTOGRAM_MAX}"
            self._histogram[bucket] = self._histogram.get(bucket, 0) + 1
            n, total, top = self._this_epoch
            self._this_epoch = (n + 1, total + staleness, max(top, staleness))
            if sync is not None:
                self._round_done.notify_all()
            if reread:
                self._note_read(replica)
            progress = None if position is None else position.end
            return PushResult(self._step, staleness, True, progress)

    def _note_read(self, replica: str) -> None:
        """Keep what a delay-aware rule needs of this read (lock held)."""
        if self._delay_aware:
            self._backups[replica] = self.rule.backup(self._state, self._params)
            if len(self._backups) > 4096:  # bounded: the oldest reader's backup goes first
                self._backups.pop(next(iter(self._backups)))

    # -- exactly-once bookkeeping (driver and replicas) ------------------------------------

    def open_epoch(self, epoch: int) -> None:
        """Accept positioned pushes for ``epoch`` only (the driver calls it per Spark job)."""
        with self._lock:
            if epoch != self.ledger.epoch:  # reopening the same epoch (resume) keeps its counts
                self._this_epoch = (0, 0, 0)
            self.ledger.open_epoch(epoch)
            self._backups.clear()  # the last epoch's replicas are gone

    def progress(self, epoch: int, partition: int, *, attempt: int = 0, pid: int = 0,
                 device: str | None = None) -> int:
        """Mini-batches of ``partition`` already applied in ``epoch``; records the attempt (and
        the device it runs on, for status)."""
        with self._lock:
            self.ledger.note_attempt(epoch, partition, attempt, pid, device)
            return self.ledger.applied(epoch, partition)

    def _adopt(self, new_params: Sequence[Any]) -> list[np.ndarray]:
        """Check what the rule returned; a broken rule must fail loudly, not corrupt state."""
        if len(new_params) != len(self._shapes):
            raise RuntimeError(
                f"update rule {type(self.rule).__name__} returned {len(new_params)} arrays, "
                f"expected {len(self._shapes)}"
            )
        out = []
        for i, (p, shape) in enumerate(zip(new_params, self._shapes)):
            arr = np.asarray(p, dtype=np.float32)
            if arr.shape != shape:
                raise RuntimeError(
                    f"update rule {type(self.rule).__name__} returned shape {arr.shape} "
                    f"for array {i}, expected {shape}"
                )
            out.append(arr)
        return out

    def set_params(self, params: Sequence[Any]) -> None:
        """Replace the params (driver side, e.g. restoring a checkpoint); same shapes only.

        The step and the rule's state are kept; the cached params frame is dropped.
        """
        new = [np.array(p, dtype=np.float32, order="C", copy=True) for p in params]
        if len(new) != len(self._shapes):
            raise ValueError(f"expected {len(self._shapes)} arrays, got {len(new)}")
        for i, (arr, shape) in enumerate(zip(new, self._shapes)):
            if arr.shape != shape:
                raise ValueError(f"shape mismatch at array {i}: got {arr.shape} expected {shape}")
        with self._lock:
            self._params = new
            self._frame = None

    def note_rejected(self) -> None:
        """Count an update refused before it reached ``push`` (e.g. a malformed frame)."""
        with self._lock:
            self._rejected += 1

    def note_traffic(self, *, received: int = 0, sent: int = 0) -> None:
        """Add request/response body sizes to the ``bytes_in`` / ``bytes_out`` counters."""
        with self._lock:
            self._bytes_in += received
            self._bytes_out += sent
