"""Benchmark: the sharded parameter server's push+fetch throughput vs a raw loopback socket.

A model of ``--floats`` float32 parameters (10M by default, one 40 MB frame each way) is served
by 1, 2 and 4 shards; 1, 2, 4 and 8 replicas, each a separate process (as Spark's executors
are), push an update and get the fresh parameters back (``push(return_params=True)``, one round
trip per shard, all shards at once) for ``--seconds``. Bytes moved = 2 x the model per round
trip. The baseline, in the same run: one kept-open loopback TCP connection echoing the same
bytes (``bench_wire``'s echo), measured before every shard count.

``--modes threads,processes``: shards served by threads of this process (``ShardedServer``,
Downpour's default) or each by its own process (``ProcessShardedServer``, as
``Downpour(shard_processes=True)`` serves them).

Run: ``python jobs/bench_server.py [--floats N] [--seconds S] [--modes threads,processes]``.
The last line is the summary.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import multiprocessing
import os
import sys
import time
from contextlib import ExitStack
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_wire import _EchoClient  # noqa: E402  (a sibling script)

from sparkdownpour import optimizers  # noqa: E402
from sparkdownpour.server.shards import ShardedServer, ShardedStore  # noqa: E402
from sparkdownpour.server.store_process import ProcessShardedServer  # noqa: E402
from sparkdownpour.transport.child_process import keep_freed_buffers  # noqa: E402

logger = logging.getLogger("bench_server")
TOKEN = "bench-token"
_GRADS: dict[int, list[np.ndarray]] = {}  # per replica process: the update it pushes


def _replica(urls: list[str], shapes: list, start_at: float, seconds: float) -> float:
    """One replica process: push+fetch round trips until the deadline; returns its rate
    (round trips per second, over the time until its last one finished, so a trip cut off by
    the deadline neither counts nor dilutes)."""
    from sparkdownpour.server.sharded_client import ShardedClient

    key = sum(int(np.prod(s)) for s in shapes)
    if key not in _GRADS:
        rng = np.random.default_rng(os.getpid())
        _GRADS.clear()
        _GRADS[key] = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = _GRADS[key]
    done = 0
    with ShardedClient(urls, TOKEN, shapes, timeout=120) as client:
        steps, _ = client.fetch()
        time.sleep(max(0.0, start_at - time.time()))
        deadline, finished = start_at + seconds, time.time()
        while time.time() < deadline:
            steps = client.push(grads, base_step=steps, replica=f"r{os.getpid()}",
                                return_params=True).step
            done, finished = done + 1, time.time()
    return done / max(finished - start_at, 1e-9)


def _warm(_: object = None) -> int:
    """Pool initializer and readiness probe: the client's imports done before any timing."""
    importlib.import_module("sparkdownpour.server.sharded_client")
    return os.getpid()


def _socket_Bps(frame_bytes: int, seconds: float) -> float:
    payload = bytes(frame_bytes)
    echo = _EchoClient(frame_bytes)
    try:
        echo.round_trip(payload)  # warm up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            echo.round_trip(payload)
            count += 1
        return 2 * frame_bytes * count / (time.perf_counter() - start)
    finally:
        echo.close()


def _servers(mode: str, shapes: list, num_shards: int, stack: ExitStack) -> list[str]:
    """Shards as Downpour serves them: threads of this process (``ShardedServer``) or, as
    with ``Downpour(shard_processes=True)``, child processes (``ProcessShardedServer``)."""
    params = [np.zeros(s, np.float32) for s in shapes]
    rule = optimizers.get("sgd", learning_rate=1e-6)
    if mode == "threads":
        store = ShardedStore(params, rule, num_shards)
        return stack.enter_context(ShardedServer(store, host="127.0.0.1", token=TOKEN)).urls
    server = ProcessShardedServer(params, rule, num_shards, host="127.0.0.1", token=TOKEN,
                                  max_request_bytes=512 * 2**20)
    return stack.enter_context(server).urls


def measure(num_floats: int, shard_counts: list[int], replica_counts: list[int],
            seconds: float, modes: list[str]) -> list[dict[str, Any]]:
    # One flat array: a one-shard process server (unflattened wire format) and the sharded
    # client's one-shard layout then agree on its shape.
    shapes = [(num_floats,)]
    model_bytes = 4 * num_floats
    rows = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(max(replica_counts), initializer=_warm) as pool:
        pool.map(_warm, range(max(replica_counts)))  # every worker started and imported
        for mode in modes:
            for shards in shard_counts:
                before = _socket_Bps(model_bytes, min(seconds, 2.0))
                with ExitStack() as stack:
                    urls = _servers(mode, shapes, shards, stack)
                    for replicas in replica_counts:
                        start_at = time.time() + 1.5  # every replica connected and waiting
                        jobs = [pool.apply_async(_replica, (urls, shapes, start_at, seconds))
                                for _ in range(replicas)]
                        rate = sum(job.get(seconds + 300) for job in jobs)
                        rows.append({"mode": mode, "shards": shards, "replicas": replicas,
                                     "updates_per_s": rate, "Bps": 2 * model_bytes * rate})
                # The socket before and after this shard count's runs, so that load from
                # anything else on the machine weighs on both sides alike.
                socket_Bps = (before + _socket_Bps(model_bytes, min(seconds, 2.0))) / 2
                for row in rows[-len(replica_counts):]:
                    row.update(socket_Bps=socket_Bps, ratio=row["Bps"] / socket_Bps)
                    logger.warning("%s", row)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floats", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--replicas", default="1,2,4,8")
    parser.add_argument("--modes", default="threads,processes")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="raise glibc's trim/mmap thresholds first (see bench_wire)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if args.tune_malloc:
        keep_freed_buffers()
    rows = measure(args.floats, [int(s) for s in args.shards.split(",")],
                   [int(r) for r in args.replicas.split(",")], args.seconds,
                   args.modes.split(","))
    print(f"{'mode':<10}{'shards':>7}{'replicas':>9}{'updates/s':>11}{'MB/s':>9}"
          f"{'socket MB/s':>13}{'ratio':>7}")
    for r in rows:
        print(f"{r['mode']:<10}{r['shards']:>7}{r['replicas']:>9}{r['updates_per_s']:>11.2f}"
              f"{r['Bps'] / 1e6:>9.0f}{r['socket_Bps'] / 1e6:>13.0f}{r['ratio']:>7.2f}")
    best = max(rows, key=lambda r: r["ratio"])
    print(f"bench_server: {args.floats / 1e6:g}M params, best {best['mode']} "
          f"{best['shards']} shard(s) x {best['replicas']} replica(s): "
          f"{best['Bps'] / 1e6:.0f} MB/s, {best['updates_per_s']:.2f} updates/s, "
          f"ratio {best['ratio']:.2f} to the raw socket's {best['socket_Bps'] / 1e6:.0f} MB/s")
    return rows


if __name__ == "__main__":
    main()
