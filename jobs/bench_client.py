"""Benchmark: a replica's cost per push of a small model, our HTTP client vs ``http.client``.

One parameter server (one shard, threads, in this process) holds a 100-64-4 MLP (6,788
parameters, the 1M-row benchmark's model). A child process (as a replica is) pushes an update
and gets the fresh parameters back (``return_params``) in a loop, alternating ``--rounds``
times between the project's client (``ParameterClient``: ``transport.http_wire``) and the
baseline, the standard library's ``http.client.HTTPConnection`` sending the same frame with
the same headers and decoding the same answer. Each round runs ``--seconds``; reported per
push: the round trip and the child's CPU time (what a push takes from a replica's core).

Run: ``python jobs/bench_client.py [--rounds 3] [--seconds 2]``. The last line is the summary.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import statistics
import time
from urllib.parse import urlsplit

import numpy as np

SHAPES = [(100, 64), (64,), (64, 4), (4,)]
TOKEN = "bench-token"


def _ours(url: str):
    from sparkdownpour.server.client import ParameterClient

    client = ParameterClient(url, TOKEN, timeout=30)
    grads = [np.full(s, 1e-6, np.float32) for s in SHAPES]

    def push(step: int) -> int:
        return client.push(grads, base_step=step, replica="r", return_params=True).step
    return push, client.close


def _stdlib(url: str):
    from sparkdownpour.transport.frames import FRAME_CONTENT_TYPE, decode_frame, encode_frame_parts

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    grads = [np.full(s, 1e-6, np.float32) for s in SHAPES]
    headers = {"Authorization": f"Bearer {TOKEN}", "Connection": "keep-alive",
               "Content-Type": FRAME_CONTENT_TYPE}

    def push(step: int) -> int:
        body = b"".join(encode_frame_parts(grads, kind="update", step=step, replica="r"))
        conn.request("POST", "/v1/update?return_params=1", body=body, headers=headers)
        resp = conn.getresponse()
        data = bytearray(resp.length)
        resp.readinto(data)
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {bytes(data[:200])!r}")
        frame = decode_frame(data)
        return int(resp.getheader("X-Sdp-Step", frame.step))
    return push, conn.close


def _replica(url: str, rounds: int, seconds: float) -> dict[str, list[tuple[float, float]]]:
    """The child: alternate the two clients; per round (seconds per push, CPU per push)."""
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "http.client": []}
    clients = {"ours": _ours(url), "http.client": _stdlib(url)}
    step = 0
    for push, _ in clients.values():  # warm up both
        for _ in range(200):
            step = push(step)
    for _ in range(rounds):
        for name, (push, _) in clients.items():
            count, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - wall0 < seconds:
                step = push(step)
                count += 1
            results[name].append(((time.perf_counter() - wall0) / count,
                                  (time.process_time() - cpu0) / count))
    for _, close in clients.values():
        close()
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)

    from sparkdownpour import optimizers
    from sparkdownpour.server.shards import ShardedServer, ShardedStore

    store = ShardedStore([np.zeros(s, np.float32) for s in SHAPES],
                         optimizers.get("adagrad", learning_rate=1e-3), 1)
    with ShardedServer(store, host="127.0.0.1", token=TOKEN) as server:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            results = pool.apply(_replica, (server.urls[0], args.rounds, args.seconds))
    print(f"{'client':<14}{'round trip ms':>15}{'replica CPU ms':>16}   (median of {args.rounds} "
          "rounds; each round's values)")
    medians = {}
    for name, rows in results.items():
        rtt, cpu = (statistics.median(r[i] for r in rows) * 1e3 for i in (0, 1))
        medians[name] = (rtt, cpu)
        each = ", ".join(f"{r[0] * 1e3:.3f}/{r[1] * 1e3:.3f}" for r in rows)
        print(f"{name:<14}{rtt:>15.3f}{cpu:>16.3f}   {each}")
    (rtt, cpu), (base_rtt, base_cpu) = medians["ours"], medians["http.client"]
    print(f"bench_client: a 6,788-parameter push with the fresh parameters back: round trip "
          f"{rtt:.3f} ms vs http.client {base_rtt:.3f} ms ({rtt / base_rtt:.2f}x), replica CPU "
          f"{cpu:.3f} ms vs {base_cpu:.3f} ms ({cpu / base_cpu:.2f}x)")
    return medians


if __name__ == "__main__":
    main()
