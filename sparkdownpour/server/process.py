"""A server whose store lives in its own child process, so its updates use another core.

Python threads share one interpreter lock: N shards served by threads of one process apply
their updates one at a time. A ``ServerProcess`` runs ``factory(*args) -> (store,
app_factory)`` in a child started with multiprocessing ``spawn`` (never a fork of a driver that
runs a JVM gateway and threads) and serves it with the same ``ParameterServer`` (token, size
limit, keep-alive). The parent learns the port through a pipe and stops the child by closing it.
``factory`` and ``args`` travel to the child by pickle over that local pipe, never the network.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable

__all__ = ["ServerProcess"]


def _serve(factory: Callable, args: tuple, host: str, token: str, max_request_bytes: int,
           conn) -> None:
    from sparkdownpour.server.runner import ParameterServer

    store, app_factory = factory(*args)
    with ParameterServer(store, host=host, token=token, max_request_bytes=max_request_bytes,
                         app_factory=app_factory) as server:
        conn.send(server.port)
        try:
            conn.recv()  # blocks until the parent sends "stop" or goes away (EOFError)
        except (EOFError, OSError):
            pass


class ServerProcess:
    """Context manager with the ``url`` of a server running in a child process."""

    def __init__(self, factory: Callable[..., tuple[Any, Callable]], args: tuple = (), *,
                 host: str, token: str, max_request_bytes: int, start_timeout: float = 60.0
                 ) -> None:
        self.factory, self.args = factory, args
        self.host, self.token = host, token
        self.max_request_bytes, self.start_timeout = max_request_bytes, start_timeout
        self.process = None
        self._conn = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> "ServerProcess":
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(self.factory, self.args, self.host, self.token,
                                 self.max_request_bytes, child),
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
