"""Sandblaster's parameter shards over HTTP: one server per shard, started together.

Each shard is a ``VectorShard`` behind the same guarded, keep-alive server as Downpour's master
model server (per-run bearer token, size limit, binary frames, no pickle)::

    POST /v1/vec/run        frame kind "vectors": meta {"program": [...], "puts": [names]},
                            arrays = the put slices  ->  frame: meta {"dots", "gets"}, arrays
    GET  /v1/vec/get?name=  frame kind "params" with the one slice (what executors fetch)
    GET  /v1/status         {"size", "vectors", "pid", "programs", "fetches"}

The coordinator reaches every shard through ``RemoteVectors`` (all shards at once, a thread
each); executors fetch the evaluation point with ``vector_client.fetch_vector``.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from flask import Response, jsonify, request

from sparkdownpour.config import DEFAULT_MAX_REQUEST_BYTES
from sparkdownpour.lbfgs.vector_client import VectorClient
from sparkdownpour.lbfgs.vectors import (
    ProgramResult,
    VectorOpError,
    VectorShard,
    merge_results,
    shard_bounds,
    split_puts,
)
from sparkdownpour.server.shards import serve_all
from sparkdownpour.transport.flask_app import error_response, frame_response, guarded_app, read_body
from sparkdownpour.transport.frames import ProtocolError, decode_frame, encode_frame
from sparkdownpour.transport.http_server import HttpServer


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.programs = self.fetches = 0

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


def create_vector_app(shard: VectorShard, *, token: str, max_request_bytes: int):
    """The HTTP routes of one vector shard."""
    app = guarded_app(__name__, token=token, max_request_bytes=max_request_bytes)
    counters = _Counters()

    @app.post("/v1/vec/run")
    def run() -> Response:
        try:
            frame = decode_frame(read_body(), require_finite=True)
            if frame.kind != "vectors":
                raise ProtocolError(f"expected a frame of kind 'vectors', got {frame.kind!r}")
            names = frame.meta.get("puts", [])
            if not isinstance(names, list) or len(names) != len(frame.arrays):
                raise ProtocolError(f"meta 'puts' must name each of the {len(frame.arrays)} "
                                    f"arrays, received {names!r:.80}")
            result = shard.run(frame.meta.get("program", []), dict(zip(names, frame.arrays)))
        except (ProtocolError, VectorOpError) as e:
            return error_response(400, f"bad vector program: {e}")
        counters.add("programs")
        names = list(result.gets)
        return frame_response(encode_frame([result.gets[n] for n in names], kind="vectors",
                                           step=0, meta={"dots": result.dots, "gets": names}))

    @app.get("/v1/vec/get")
    def get() -> Response:
        try:
            values = shard.get(request.args.get("name", ""))
        except VectorOpError as e:
            return error_response(404, str(e))
        counters.add("fetches")
        return frame_response(encode_frame([values], kind="params", step=0))

    @app.get("/v1/status")
    def status() -> Response:
        return jsonify({"size": shard.size, "vectors": shard.names(), "pid": os.getpid(),
                        "programs": counters.programs, "fetches": counters.fetches})

    return app


def _map(pool: ThreadPoolExecutor | None, function, items) -> list:
    if pool is None:
        return [function(item) for item in items]
    return list(pool.map(function, items))


class RemoteVectors:
    """A ``VectorSpace`` whose shards are servers: every program goes to all shards at once."""

    def __init__(self, urls: Sequence[str], token: str, size: int, *, timeout: float = 60.0
                 ) -> None:
        self.size = size
        self.bounds = shard_bounds(size, len(urls))
        self.clients = [VectorClient(url, token, timeout=timeout) for url in urls]
        self._pool = ThreadPoolExecutor(len(urls), "sandblaster-shard") if len(urls) > 1 else None

    def run(self, program, puts=None) -> ProgramResult:
        slices = split_puts(puts, self.bounds, self.size)
        return merge_results(_map(self._pool, lambda pair: pair[0].run(program, pair[1]),
                                  list(zip(self.clients, slices))))

    def close(self) -> None:
        for client in self.clients:
            client.close()
        if self._pool is not None:
            self._pool.shutdown()


class ShardGroup:
    """``num_shards`` vector-shard servers for a vector of ``size`` values, started and stopped
    together, sharing one per-run token. A context manager, like ``HttpServer``.

    With ``processes=True`` each shard runs in its own child process (``shard_process``), so
    no single process holds the whole parameter vector or history; ``shards`` is then empty.
    """

    def __init__(self, size: int, num_shards: int = 1, *, host: str = "127.0.0.1",
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, timeout: float = 60.0,
                 processes: bool = False) -> None:
        from sparkdownpour.lbfgs.shard_process import ShardProcess

        self.size = size
        self.bounds = shard_bounds(size, num_shards)
        self.token = secrets.token_urlsafe(32)
        if processes:
            self.shards = []
            self.servers = [ShardProcess(hi - lo, host=host, token=self.token,
                                         max_request_bytes=max_request_bytes)
                            for lo, hi in self.bounds]
        else:
            self.shards = [VectorShard(hi - lo) for lo, hi in self.bounds]
            self.servers = [HttpServer(shard, host=host, token=self.token,
                                            max_request_bytes=max_request_bytes,
                                            app_factory=create_vector_app)
                            for shard in self.shards]
        self.timeout = timeout
        self._stack: ExitStack | None = None
        self.space: RemoteVectors | None = None

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def __enter__(self) -> ShardGroup:
        with serve_all(self.servers) as stack:
            self.space = RemoteVectors(self.urls, self.token, self.size, timeout=self.timeout)
            stack.callback(self.space.close)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
