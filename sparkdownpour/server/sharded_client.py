"""The replica's side of a sharded server: every shard fetched and pushed concurrently.

``ShardedClient`` has ``ParameterClient``'s methods, but a base step is a tuple (one step per
shard: each shard counts its own updates) and the arrays are the model's, split and merged with
``ShardLayout``. With more than one shard, each request goes to all shards at once from a small
thread pool (one thread per shard), so one slow shard does not serialize the others; with one
shard, calls go straight through.

A push's outcome combines the shards' (``combine_outcomes``): exactly-once and staleness are
per shard, so a push can be applied on one shard and refused as a duplicate on another (that
shard had it already, e.g. from an attempt that died between the two), which counts as applied.

Every shard's answer is checked against the range it should hold before the arrays are merged:
a shard answering arrays of another range (shard URLs out of order, a server of another run)
is named with its URL, not merged into a wrong model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.server.client import ParameterClient, PushOutcome
from sparkdownpour.server.layout import ShardLayout
from sparkdownpour.server.ledger import Position

__all__ = ["ShardedClient", "combine_outcomes"]

logger = logging.getLogger(__name__)

# A refusal on some shards only: these leave the push's effect complete (a duplicate shard
# had the update already, a stale shard dropped its range by design), the others do not.
_HARMLESS = ("duplicate", "stale")


def combine_outcomes(outcomes: Sequence[PushOutcome]) -> PushOutcome:
    """One push's outcome from every shard's (without parameters)."""
    applied = [o for o in outcomes if o.applied]
    refusals = [o.refusal for o in outcomes if not o.applied]
    progress = [o.progress for o in outcomes if o.progress is not None]
    refusal = None
    serious = [r for r in refusals if r not in _HARMLESS]
    if serious:  # out of order or a closed epoch anywhere: the replica must not go on
        refusal = serious[0]
    elif not applied:
        refusal = "stale" if all(r == "stale" for r in refusals) else "duplicate"
    return PushOutcome(step=tuple(o.step for o in outcomes),
                       staleness=max(o.staleness for o in outcomes),
                       applied=bool(applied) and not serious, refusal=refusal,
                       progress=min(progress) if progress else None)


class ShardedClient:
    """Clients for the shards at ``urls`` (in shard order) of a model with ``shapes``."""

    def __init__(self, urls: Sequence[str], token: str, shapes: Sequence[Sequence[int]],
                 **client_kwargs: Any) -> None:
        if not urls:
            raise ValueError("urls is empty: a sharded client needs every shard's URL")
        self.layout = ShardLayout(shapes, len(urls))
        self.clients = [ParameterClient(url, token, **client_kwargs) for url in urls]
        self._pool = ThreadPoolExecutor(len(urls), "sparkdownpour-shard") if len(urls) > 1 \
            else None
        self.last_push: PushOutcome | None = None

    def _each(self, function, *per_shard: Sequence[Any]) -> list:
        items = list(zip(self.clients, *per_shard)) if per_shard else [(c,) for c in self.clients]
        if self._pool is None:
            return [function(*item) for item in items]
        return list(self._pool.map(lambda item: function(*item), items))

    def fetch(self, replica: str | None = None) -> tuple[tuple[int, ...], list[np.ndarray]]:
        """``(steps, params)``: every shard's step and the merged arrays."""
        parts = self._each(lambda c: c.fetch(replica))
        return tuple(step for step, _ in parts), self._merge([a for _, a in parts])

    def push(self, grads: Sequence[Any], *, base_step: Sequence[int], replica: str,
             return_params: bool = False, position: Position | None = None,
             report: dict[str, Any] | None = None, sync: dict[str, int] | None = None):
        """Push each shard its range of ``grads``; one combined ``PushOutcome``.

        With ``return_params`` an applied outcome holds the full fresh params: a shard that
        refused its part (and so sent no params) is fetched separately."""
        if len(base_step) != len(self.clients):
            raise ValueError(f"base_step needs one step per shard ({len(self.clients)}), "
                             f"got {tuple(base_step)!r}")
        parts = self.layout.split(grads)

        def one(client, part, step):
            return client.push(part, base_step=int(step), replica=replica,
                               return_params=return_params, position=position, report=report,
                               sync=sync)

        results = self._each(one, parts, list(base_step))
        outcome = combine_outcomes(results)
        if return_params and outcome.applied:
            fresh = self._each(lambda c, r: (r.step, r.params) if r.params is not None
                               else c.fetch(replica), results)
            outcome = outcome._replace(step=tuple(step for step, _ in fresh),
                                       params=self._merge([a for _, a in fresh]))
        self.last_push = outcome
        return outcome

    def _merge(self, per_shard: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """The model's arrays, once every shard is seen to hold its own range."""
        for i, (client, arrays) in enumerate(zip(self.clients, per_shard)):
            want = self.layout.shard_shapes(i)
            got = [tuple(np.shape(a)) for a in arrays]
            if got != want:
                lo, hi = self.layout.bounds[i]
                raise ParameterServerError(
                    f"parameter shard {i} of {len(self.clients)} at {client.url} answered "
                    f"arrays of shapes {got}, expected {want} (parameters {lo}..{hi - 1} of "
                    f"{self.layout.size}): the shard URLs are out of order or one belongs to "
                    f"another model; pass every shard's URL in shard order")
        return self.layout.merge(per_shard)

    def progress(self, epoch: int, partition: int, **kwargs: Any) -> int:
        """The least progress over the shards: where an attempt must resume so that every
        shard gets every mini-batch (a shard that has one already refuses it as a duplicate)."""
        return min(self._each(lambda c: c.progress(epoch, partition, **kwargs)))

    def status(self) -> list[dict[str, Any]]:
        return self._each(lambda c: c.status())

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> ShardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
