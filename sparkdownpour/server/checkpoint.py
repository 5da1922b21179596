"""Checkpoints of the master model server's whole state, written atomically, never pickled.

One checkpoint is one ``.npz`` file (numpy's zip of ``.npy`` arrays, read back with
``allow_pickle=False``): the parameters ``p0..``, the update rule's state arrays ``s0..``, the
model's combined non-trainable state ``m0..`` (``model_state``: BatchNorm statistics), and a
``meta`` array holding UTF-8 JSON: the step, counters, the exactly-once ledger (open epoch,
per-partition progress), the rule state's structure, the run's config hash, whatever the driver
adds (``extra``: epochs done) and a SHA-256 over everything else.

Writing: temp file in the same directory, flush, fsync, ``os.replace``, fsync of the directory,
so a crash leaves either the old set of files or the new one, never a torn file under a final
name. The newest ``keep`` are kept. Reading: newest first; one that is truncated, corrupt,
tampered with or from a different configuration is skipped with a warning, and the previous one
is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sparkdownpour.errors import ParameterServerError

__all__ = ["CheckpointError", "Checkpointer", "latest_checkpoint", "read_checkpoint",
           "shard_count", "write_checkpoint"]

logger = logging.getLogger(__name__)

FORMAT = 1
_NAME = re.compile(r"^ckpt-(\d{12})-(\d{19})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or belongs to another configuration."""


def _digest(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def write_checkpoint(directory: str | Path, state: dict[str, Any], *, config_hash: str,
                     extra: dict[str, Any] | None = None, keep: int = 3) -> Path:
    """Write ``state`` (``ParameterStore.export_state()``) atomically; prune to ``keep`` files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"p{i}": p for i, p in enumerate(state["params"])}
    arrays.update({f"s{i}": s for i, s in enumerate(state["rule_arrays"])})
    model_state = state.get("model_state")
    if model_state:
        arrays.update({f"m{i}": m for i, m in enumerate(model_state["arrays"])})
    meta = {"format": FORMAT, "config_hash": config_hash, "created": time.time(),
            "step": state["step"], "counters": state["counters"], "ledger": state["ledger"],
            "rule_structure": state["rule_structure"], "num_params": len(state["params"]),
            "extra": extra or {}}
    if model_state:
        meta["model_state"] = {"num_arrays": len(model_state["arrays"]),
                               "counters": model_state["counters"]}
    meta["sha256"] = _digest(arrays, meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    final = directory / f"ckpt-{state['step']:012d}-{time.time_ns():019d}.npz"
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    for old in _checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    return final


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported here (e.g. some network file systems): rename is enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files, newest (highest step, then latest write) first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: _NAME.match(p.name).groups(), reverse=True)


def shard_count(state: dict[str, Any]) -> int:
    """How many shards wrote a checkpoint's state (``ShardedStore.export_state`` keeps one
    rule structure per shard)."""
    structure = state.get("rule_structure")
    if isinstance(structure, dict) and isinstance(structure.get("shards"), list) \
            and "arrays" in structure:
        return len(structure["shards"])
    return 1


def read_checkpoint(path: str | Path, *, config_hash: str | None = None,
                    num_shards: int | None = None) -> dict[str, Any]:
    """Load and verify one checkpoint; ``CheckpointError`` says what is wrong with it.
    With ``num_shards``, one written by another number of shards raises ``ValueError``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
        claimed = meta.pop("sha256")
    except (KeyError, ValueError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(f"{path}: no readable metadata ({e})") from e
    if _digest(arrays, meta) != claimed:
        raise CheckpointError(f"{path}: checksum mismatch (the file was modified or damaged)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, this build reads {FORMAT}")
    written = shard_count(meta)
    if num_shards is not None and written != num_shards:
        # Not skipped for an older one: the run's knob changed, not the file.
        raise ValueError(f"{path} was written by a {written}-shard server and this run has "
                         f"num_shards={num_shards}: resume with num_shards={written}, or start "
                         f"without resume (or with another checkpoint_dir)")
    if config_hash is not None and meta["config_hash"] != config_hash:
        raise CheckpointError(f"{path}: written by a different configuration (the model, the "
                              "data or a knob that shapes the run changed); start without "
                              "resume or use another checkpoint_dir")
    n = meta["num_params"]
    held = meta.get("model_state")
    model_state = None if held is None else {
        "arrays": [arrays[f"m{i}"] for i in range(held["num_arrays"])],
        "counters": held["counters"]}
    return {"path": str(path), "step": meta["step"], "counters": meta["counters"],
            "ledger": meta["ledger"], "rule_structure": meta["rule_structure"],
            "params": [arrays[f"p{i}"] for i in range(n)],
            "rule_arrays": [arrays[f"s{i}"] for i in range(sum(k[0] == "s" for k in arrays))],
            "extra": meta["extra"], "model_state": model_state}


def latest_checkpoint(directory: str | Path, *, config_hash: str | None = None,
                      num_shards: int | None = None) -> dict[str, Any] | None:
    """The newest checkpoint that verifies; each bad newer one is skipped with a warning.
    With ``num_shards``, a newest checkpoint of another shard count is refused
    (``ValueError`` naming both counts), not skipped."""
    for path in _checkpoints(Path(directory)):
        try:
            return read_checkpoint(path, config_hash=config_hash, num_shards=num_shards)
        except CheckpointError as e:
            message = f"skipping checkpoint {e}; trying the previous one"
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
    return None


class Checkpointer:
    """Writes the store's state every ``every_updates`` updates or ``every_s`` seconds (on a
    daemon thread), and on demand with ``write(extra)``. The state is copied under the store's
    lock; the file is written outside it, so pushes only wait for a memory copy."""

    def __init__(self, store: Any, directory: str | Path, *, config_hash: str, keep: int = 3,
                 every_updates: int = 0, every_s: float = 60.0,
                 extra: Callable[[], dict] = dict) -> None:
        self.store, self.directory, self.config_hash = store, Path(directory), config_hash
        self.keep, self.every_updates, self.every_s, self.extra = keep, every_updates, every_s, extra
        self._lock = threading.Lock()  # one writer at a time: thread and driver
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_step, self._last_time = store.step, time.monotonic()
        self.written: list[Path] = []

    def write(self, extra: dict | None = None) -> Path:
        with self._lock:
            state = self.store.export_state()
            path = write_checkpoint(self.directory, state, config_hash=self.config_hash,
                                    extra=self.extra() if extra is None else extra,
                                    keep=self.keep)
            self._last_step, self._last_time = state["step"], time.monotonic()
            self.written.append(path)
            logger.info("checkpoint %s (step %d)", path, state["step"])
            return path

    def _due(self) -> bool:
        step = self.store.step
        if step == self._last_step:
            return False
        if self.every_updates and step - self._last_step >= self.every_updates:
            return True
        return time.monotonic() - self._last_time >= self.every_s

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                if self._due():
                    self.write()
            except ParameterServerError as e:  # a shard is gone: the trainer raises that
                logger.warning("checkpoints to %s stopped: %s", self.directory, e)
                return
            except Exception:  # a full disk must not kill training; it is logged every time
                logger.exception("writing a checkpoint to %s failed", self.directory)

    def __enter__(self) -> Checkpointer:
        self._thread = threading.Thread(target=self._run, name="sparkdownpour-checkpoints",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
