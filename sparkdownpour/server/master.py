"""The master model server a Downpour run gets: one store, threaded shards, or shard processes.

``serve_master`` starts it on the driver's address and yields a ``Master``: the driver's
``store`` (epochs, status, checkpoints, the final parameters), the ``server`` replicas talk to
(``url``, ``token``), the ``shard_urls`` replicas split their pushes over (empty with one
shard: the unsharded wire format) and the ``dashboard`` server whose link the run announces.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import Any, Iterator, NamedTuple, Sequence

from sparkdownpour.server.runner import ParameterServer, tls_context
from sparkdownpour.server.shards import ShardedServer, ShardedStore
from sparkdownpour.server.store import ParameterStore

__all__ = ["Master", "serve_master"]

DASHBOARD_MAX_REQUEST_BYTES = 1 << 20  # the driver's dashboard server takes no pushes


class Master(NamedTuple):
    store: Any
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
    token = token if token is not None else secrets.token_urlsafe(32)
    ssl_context = tls_context(*tls) if tls else None
    if processes:
        from sparkdownpour.server.store_process import ProcessShardedServer, status_app

        with ProcessShardedServer(params, rule, num_shards, host=host, port=port, token=token,
                                  max_request_bytes=max_request_bytes, tls=tls,
                                  store_kwargs=store_kwargs) as server, \
                ParameterServer(server.store, host=host, token=token, ssl_context=ssl_context,
                                max_request_bytes=DASHBOARD_MAX_REQUEST_BYTES,
                                app_factory=status_app) as dashboard:
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
