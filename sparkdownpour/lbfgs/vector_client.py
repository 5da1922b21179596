"""The executors' side of Sandblaster's vector shards (``lbfgs.shard_server``): the client and
``fetch_vector``, apart from the shards' Flask app so that an evaluator's Python worker does not
import Flask (``sparkdownpour.lazy_exports`` says why that matters)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import numpy as np

from sparkdownpour.lbfgs.vectors import ProgramResult
from sparkdownpour.transport.client import HttpClient
from sparkdownpour.transport.frames import ProtocolError, decode_frame, encode_frame_parts


class VectorClient(HttpClient):
    """One shard's client: runs programs (sent at most once) and fetches slices (retried)."""

    def run(self, program: Sequence[Any], puts: dict[str, np.ndarray] | None = None
            ) -> ProgramResult:
        puts = puts or {}
        body = encode_frame_parts(list(puts.values()), kind="vectors", step=0,
                                  meta={"program": list(program), "puts": list(puts)})
        resp, data = self.request("POST", "/v1/vec/run", body, idempotent=False)
        try:
            frame = decode_frame(data)
            dots, names = frame.meta["dots"], frame.meta["gets"]
        except (ProtocolError, KeyError) as e:
            raise self.error("POST", "/v1/vec/run", f"malformed answer: {e}") from e
        return ProgramResult(dots=[float(d) for d in dots],
                             gets={n: np.asarray(a, np.float64) for n, a in zip(names, frame.arrays)})

    def get(self, name: str) -> np.ndarray:
        route = f"/v1/vec/get?name={quote(name)}"
        resp, data = self.request("GET", route, idempotent=True)
        return self.read_frame("GET", route, resp, data, "params").arrays[0]


def fetch_vector(clients: Sequence[VectorClient], name: str) -> np.ndarray:
    """Executor side: the whole vector ``name`` as float32, each shard fetched on its own thread."""
    if len(clients) == 1:
        return clients[0].get(name)
    with ThreadPoolExecutor(len(clients)) as pool:
        return np.concatenate(list(pool.map(lambda c: c.get(name), clients)))
