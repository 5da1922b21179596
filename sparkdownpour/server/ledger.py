"""Exactly-once bookkeeping and replica health for the master model server.

Every Downpour push says which mini-batches it covers: ``Position(epoch, partition, begin, end,
attempt)``, where ``begin``/``end`` index the partition's mini-batches in their (deterministic)
order for that epoch. The ledger keeps, per (epoch, partition), how many mini-batches have been
applied (``progress``). A push is applied only if it starts exactly where the partition got to
(``begin == progress``); anything else is refused:

- ``end <= progress``: a **duplicate** (a retried or speculative attempt, or a re-sent request
  whose first copy was applied). Refused and counted; the answer carries the progress so the
  attempt skips ahead instead of recomputing.
- ``begin > progress`` or a range that straddles it: **out of order** (the partition's batches
  are not in the same order as in the attempt that pushed before; nothing sane can be applied).
- an epoch other than the open one: **closed epoch** (a straggler from a finished job). The
  driver opens each epoch before its Spark job; a store nobody opened an epoch on (a test, a
  hand-driven server) accepts every epoch.

Because the store checks and records under the same lock that applies the update, two attempts
racing with the same step can never both apply it.

The ledger is not thread-safe: ``ParameterStore`` calls it with its lock held.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

__all__ = ["Position", "ProgressLedger", "position_from_meta"]

# Keys a push's meta may carry; anything else is refused, so a damaged or foreign frame cannot
# smuggle in fields that some later version would act on.
POSITION_KEYS = ("epoch", "partition", "begin", "end", "attempt")
# "batches": how many mini-batches a push without a position sums (a position says it itself)
REPORT_KEYS = ("loss", "nonfinite", "clipped", "batches")
MAX_INDEX = 2**53  # JSON numbers beyond this lose precision in other languages' parsers
DEVICE_MAX = 120  # characters of a replica's device label kept for status


class Position(NamedTuple):
    """The mini-batches ``[begin, end)`` of ``partition`` in ``epoch``, pushed by ``attempt``."""

    epoch: int
    partition: int
    begin: int
    end: int
    attempt: int = 0


def _index(meta: dict, key: str) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INDEX:
        raise ValueError(f"meta field {key!r} must be an integer in 0..2**53, got {value!r:.40}")
    return value


def position_from_meta(meta: dict[str, Any]) -> tuple[Position | None, dict[str, Any]]:
    """Split a push's meta into its ``Position`` (or None when it carries none) and report.

    Raises ``ValueError`` naming the field for unknown keys, a partial position, or values of
    the wrong type, so a malformed push is refused with a 400 and changes nothing.
    """
    unknown = sorted(set(meta) - set(POSITION_KEYS) - set(REPORT_KEYS))
    if unknown:
        raise ValueError(f"unknown meta field(s) {unknown}; allowed: "
                         f"{list(POSITION_KEYS + REPORT_KEYS)}")
    present = [k for k in POSITION_KEYS if k in meta]
    position = None
    if present:
        missing = [k for k in POSITION_KEYS if k not in meta]
        if missing:
            raise ValueError(f"a push's position needs all of {list(POSITION_KEYS)}; "
                             f"missing {missing}")
        position = Position(*(_index(meta, k) for k in POSITION_KEYS))
        if position.end <= position.begin:
            raise ValueError(f"meta 'end' ({position.end}) must be greater than 'begin' "
                             f"({position.begin})")
    report = {}
    loss = meta.get("loss")
    if loss is not None and (isinstance(loss, bool) or not isinstance(loss, (int, float))):
        raise ValueError(f"meta field 'loss' must be a number or null, got {loss!r:.40}")
    if "loss" in meta:
        report["loss"] = math.nan if loss is None else float(loss)  # null: non-finite
    for key in ("nonfinite", "clipped", "batches"):
        if key in meta:
            report[key] = _index(meta, key)
    if report.get("batches") == 0:
        raise ValueError("meta field 'batches' must be at least 1 (the mini-batches the push "
                         "sums), got 0")
    return position, report


class ProgressLedger:
    """Per-(epoch, partition) applied progress, refusals, attempts and replica health."""

    def __init__(self, divergence_factor: float = 4.0, min_reports: int = 5) -> None:
        self.epoch: int | None = None          # the open epoch; positioned pushes need it
        self.progress: dict[tuple[int, int], int] = {}  # (epoch, partition) -> batches applied
        self.refused = {"duplicate": 0, "out_of_order": 0, "closed_epoch": 0}
        self.attempts: dict[str, dict[str, Any]] = {}  # partition -> latest attempt seen
        self.devices: dict[str, str] = {}  # replica ("p<partition>-a<attempt>") -> its device
        self._divergence_factor, self._min_reports = divergence_factor, min_reports
        self._health: dict[str, dict[str, float]] = {}  # replica -> loss EMA, best, reports
        self.nonfinite_skipped = 0
        self.clipped = 0

    # -- exactly-once ------------------------------------------------------------------

    def open_epoch(self, epoch: int) -> None:
        """Start accepting pushes of ``epoch``; earlier epochs' stragglers are refused."""
        if self.epoch != epoch:
            self.epoch = epoch
            self.progress = {k: v for k, v in self.progress.items() if k[0] == epoch}

    def applied(self, epoch: int, partition: int) -> int:
        """Mini-batches of ``partition`` applied in ``epoch``."""
        return self.progress.get((epoch, partition), 0)

    def verdict(self, position: Position) -> str | None:
        """None if ``position`` may be applied now, else the refusal reason."""
        if self.epoch is not None and position.epoch != self.epoch:
            return "closed_epoch"
        done = self.progress.get((position.epoch, position.partition), 0)
        if position.begin == done:
            return None
        return "duplicate" if position.end <= done else "out_of_order"

    def refuse(self, reason: str) -> None:
        self.refused[reason] += 1

    def record(self, position: Position) -> None:
        self.progress[(position.epoch, position.partition)] = position.end

    def progress_by_partition(self) -> dict[str, int]:
        """``{"<epoch>/<partition>": applied}`` for status (the open epoch's, normally)."""
        return {f"{e}/{p}": n for (e, p), n in sorted(self.progress.items())}

    def note_attempt(self, epoch: int, partition: int, attempt: int, pid: int,
                     device: str | None = None) -> None:
        self.attempts[str(partition)] = {"epoch": epoch, "attempt": attempt, "pid": pid}
        if device:
            self.attempts[str(partition)]["device"] = device
            self.devices[f"p{partition}-a{attempt}"] = device
            if len(self.devices) > 4096:  # bounded, like the health records
                self.devices.pop(next(iter(self.devices)))

    # -- health ------------------------------------------------------------------------

    def report(self, replica: str, report: dict[str, Any]) -> None:
        """Fold one push's report (mean loss since the last push, skipped batches) in."""
        self.nonfinite_skipped += report.get("nonfinite", 0)
        self.clipped += report.get("clipped", 0)
        if "loss" not in report:
            return
        loss = report["loss"]
        health = self._health.setdefault(replica, {"ema": loss, "best": math.inf, "reports": 0})
        # An EMA, so one unlucky mini-batch is not called a divergence.
        health["ema"] = loss if not math.isfinite(health["ema"]) else 0.7 * health["ema"] + 0.3 * loss
        health["reports"] += 1
        if health["reports"] >= self._min_reports and math.isfinite(health["ema"]):
            health["best"] = min(health["best"], health["ema"])
        if len(self._health) > 4096:  # bounded: the oldest replica's record goes first
            self._health.pop(next(iter(self._health)))

    def loss_ema(self) -> dict[str, float]:
        """Each replica's smoothed recent loss (what the dashboard charts live)."""
        return {replica: h["ema"] for replica, h in self._health.items()}

    def diverging(self) -> dict[str, dict[str, Any]]:
        """Replicas whose loss is non-finite or grew ``divergence_factor`` times its best."""
        out = {}
        for replica, h in self._health.items():
            if not math.isfinite(h["ema"]):
                out[replica] = {"loss": None, "reason": "non-finite loss"}
            elif h["reports"] >= self._min_reports and h["ema"] > self._divergence_factor * h["best"] > 0:
                out[replica] = {"loss": h["ema"], "best": h["best"],
                                "reason": f"loss grew over {self._divergence_factor:g}x its best"}
        return out

    # -- checkpoints -------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        return {"epoch": self.epoch,
                "progress": [[e, p, n] for (e, p), n in sorted(self.progress.items())],
                "refused": dict(self.refused)}

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch = state.get("epoch")
        self.progress = {(int(e), int(p)): int(n) for e, p, n in state.get("progress", [])}
        self.refused.update({k: int(v) for k, v in state.get("refused", {}).items()
                             if k in self.refused})
