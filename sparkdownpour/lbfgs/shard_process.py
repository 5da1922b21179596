"""A vector shard served from its own process, so the driver process holds none of its slices.

With ``shard_processes=True`` every Sandblaster shard is a child process (``ServerProcess``)
serving one ``VectorShard`` with the same app, token and limits as an in-process shard.
"""

from __future__ import annotations

from sparkdownpour.transport.child_process import ServerProcess


def _vector_shard(size: int):
    from sparkdownpour.lbfgs.shard_server import create_vector_app
    from sparkdownpour.lbfgs.vectors import VectorShard

    return VectorShard(size), create_vector_app


class ShardProcess(ServerProcess):
    """Context manager with the ``url`` of a vector shard running in a child process."""

    def __init__(self, size: int, *, host: str, token: str, max_request_bytes: int,
                 start_timeout: float = 60.0) -> None:
        super().__init__(_vector_shard, (size,), host=host, token=token,
                         max_request_bytes=max_request_bytes, start_timeout=start_timeout)
        self.size = size
