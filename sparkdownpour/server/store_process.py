"""Downpour's master model server with every shard in its own process (``shard_processes``).

Threads of one process apply updates one at a time (the GIL); with ``shard_processes=True``
each shard's ``ParameterStore`` and HTTP server run in a spawned child (``ServerProcess``), so
N shards can apply N updates at once on N cores. Replicas see the same routes, token, limits
and wire format as with threaded shards. The driver reaches each child's store through the
child's pipe (``StoreProcess``: epochs, status, checkpoints, the final parameters), and with
several shards through a ``ShardedStore`` over those proxies, so checkpoints, resume and the
progress bar work unchanged. The dashboard is served from the driver
(``observe.routes.create_status_app``): a child's own dashboard sees only its shard.

A child can die mid-run (the kernel's out-of-memory killer, an operator's ``kill``). A
watchdog thread of the driver notices within ``WATCH_INTERVAL_S``, records a ``ShardDeath``
(which shard, its pid, its exit code) and calls ``on_death``, so the trainer can stop its
Spark job at once instead of waiting for every replica to give up on the shard.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparkdownpour.server.layout import ShardLayout
from sparkdownpour.server.model_state import shard_store_kwargs
from sparkdownpour.server.shards import ShardedStore, serve_all
from sparkdownpour.transport.child_process import ServerProcess

__all__ = ["ProcessShardedServer", "ShardDeath", "StoreProcess"]

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 0.1  # how often the driver's watchdog looks at its shard children

# What the driver may ask of a child's store (``ServerProcess.call``).
STORE_COMMANDS = ("fetch", "snapshot", "status", "open_epoch", "progress", "set_params",
                  "export_state", "restore_state", "step", "ledger.epoch", "live_loss",
                  "fetch_state")


def _store_in_child(arrays: list, rule: Any, store_kwargs: dict, label: dict):
    """``ServerProcess`` factory, run in the child: the shard's store and the usual app."""
    from sparkdownpour.server.app import create_app
    from sparkdownpour.server.store import ParameterStore

    store = ParameterStore(arrays, rule, label={**label, "pid": os.getpid()}, **store_kwargs)
    return store, create_app


class _Ledger:
    """The part of a store's ledger the driver reads (the open epoch, on resume)."""

    def __init__(self, process: StoreProcess) -> None:
        self._process = process

    @property
    def epoch(self) -> int | None:
        return self._process.call("ledger.epoch")


class StoreProcess(ServerProcess):
    """A ``ParameterStore`` of ``arrays`` served by a child; its methods answered by pipe."""

    def __init__(self, arrays: Sequence[np.ndarray], rule: Any, store_kwargs: dict, *,
                 label: dict, **process_kwargs: Any) -> None:
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        super().__init__(_store_in_child, (arrays, rule, dict(store_kwargs), dict(label)),
                         commands=STORE_COMMANDS, **process_kwargs)
        self.shapes = tuple(a.shape for a in arrays)
        self.rule = rule
        self.ledger = _Ledger(self)

    @property
    def step(self) -> int:
        return self.call("step")

    def fetch(self) -> tuple[int, list[np.ndarray]]:
        return self.call("fetch")

    def snapshot(self) -> list[np.ndarray]:
        return self.call("snapshot")

    def fetch_state(self) -> list[np.ndarray]:
        return self.call("fetch_state")

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def live_loss(self) -> float | None:
        return self.call("live_loss")

    def open_epoch(self, epoch: int) -> None:
        self.call("open_epoch", epoch)

    def progress(self, epoch: int, partition: int, **kwargs: Any) -> int:
        if kwargs:
            raise TypeError("the driver reads a partition's progress without keywords")
        return self.call("progress", epoch, partition)

    def set_params(self, params: Sequence[Any]) -> None:
        self.call("set_params", [np.asarray(p, dtype=np.float32) for p in params])

    def export_state(self) -> dict[str, Any]:
        return self.call("export_state")

    def restore_state(self, state: dict[str, Any]) -> None:
        self.call("restore_state", state)


@dataclass(frozen=True)
class ShardDeath:
    """A shard child that exited while its server was running."""

    index: int
    of: int
    name: str
    pid: int
    exitcode: int | None

    @property
    def cause(self) -> str:
        code = self.exitcode
        if code is None:
            return "exit code unknown"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"exit code {code}, killed by {name}"
        return f"exit code {code}"

    def __str__(self) -> str:
        return (f"parameter shard {self.index} of {self.of} ({self.name}, pid {self.pid}) "
                f"died ({self.cause})")


class ProcessShardedServer:
    """``num_shards`` ``StoreProcess``es started together (at once) and stopped together.

    ``store`` is what the driver uses: the one ``StoreProcess`` (unsharded wire format, as a
    one-shard ``ParameterServer``), or a ``ShardedStore`` over them. ``port`` is shard 0's;
    ``tls`` is ``(cert_file, key_file)``; all shards share one token.

    While it runs, a watchdog thread looks at every child each ``WATCH_INTERVAL_S``; the
    first that has exited is logged, kept in ``deaths`` and passed to ``on_death`` (called
    once, on the watchdog's thread).
    """

    def __init__(self, params: Sequence[Any], rule: Any, num_shards: int, *, host: str,
                 token: str, max_request_bytes: int, port: int = 0,
                 tls: tuple[str, str] | None = None, store_kwargs: dict | None = None,
                 on_death: Callable[[ShardDeath], None] | None = None) -> None:
        arrays = [np.asarray(p, dtype=np.float32) for p in params]
        kwargs = {"host": host, "token": token, "max_request_bytes": max_request_bytes,
                  "tls": tls}
        self.layout = ShardLayout([a.shape for a in arrays], num_shards)  # one shard: as is
        parts = self.layout.split(arrays)
        labels = [{"index": 0, "of": 1}] if num_shards == 1 else \
            [{"index": i, "of": num_shards, "range": list(rng)}
             for i, rng in enumerate(self.layout.bounds)]
        self.processes = [
            StoreProcess(part, rule, shard_store_kwargs(store_kwargs or {}, i), label=label,
                         port=port if i == 0 else 0,
                         name=f"sparkdownpour-shard-{i}", **kwargs)
            for i, (part, label) in enumerate(zip(parts, labels))]
        self.store = self.processes[0] if num_shards == 1 else \
            ShardedStore.over(self.layout, self.processes, rule)
        self.token = token
        self.num_shards = num_shards
        self.on_death = on_death
        self.deaths: list[ShardDeath] = []
        self._stack: ExitStack | None = None
        self._stop_watching = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._deaths_lock = threading.Lock()

    @property
    def urls(self) -> list[str]:
        return [process.url for process in self.processes]

    @property
    def url(self) -> str:
        return self.processes[0].url

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def check(self, wait: float = 0.0) -> list[ShardDeath]:
        """The children that have died (recorded in ``deaths``), waiting up to ``wait``
        seconds for one to be seen (a replica may notice a dead shard before the watchdog)."""
        deadline = time.monotonic() + wait
        while True:
            with self._deaths_lock:
                seen = {death.index for death in self.deaths}
                for i, child in enumerate(self.processes):
                    process = child.process
                    if i in seen or process is None or process.is_alive():
                        continue
                    self.deaths.append(ShardDeath(i, self.num_shards, child.name, process.pid,
                                                  process.exitcode))
                deaths = list(self.deaths)
            if deaths or time.monotonic() >= deadline:
                return deaths
            time.sleep(0.05)

    def _watch(self) -> None:
        while not self._stop_watching.wait(WATCH_INTERVAL_S):
            deaths = self.check()
            if deaths:
                logger.error("%s mid-run; stopping the run", deaths[0])
                if self.on_death is not None:
                    try:
                        self.on_death(deaths[0])
                    except Exception:  # the trainer still hears of it from its next call
                        logger.exception("the on_death callback for %s failed", deaths[0].name)
                return

    def __enter__(self) -> ProcessShardedServer:
        self._stack = serve_all(self.processes)
        self._stop_watching.clear()
        self._watchdog = threading.Thread(target=self._watch, name="sparkdownpour-shard-watchdog",
                                          daemon=True)
        self._watchdog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_watching.set()  # before the children stop: a stop is not a death
        if self._watchdog is not None:
            self._watchdog.join(5)
            self._watchdog = None
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
