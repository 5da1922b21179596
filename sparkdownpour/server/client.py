"""The replica's side of the Downpour wire: fetch parameters, push updates, read the status.

``ParameterClient`` extends the transport's ``HttpClient`` (keep-alive, timeouts, retries,
errors naming the URL and route). ``fetch``, ``status`` and ``progress`` are idempotent and
retried. A push that carries a position (epoch, partition, mini-batch range) is idempotent too,
because the server applies a position at most once and refuses the copy, so it is retried the
same way. A push without a position is sent at most once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

from sparkdownpour.server.compression import Compressor
from sparkdownpour.server.ledger import DEVICE_MAX, Position
from sparkdownpour.transport.client import HttpClient
from sparkdownpour.transport.frames import ProtocolError, encode_frame_parts

__all__ = ["ParameterClient", "PushOutcome"]


class PushOutcome(NamedTuple):
    """What became of one push, whatever the server answered.

    ``step``: the server's step after it (a tuple, one per shard, from a ``ShardedClient``);
    ``staleness``: pushes applied since the base step (-1: unknown); ``applied``: False when
    refused, and then ``refusal`` says why (``"duplicate"``, ``"stale"``, ``"closed_epoch"``,
    ``"out_of_order"``) and ``progress`` how many mini-batches of the partition the server has;
    ``params``: the fresh parameters when the push asked for them and was applied, else None.
    """

    step: int | tuple[int, ...]
    staleness: int
    applied: bool
    progress: int | None
    refusal: str | None
    params: list[np.ndarray] | None = None


class ParameterClient(HttpClient):
    """HTTP client for one parameter server (``url`` from ``ParameterServer.url``).

    ``compression`` (``"fp16"``, ``"bf16"``, ``"topk"``) applies to pushes only; fetches stay
    exact float32 (see ``server.compression``). ``last_push`` keeps the last push's
    ``PushOutcome``.
    """

    def __init__(self, url: str, token: str, *, compression: str | None = None,
                 topk_ratio: float = 0.01, **options: Any) -> None:
        super().__init__(url, token, **options)
        self._compressor = Compressor(compression, topk_ratio) if compression else None
        self.last_push: PushOutcome | None = None

    def _params(self, method: str, route: str, resp, data) -> tuple[int, list[np.ndarray]]:
        frame = self.read_frame(method, route, resp, data, "params")
        return frame.step, frame.arrays

    def fetch(self, replica: str | None = None) -> tuple[int, list[np.ndarray]]:
        """``(step, params)`` from the server (writable float32 arrays, no extra copy).

        ``replica`` names the reader, so delay-aware rules (DC-ASGD, AdaRevision) can keep
        what they need of this read for its next push."""
        route = "/v1/params" if replica is None else f"/v1/params?replica={quote(replica)}"
        resp, data = self.request("GET", route, idempotent=True)
        return self._params("GET", route, resp, data)

    def push(
        self,
        grads: Sequence[Any],
        *,
        base_step: int,
        replica: str,
        return_params: bool = False,
        position: Position | None = None,
        report: dict[str, Any] | None = None,
        sync: dict[str, int] | None = None,
    ) -> PushOutcome:
        """Send one update computed against params of ``base_step``; returns its ``PushOutcome``.

        With ``return_params`` the outcome carries the fresh parameters from the same response
        (one round trip instead of two). With a ``position`` (see ``ledger.Position``) the
        server applies the push at most once, so it is retried on connection errors; a refused
        duplicate, or a push staler than the server's ``max_staleness``, comes back with
        ``applied=False`` and its ``refusal``.
        """
        meta = dict(report or {})
        if position is not None:
            meta.update(position._asdict())
        if sync is not None:  # mode="sync": {"sync_epoch", "sync_round", "sync_size", "sync_rows"}
            meta.update(sync)
        try:
            # Parts alias the grads: the update is written to the socket without a copy.
            if self._compressor is not None:
                grads = self._compressor.encode(grads)
            body = encode_frame_parts(grads, kind="update", step=base_step, replica=replica,
                                      meta=meta)
        except ProtocolError as e:
            raise ValueError(f"cannot encode the update: {e}") from e
        route = "/v1/update?return_params=1" if return_params else "/v1/update"
        # 409: refused (a duplicate position, or staler than the server's max_staleness).
        resp, data = self.request("POST", route, body, idempotent=position is not None,
                                  accept=(200, 409))
        if resp.status == 409 or not return_params:
            try:
                result = json.loads(data)
                outcome = PushOutcome(step=int(result["step"]),
                                      staleness=int(result.get("staleness", -1)),
                                      applied=bool(result.get("applied", True)),
                                      progress=result.get("progress"),
                                      refusal=result.get("refusal"))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise self.error("POST", route, f"unexpected response {data[:200]!r}") from e
        else:
            step, arrays = self._params("POST", route, resp, data)
            try:
                progress = resp.getheader("X-Sdp-Progress", "")
                outcome = PushOutcome(step=int(resp.getheader("X-Sdp-Step", step)),
                                      staleness=int(resp.getheader("X-Sdp-Staleness", -1)),
                                      applied=True, progress=int(progress) if progress else None,
                                      refusal=None, params=arrays)
            except ValueError:
                outcome = PushOutcome(step, -1, True, None, None, arrays)
        self.last_push = outcome
        return outcome

    def progress(self, epoch: int, partition: int, *, attempt: int = 0, pid: int = 0,
                 device: str | None = None) -> int:
        """How many mini-batches of ``partition`` the server applied in ``epoch``; ``device``
        (e.g. ``"GPU:0 (spark gpu 1)"``) is shown in the server's status."""
        route = (f"/v1/progress?epoch={int(epoch)}&partition={int(partition)}"
                 f"&attempt={int(attempt)}&pid={int(pid)}")
        if device:
            route += "&device=" + quote(device[:DEVICE_MAX], safe="")
        _, data = self.request("GET", route, idempotent=True)
        try:
            return int(json.loads(data)["applied"])
        except (ValueError, KeyError, TypeError) as e:
            raise self.error("GET", route, f"unexpected response {data[:200]!r}") from e
