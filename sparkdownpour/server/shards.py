"""A sharded master model server: ``num_shards`` independent stores and servers (driver side).

DistBelief's parameter server is sharded, each shard applying the updates to its own range of
the parameters independently. Here every shard is a full ``ParameterStore`` (own arrays, lock,
rule state, step counter, exactly-once ledger) behind its own ``ParameterServer`` (own port,
own serving threads), all sharing the run's token and started and stopped together.
``ShardLayout`` says which contiguous range of the flat parameter vector each one holds.

``ShardedStore`` gives the driver (checkpoints, progress bar, epochs, the final model) the same
methods as one ``ParameterStore``; replicas talk to the shards through ``ShardedClient``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from sparkdownpour.server.layout import ShardLayout
from sparkdownpour.server.model_state import shard_store_kwargs
from sparkdownpour.server.store import ParameterStore
from sparkdownpour.server.store_protocol import Store

__all__ = ["ShardedServer", "ShardedStore", "serve_all"]

logger = logging.getLogger(__name__)


def serve_all(servers: Sequence[Any]) -> ExitStack:
    """Enter every server (``start``); if one fails, the ones started are stopped again.
    Closing the returned stack stops them all (in reverse order). Servers in child processes
    (``launch``/``wait_ready``, e.g. ``ServerProcess``) are all launched before any is waited
    for: spawning one and importing its modules takes over a second."""
    with ExitStack() as stack:
        for server in servers:
            if hasattr(server, "launch"):
                server.launch()
                stack.push(server.__exit__)
        for server in servers:
            if hasattr(server, "launch"):
                server.wait_ready()
            else:
                stack.enter_context(server)
        return stack.pop_all()


class ShardedStore:
    """``num_shards`` ``ParameterStore``s holding the ranges of ``ShardLayout(shapes, n)``.

    Counters in ``status()``: each shard's own under ``"shards"``; at the top level the sums
    (``updates_rejected``, ``stale_refused``, bytes), the maximum over shards of
    ``updates_applied`` (a replica's push is one update on every shard), and the staleness of
    every shard's updates together (mean, max and histogram alike); ``this_epoch`` likewise.
    """

    def __init__(self, params: Sequence[Any], rule: Any, num_shards: int, **store_kwargs: Any
                 ) -> None:
        arrays = [np.asarray(p, dtype=np.float32) for p in params]
        self.layout = ShardLayout([a.shape for a in arrays], num_shards)
        self.stores = [
            ParameterStore(part, rule, label={"index": i, "of": num_shards, "range": list(rng)},
                           **shard_store_kwargs(store_kwargs, i))
            for i, (part, rng) in enumerate(zip(self.layout.split(arrays), self.layout.bounds))]
        self.rule = rule

    @classmethod
    def over(cls, layout: ShardLayout, stores: Sequence[Store], rule: Any) -> ShardedStore:
        """The same driver-side view over stores built elsewhere (e.g. in child processes:
        ``store_process.StoreProcess``), one per range of ``layout``."""
        if len(stores) != len(layout.bounds):
            raise ValueError(f"{len(stores)} stores for a {len(layout.bounds)}-shard layout")
        self = cls.__new__(cls)
        self.layout, self.stores, self.rule = layout, list(stores), rule
        return self

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self.layout.shapes)

    @property
    def ledger(self):
        """Shard 0's ledger: every shard opens the same epochs (``open_epoch``)."""
        return self.stores[0].ledger

    @property
    def step(self) -> int:
        """Updates applied, summed over shards (monotonic; what checkpoint timers watch)."""
        return sum(store.step for store in self.stores)

    def fetch(self) -> tuple[int, list[np.ndarray]]:
        parts = [store.fetch() for store in self.stores]
        return sum(step for step, _ in parts), self.layout.merge([arrays for _, arrays in parts])

    def snapshot(self) -> list[np.ndarray]:
        return self.fetch()[1]

    def fetch_state(self) -> list[np.ndarray]:
        """Shard 0's: it alone holds the model's non-trainable state (``model_state``)."""
        return self.stores[0].fetch_state()

    def set_params(self, params: Sequence[Any]) -> None:
        for store, part in zip(self.stores, self.layout.split(params)):
            store.set_params(part)

    def open_epoch(self, epoch: int) -> None:
        for store in self.stores:
            store.open_epoch(epoch)

    def progress(self, epoch: int, partition: int, **kwargs: Any) -> int:
        return min(store.progress(epoch, partition, **kwargs) for store in self.stores)

    def live_loss(self) -> float | None:
        """Shard 0's: every push (with its loss report) goes to every shard."""
        return self.stores[0].live_loss()

    def status(self) -> dict[str, Any]:
        shards = [store.status() for store in self.stores]
        applied = [s["updates_applied"] for s in shards]
        stale_sum = sum(s["staleness"]["mean"] * n for s, n in zip(shards, applied))
        total = {key: sum(s[key] for s in shards) for key in
                 ("updates_rejected", "stale_refused", "bytes_in", "bytes_out",
                  "duplicates_refused", "nonfinite_skipped", "clipped")}
        histogram: dict[str, int] = {}
        for s in shards:
            for bucket, n in s["staleness"]["histogram"].items():
                histogram[bucket] = histogram.get(bucket, 0) + n
        epochs = [s["this_epoch"] for s in shards]
        epoch_applied = [e["updates_applied"] for e in epochs]
        epoch_sum = sum(e["staleness_mean"] * n for e, n in zip(epochs, epoch_applied))
        return {**shards[0], **total, "step": sum(s["step"] for s in shards),
                "updates_applied": max(applied),
                "staleness": {"mean": stale_sum / sum(applied) if sum(applied) else 0.0,
                              "max": max(s["staleness"]["max"] for s in shards),
                              "histogram": histogram},
                "this_epoch": {"updates_applied": max(epoch_applied),
                               "staleness_mean": epoch_sum / sum(epoch_applied)
                               if sum(epoch_applied) else 0.0,
                               "staleness_max": max(e["staleness_max"] for e in epochs)},
                "num_arrays": len(self.layout.shapes), "num_params": self.layout.size,
                "num_shards": len(shards), "shards": shards}

    # -- checkpoints: one file holds every shard's state -----------------------------------

    def export_state(self) -> dict[str, Any]:
        states = [store.export_state() for store in self.stores]
        counts = [len(s["rule_arrays"]) for s in states]
        return {
            "params": self.layout.merge([s["params"] for s in states]),
            "rule_arrays": [a for s in states for a in s["rule_arrays"]],
            "rule_structure": {"shards": [s["rule_structure"] for s in states],
                               "arrays": counts},
            "step": sum(s["step"] for s in states),
            "counters": {"shards": [s["counters"] for s in states],
                         "steps": [s["step"] for s in states]},
            "ledger": {"shards": [s["ledger"] for s in states]},
            **({"model_state": states[0]["model_state"]} if "model_state" in states[0] else {}),
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        structure = state["rule_structure"]
        written = len(structure.get("shards", [])) if isinstance(structure, dict) else 1
        if written != len(self.stores):
            raise ValueError(f"the checkpoint was written by a {written}-shard server, this one "
                             f"has {len(self.stores)}; resume with num_shards={written}")
        parts = self.layout.split(state["params"])
        start = 0
        for i, store in enumerate(self.stores):
            count = structure["arrays"][i]
            store.restore_state({
                "params": parts[i], "rule_structure": structure["shards"][i],
                "rule_arrays": state["rule_arrays"][start:start + count],
                "step": state["counters"]["steps"][i],
                "counters": state["counters"]["shards"][i],
                "ledger": state["ledger"]["shards"][i],
                **({"model_state": state.get("model_state")} if i == 0 else {})})
            start += count


class ShardedServer:
    """One ``ParameterServer`` per shard of ``store``, one token, started and stopped together.

    ``server_kwargs`` go to every ``ParameterServer`` (host, TLS, request limit); each binds
    its own free port. ``url`` is shard 0's, ``urls`` all of them in shard order."""

    def __init__(self, store: ShardedStore, **server_kwargs: Any) -> None:
        from sparkdownpour.server.app import ParameterServer  # imports Flask

        self.store = store
        first = ParameterServer(store.stores[0], **server_kwargs)
        server_kwargs["token"] = first.token
        server_kwargs["port"] = 0  # a fixed server_port is shard 0's; the others take free ones
        self.servers = [first] + [ParameterServer(s, **server_kwargs) for s in store.stores[1:]]
        self.token = first.token
        self._stack: ExitStack | None = None
        # Shard 0 serves the dashboard and /metrics, from every shard's status together.
        from sparkdownpour.observe.dashboard import dashboard_view

        view = dashboard_view(first)
        if view is not None:
            view.store = store

    @property
    def app(self):
        """Shard 0's Flask app: the one with the dashboard."""
        return self.servers[0].app

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def __enter__(self) -> ShardedServer:
        self._stack = serve_all(self.servers)
        logger.info("%d parameter shards listening on %s", len(self.servers), self.urls)
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
