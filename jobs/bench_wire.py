"""Benchmark: bytes per second through the parameter server's push+fetch vs a raw loopback socket.

Both sides move the same bytes (one encoded 4 MB float32 frame up, the same size back), in the
same process, on 127.0.0.1, in the same run:

- ours, one round trip: ``push(..., return_params=True)`` (update applied, fresh params back);
- ours, two round trips: ``push`` then ``fetch``;
- baseline: ``sendall`` the frame to an echo thread that ``recv_into``s it and sends it back.

Run: ``python jobs/bench_wire.py [--floats N] [--repeats R]``. The last line is the summary.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import threading
import time
from typing import Any, Callable

import numpy as np

from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore, encode_frame

logger = logging.getLogger("bench_wire")


class _PlainSGD:
    """params - learning_rate * grads; local so the benchmark only depends on the server."""

    name = "sgd"

    def __init__(self, learning_rate: float = 1e-3) -> None:
        self.learning_rate = np.float32(learning_rate)

    def init(self, params: list[np.ndarray]) -> tuple:
        return ()

    def update(self, grads, state, params):
        # Subtract into the fresh ``lr * g`` temporary: one 4 MB allocation per array, not two
        # (a second live allocation of that size costs ~3 ms of page faults here).
        new = []
        for p, g in zip(params, grads):
            step = self.learning_rate * g
            new.append(np.subtract(p, step, out=step))
        return new, state


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


def _median_s(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _socket_echo_s(payload: bytes, repeats: int) -> float:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    thread = threading.Thread(target=_echo_server, args=(listener, len(payload)), daemon=True)
    thread.start()
    client = socket.create_connection(listener.getsockname(), timeout=30)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = memoryview(bytearray(len(payload)))

    def round_trip() -> None:
        client.sendall(payload)
        if not _recv_exactly(client, back):
            raise RuntimeError("echo server closed the connection")

    try:
        return _median_s(round_trip, repeats)
    finally:
        client.close()
        thread.join(5)
        listener.close()


def measure_wire(num_floats: int = 1_000_000, repeats: int = 20) -> dict[str, Any]:
    """Median round-trip seconds and bytes/s for ours (two ways) and the raw socket."""
    if num_floats <= 0 or repeats <= 0:
        raise ValueError(f"num_floats and repeats must be positive, got {num_floats}, {repeats}")
    grads = [np.random.default_rng(0).standard_normal(num_floats, dtype=np.float32)]
    store = ParameterStore([np.zeros(num_floats, np.float32)], _PlainSGD())
    frame_bytes = len(encode_frame(grads, kind="update", step=0, replica="bench"))
    with ParameterServer(store, host="127.0.0.1") as server:
        client = ParameterClient(server.url, server.token, timeout=30.0)
        try:
            def push_return() -> None:
                client.push(grads, base_step=store.step, replica="bench", return_params=True)

            def push_then_fetch() -> None:
                client.push(grads, base_step=store.step, replica="bench")
                client.fetch()

            ours_one = _median_s(push_return, repeats)
            ours_two = _median_s(push_then_fetch, repeats)
        finally:
            client.close()
    sock = _socket_echo_s(encode_frame(grads, kind="params", step=0), repeats)
    moved = 2 * frame_bytes  # one frame each way
    return {
        "num_floats": num_floats,
        "frame_bytes": frame_bytes,
        "repeats": repeats,
        "push_return_params_s": ours_one,
        "push_then_fetch_s": ours_two,
        "socket_echo_s": sock,
        "push_return_params_Bps": moved / ours_one,
        "push_then_fetch_Bps": moved / ours_two,
        "socket_echo_Bps": moved / sock,
        "ratio": sock / ours_one,  # ours/socket in bytes per second
        "ratio_push_then_fetch": sock / ours_two,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floats", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
    )
    return r


if __name__ == "__main__":
    main()
