"""The master model server a Downpour run gets: one store, threaded shards, or shard processes.

``serve_master`` starts it on the driver's address and yields a ``Master``: the driver's
``store`` (epochs, status, checkpoints, the final parameters), the ``server`` replicas talk to
(``url``, ``token``), the ``shard_urls`` replicas split their pushes over (empty with one
shard: the unsharded wire format) and the ``dashboard`` server whose link the run announces.

With shard processes, a child that dies mid-run is named: ``on_shard_death`` is called (from
a watchdog thread, e.g. to cancel the run's Spark jobs) and whatever the block then raises is
raised again as a ``ParameterServerError`` naming the shard, its pid and exit code.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.server.app import ParameterServer
from sparkdownpour.server.shards import ShardedServer, ShardedStore
from sparkdownpour.server.store import ParameterStore
from sparkdownpour.server.store_protocol import Store
from sparkdownpour.transport.http_server import HttpServer, tls_context

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
                 max_request_bytes: int, tls: tuple[str, str] | None,
                 on_shard_death: Callable[[Any], None] | None = None) -> Iterator[Master]:
    """Serve ``params`` with ``rule`` until the block ends; every server stops on the way out.

    ``processes``: each shard (the one store too, with ``num_shards=1``) runs in a spawned
    child (``store_process``); the dashboard is then a small read-only server on the driver.
    ``on_shard_death(death)`` (a ``store_process.ShardDeath``) is called once if one dies.
    """
    _warn_if_shards_are_big(params, num_shards)
    token = token if token is not None else secrets.token_urlsafe(32)
    ssl_context = tls_context(*tls) if tls else None
    if processes:
        from sparkdownpour.observe.routes import create_status_app
        from sparkdownpour.server.store_process import ProcessShardedServer

        with ProcessShardedServer(params, rule, num_shards, host=host, port=port, token=token,
                                  max_request_bytes=max_request_bytes, tls=tls,
                                  store_kwargs=store_kwargs,
                                  on_death=on_shard_death) as server, \
                HttpServer(server.store, host=host, token=token, ssl_context=ssl_context,
                           max_request_bytes=DASHBOARD_MAX_REQUEST_BYTES,
                           app_factory=create_status_app) as dashboard:
            try:
                yield Master(server.store, server,
                             tuple(server.urls) if num_shards > 1 else (), dashboard)
            except Exception as e:
                # A replica or a pipe call may see the dead shard before the watchdog does.
                deaths = server.check(wait=1.0)
                if not deaths:
                    raise
                raise ParameterServerError(_death_message(deaths)) from e
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


def _death_message(deaths) -> str:
    first = deaths[0]
    others = "".join(f"; then {death}" for death in deaths[1:])
    return (f"{first} mid-run{others}. The run was stopped, its Spark jobs cancelled and the "
            f"other shards shut down. Updates applied since the last checkpoint are lost "
            f"with it: fit(resume=True) with the same checkpoint_dir continues from there "
            f"(each mini-batch applied once on every shard)."
            + (" A SIGKILL nobody sent is often the kernel's out-of-memory killer: give the "
               "driver more memory or spread the model over more shards."
               if first.exitcode == -9 else ""))


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
