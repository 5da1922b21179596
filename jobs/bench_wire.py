"""Benchmark: bytes per second through the parameter server's push+fetch vs a raw loopback socket.

Both sides move the same bytes (one encoded 4 MB float32 frame up, the same size back), in the
same process, on 127.0.0.1, in the same run:

- ours, one round trip: ``push(..., return_params=True)`` (update applied, fresh params back);
- ours, two round trips: ``push`` then ``fetch``;
- baseline: ``sendall`` the frame to an echo thread that ``recv_into``s it and sends it back.

Run: ``python jobs/bench_wire.py [--floats N] [--repeats R] [--tune-malloc]``. The last line is the summary.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sparkdownpour import optimizers
from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore, encode_frame
from sparkdownpour.transport.child_process import keep_freed_buffers

logger = logging.getLogger("bench_wire")


def _recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from ``sock``; False on EOF."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            return False
        got += n
    return True


def _echo_server(listener: socket.socket, size: int) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = memoryview(bytearray(size))
        while _recv_exactly(conn, buf):
            conn.sendall(buf)


class _EchoClient:
    """The baseline: a kept-open loopback TCP connection to an echo thread."""

    def __init__(self, size: int) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._thread = threading.Thread(
            target=_echo_server, args=(self._listener, size), daemon=True
        )
        self._thread.start()
        self._sock = socket.create_connection(self._listener.getsockname(), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._back = memoryview(bytearray(size))

    def round_trip(self, payload: bytes) -> None:
        self._sock.sendall(payload)
        if not _recv_exactly(self._sock, self._back):
            raise RuntimeError("echo server closed the connection")

    def close(self) -> None:
        self._sock.close()  # the echo thread sees EOF and exits
        self._thread.join(5)
        self._listener.close()


def measure_wire(num_floats: int = 1_000_000, repeats: int = 20) -> dict[str, Any]:
    """Median round-trip seconds and bytes/s for ours (two ways) and the raw socket.

    Each of our paths is interleaved round by round with the socket echo, so a burst of load
    from anything else on the machine hits both alike instead of skewing the ratio.
    """
    if num_floats <= 0 or repeats <= 0:
        raise ValueError(f"num_floats and repeats must be positive, got {num_floats}, {repeats}")
    grads = [np.random.default_rng(0).standard_normal(num_floats, dtype=np.float32)]
    rule = optimizers.get("sgd", learning_rate=1e-3)  # the project's own rule, as replicas see it
    store = ParameterStore([np.zeros(num_floats, np.float32)], rule)
    frame = encode_frame(grads, kind="update", step=0, replica="bench")
    times: dict[str, list[float]] = {"push_return_params": [], "push_then_fetch": [], "socket_echo": []}
    echo = _EchoClient(len(frame))
    try:
        with ParameterServer(store, host="127.0.0.1") as server:
            client = ParameterClient(server.url, server.token, timeout=30.0)

            def push_return() -> None:
                client.push(grads, base_step=store.step, replica="bench", return_params=True)

            def push_then_fetch() -> None:
                client.push(grads, base_step=store.step, replica="bench")
                client.fetch()

            ours: dict[str, Callable[[], Any]] = {
                "push_return_params": push_return,
                "push_then_fetch": push_then_fetch,
            }
            # Each of our paths alternates with the socket only: alternating our two paths
            # with each other makes each free the other's multi-megabyte buffers, a churn no
            # replica (which uses one path) ever sees. Each ratio uses its own pass's socket.
            echo_times: dict[str, list[float]] = {key: [] for key in ours}
            try:
                for key, fn in ours.items():
                    pair = {key: fn, "socket_echo": lambda: echo.round_trip(frame)}
                    for i in range(repeats + 2):  # the first two rounds warm up
                        for name, step in pair.items():
                            t0 = time.perf_counter()
                            step()
                            if i >= 2:
                                (echo_times[key] if name == "socket_echo" else times[key]).append(
                                    time.perf_counter() - t0)
                times["socket_echo"] = echo_times["push_return_params"]
            finally:
                client.close()
    finally:
        echo.close()
    moved = 2 * len(frame)  # one frame each way
    result: dict[str, Any] = {"num_floats": num_floats, "frame_bytes": len(frame), "repeats": repeats}
    for key, ts in times.items():
        result[f"{key}_s"] = statistics.median(ts)
        result[f"{key}_Bps"] = moved / result[f"{key}_s"]
    # ours/socket in bytes per second
    result["ratio"] = result["socket_echo_s"] / result["push_return_params_s"]
    result["ratio_push_then_fetch"] = (statistics.median(echo_times["push_then_fetch"])
                                       / result["push_then_fetch_s"])
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floats", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--tune-malloc", action="store_true",
        help="raise glibc's trim/mmap thresholds first (see server.process.keep_freed_buffers)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tuned = keep_freed_buffers() if args.tune_malloc else False
    r = measure_wire(args.floats, args.repeats)
    mb = r["frame_bytes"] / 1e6
    print(f"{'path':<28}{'median ms':>12}{'MB/s':>10}{'vs socket':>11}")
    for label, key in [
        ("push(return_params=1)", "push_return_params"),
        ("push, then fetch", "push_then_fetch"),
        ("raw socket echo", "socket_echo"),
    ]:
        s, bps = r[f"{key}_s"], r[f"{key}_Bps"]
        print(f"{label:<28}{s * 1e3:>12.2f}{bps / 1e6:>10.0f}{bps / r['socket_echo_Bps']:>11.2f}")
    print(
        f"bench_wire: push+fetch {mb:.1f} MB median {r['push_return_params_s'] * 1e3:.2f} ms "
        f"({r['push_return_params_Bps'] / 1e6:.0f} MB/s) vs socket {r['socket_echo_s'] * 1e3:.2f} ms "
        f"({r['socket_echo_Bps'] / 1e6:.0f} MB/s): ratio {r['ratio']:.2f}"
        + (" [malloc tuned]" if tuned else "")
    )
    return r


if __name__ == "__main__":
    main()
