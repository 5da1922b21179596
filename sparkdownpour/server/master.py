"""The master model server a Downpour run gets: one store, threaded shards, or shard processes.

``serve_master`` starts it on the driver's address and yields a ``Master``: the driver's
``store`` (epochs, status, checkpoints, the final parameters), the ``server`` replicas talk to
(``url``, ``token``), the ``shard_urls`` replicas split their pushes over (empty with one
shard: the unsharded wire format) and the ``dashboard`` server whose link the run announces.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from sparkdownpour.server.app import ParameterServer
from sparkdownpour.transport.http_server import HttpServer, tls_context
from sparkdownpour.server.shards import ShardedServer, ShardedStore
from sparkdownpour.server.store_protocol import Store
from sparkdownpour.server.store import ParameterStore

__all__ = ["Master", "serve_master"]

logger = logging.getLogger(__name__)

DASHBOARD_MAX_REQUEST_BYTES = 1 << 20  # the driver's dashboard server takes no pushes


class Master(NamedTuple):
    store: Store
    server: Any
    shard_urls: tuple[str, ...]
    dashboard: Any


@contextlib.contextmanager
def serve_master(params: Sequence[Any], rule: Any, *, num_shards: int, processes: bool,
                 store_kwargs: dict, host: str, port: int, token: str | None,
                 max_request_bytes: int, tls: tuple[str, str] | None) -> Iterator[Master]:
    """Serve ``params`` with ``rule`` until the block ends; every server stops on the way out.

    ``processes``: each shard (the one store too, with ``num_shards=1``) runs in a spawned
    child (``store_process``); the dashboard is then a small read-only server on the driver.
    """
    _warn_if_shards_are_big(params, num_shards)
    token = token if token is not None else secrets.token_urlsafe(32)
    ssl_context = tls_context(*tls) if tls else None
    if processes:
        from sparkdownpour.observe.routes import create_status_app
        from sparkdownpour.server.store_process import ProcessShardedServer

        with ProcessShardedServer(params, rule, num_shards, host=host, port=port, token=token,
                                  max_request_bytes=max_request_bytes, tls=tls,
                                  store_kwargs=store_kwargs) as server, \
                HttpServer(server.store, host=host, token=token, ssl_context=ssl_context,
                           max_request_bytes=DASHBOARD_MAX_REQUEST_BYTES,
                           app_factory=create_status_app) as dashboard:
            yield Master(server.store, server,
                         tuple(server.urls) if num_shards > 1 else (), dashboard)
        return
    if num_shards == 1:
        store = ParameterStore(params, rule, **store_kwargs)
        serve = ParameterServer
    else:
        store = ShardedStore(params, rule, num_shards, **store_kwargs)
        serve = ShardedServer
    with serve(store, host=host, port=port, token=token, ssl_context=ssl_context,
               max_request_bytes=max_request_bytes) as server:
        yield Master(store, server, tuple(getattr(server, "urls", ())), server)


# glibc maps every allocation above 32 MiB afresh (its largest mmap threshold), so a frame
# that big is page-faulted in on every request, on the server and in the replicas: measured
# here, one 28 MB shard moved 0.61 of a raw socket's bytes/s, one 40 MB shard 0.29.
BIG_SHARD_BYTES = 32 * 2**20


def _warn_if_shards_are_big(params, num_shards: int) -> None:
    total = 4 * sum(int(np.size(p)) for p in params)
    if total / num_shards > BIG_SHARD_BYTES:
        better = -(-total // (28 * 2**20))
        logger.warning("each parameter shard holds %.0f MB; frames above 32 MB are mapped "
                       "afresh by the C allocator on every request, which roughly halves the "
                       "server's throughput: num_shards=%d keeps each under 28 MB",
                       total / num_shards / 2**20, better)
