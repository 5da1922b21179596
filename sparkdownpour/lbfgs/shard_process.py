"""A vector shard served from its own process, so the driver process holds none of its slices.

With ``shard_processes=True`` every Sandblaster shard is a child process (multiprocessing
``spawn``: no fork of a driver that runs a JVM gateway and threads) serving one ``VectorShard``
with the same app, token and limits as an in-process shard. The parent learns the port through
a pipe and stops the child by closing it.
"""

from __future__ import annotations

import multiprocessing


def _serve(size: int, host: str, token: str, max_request_bytes: int, conn) -> None:
    from sparkdownpour.lbfgs.shard_server import create_vector_app
    from sparkdownpour.lbfgs.vectors import VectorShard
    from sparkdownpour.server.runner import ParameterServer

    with ParameterServer(VectorShard(size), host=host, token=token,
                         max_request_bytes=max_request_bytes,
                         app_factory=create_vector_app) as server:
        conn.send(server.port)
        try:
            conn.recv()  # blocks until the parent sends "stop" or goes away (EOFError)
        except (EOFError, OSError):
            pass


class ShardProcess:
    """Context manager with the ``url`` of a shard server running in a child process."""

    def __init__(self, size: int, *, host: str, token: str, max_request_bytes: int,
                 start_timeout: float = 60.0) -> None:
        self.size, self.host, self.token = size, host, token
        self.max_request_bytes, self.start_timeout = max_request_bytes, start_timeout
        self.process = None
        self._conn = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> "ShardProcess":
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(self.size, self.host, self.token, self.max_request_bytes, child),
            name="sparkdownpour-shard", daemon=True)
        self.process.start()
        child.close()
        self._conn = parent
        if not parent.poll(self.start_timeout):
            self.__exit__()
            raise RuntimeError(f"a shard process did not start within {self.start_timeout} s")
        try:
            self.port = parent.recv()
        except EOFError:
            code = self.process.exitcode
            self.__exit__()
            raise RuntimeError(f"a shard process exited while starting (exit code {code})") \
                from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            try:
                self._conn.send("stop")
            except OSError:
                pass
            self._conn.close()
            self._conn = None
        if self.process is not None:
            self.process.join(10)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(5)
            self.process = None
