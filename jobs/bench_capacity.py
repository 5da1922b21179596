"""Downpour's capacity model: its inputs measured here, checked against the replica counts this
machine can run, and its predictions for clusters.

The model. A replica computes ``n_push`` mini-batches (``t_c`` each), then pushes and gets the
fresh parameters back in one round trip (``t_rt``); every push goes to every shard at once.

- the replicas' rate: ``X_rep(R) = min(R, C) / (n_push * t_c + t_rt)`` pushes/s, ``C`` the
  cores the replicas have (beyond them their compute queues for a core);
- a request costs the server a fixed ``t_fix`` (HTTP, routing, the frame header: what a tiny
  model's round trip costs) plus ``t_bytes`` for moving and checksumming the model's bytes
  both ways, and applying the update costs ``t_apply``; a shard moves and applies ``1 / S`` of
  them. ``S`` shard processes, each on a core of its own, take a push each in parallel:
  ``X_srv(S) = 1 / (t_fix + (t_bytes + t_apply) / S)``;
- ``S`` threaded shards share one process's GIL, which handles all ``S`` requests of a push:
  ``X_thr(S) = 1 / (S * t_fix + t_bytes + t_apply)``;
- updates/s ``X = min(X_rep, X_srv)``; a server saturates from ``R* = X_srv * (n_push * t_c +
  t_rt)`` replicas on.

Inputs, measured in this run: ``t_apply``, the store applying one push in process (no HTTP);
``t_req``, a loopback round trip of ``push(return_params=True)`` minus ``t_apply``, which is
``t_fix`` for the digits MLP (38 KB frames) and ``t_fix + t_bytes`` for the big model; ``t_c`` and
``t_rt`` from the history of a one-replica Downpour fit (``compute_s / steps``, ``comm_s /
pushes``). The check: the same fit with 2 and 4 replicas (``local[4]`` on this machine's cores),
observed pushes per second of the replicas' busy time (``updates / ((compute_s + comm_s) /
R)``) next to ``X(R, 1)``. The predictions: 8, 32 and 128 replicas (a core each) with 1, 4 and
16 shards, for the digits MLP measured here and for a 10M-parameter model whose server costs are
measured here and whose step time is ``--big-step-s`` (an assumption: say what your model takes).

Run: ``python jobs/bench_capacity.py``; the last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def server_costs(floats: int, repeats: int) -> tuple[float, float]:
    """``(t_apply, t_req)`` in seconds for a model of ``floats`` parameters (medians)."""
    from sparkdownpour import optimizers
    from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore

    grads = [np.random.default_rng(0).standard_normal(floats, dtype=np.float32) * 1e-3]
    store = ParameterStore([np.zeros(floats, np.float32)], optimizers.get("adagrad", learning_rate=0.05))
    applies = []
    for _ in range(repeats):
        started = time.perf_counter()
        store.push(grads, replica="bench", base_step=store.step)
        applies.append(time.perf_counter() - started)
    trips = []
    with ParameterServer(store, host="127.0.0.1") as server:
        client = ParameterClient(server.url, server.token, timeout=60.0)
        try:
            for i in range(repeats + 2):  # two to warm up
                started = time.perf_counter()
                client.push(grads, base_step=store.step, replica="bench", return_params=True)
                if i >= 2:
                    trips.append(time.perf_counter() - started)
        finally:
            client.close()
    t_apply = statistics.median(applies)
    return t_apply, max(statistics.median(trips) - t_apply, 1e-6)


def replica_run(spark, replicas: int, epochs: int) -> dict:
    """A warm Downpour fit of the digits MLP (the digits four times over) on ``replicas``
    partitions; the last ``epochs - 1`` epochs' sums."""
    from sparkdownpour import Downpour
    from sparkdownpour.examples import arrays_to_frame, build_digits_mlp, digits_arrays

    x, y, _, _ = digits_arrays()
    frame = arrays_to_frame(spark, np.tile(x, (4, 1)), np.tile(y, 4), replicas).cache()
    frame.count()
    history = Downpour(build_digits_mlp, epochs=epochs, verbose=0).fit(frame).history
    frame.unpersist()
    records = history.epochs[1:]  # the first epoch builds the replicas' models
    sums = {key: sum(r[key] for r in records)
            for key in ("steps", "updates", "compute_s", "comm_s", "wall_time_s")}
    return {**sums, "replicas": replicas, "t_c": sums["compute_s"] / sums["steps"],
            "t_rt": sums["comm_s"] / sums["updates"],
            "observed": sums["updates"] / ((sums["compute_s"] + sums["comm_s"]) / replicas)}


def predict(replicas: int, cores: int, cycle: float, t_fix: float, t_bytes: float,
            t_apply: float, shards: int, threads: bool = False) -> tuple[float, float, float]:
    """``(X, X_rep, X_srv)`` in pushes/s."""
    rep = min(replicas, cores) / cycle
    srv = 1.0 / (shards * t_fix + t_bytes + t_apply) if threads else \
        1.0 / (t_fix + (t_bytes + t_apply) / shards)
    return min(rep, srv), rep, srv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--big-floats", type=int, default=10_000_000)
    parser.add_argument("--big-step-s", type=float, default=0.5,
                        help="assumed compute per push of the 10M-parameter model")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from sparkdownpour.examples import build_digits_mlp

    cores = os.cpu_count() or 1
    spark = (SparkSession.builder.master("local[4]").appName("sparkdownpour-bench-capacity")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    floats = build_digits_mlp().count_params()
    t_apply, t_req = server_costs(floats, args.repeats)
    big_apply, big_req = server_costs(args.big_floats, max(args.repeats // 40, 3))
    replica_run(spark, 2, 2)  # warm-up: Python workers started, TensorFlow imported
    runs = [replica_run(spark, r, args.epochs) for r in (1, 2, 4)]
    base = runs[0]
    cycle = base["t_c"] + base["t_rt"]  # n_push = 1 (Downpour's default)
    print(f"\ninputs (digits MLP, {floats} parameters): t_apply {t_apply * 1e3:.3f} ms, "
          f"t_req {t_req * 1e3:.3f} ms, t_c {base['t_c'] * 1e3:.3f} ms, t_rt "
          f"{base['t_rt'] * 1e3:.3f} ms (one replica); {cores} cores")
    print(f"inputs ({args.big_floats} parameters): t_apply {big_apply * 1e3:.1f} ms, t_req "
          f"{big_req * 1e3:.1f} ms (t_bytes {max(big_req - t_req, 0) * 1e3:.1f} ms); assumed "
          f"step {args.big_step_s:.2f} s\n")
    print("| replicas | observed pushes/s | predicted (1 shard) | replicas' bound | server's "
          "bound | observed / predicted |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        x, rep, srv = predict(run["replicas"], cores, cycle, t_req, 0.0, t_apply, 1)
        print(f"| {run['replicas']} | {run['observed']:.0f} | {x:.0f} | {rep:.0f} | {srv:.0f} | "
              f"{run['observed'] / x:.2f} |")
    print("\n| model | shards | server pushes/s, processes (threads) | 8 replicas | 32 | 128 "
          "| saturates from |")
    print("|---|---|---|---|---|---|---|")
    big_bytes = max(big_req - t_req, 0.0)
    for label, t_a, t_b, own in (("digits MLP", t_apply, 0.0, cycle),
                                 (f"{args.big_floats / 1e6:.0f}M params", big_apply, big_bytes,
                                  args.big_step_s + big_req + big_apply)):
        for shards in (1, 4, 16):  # own: a replica's cycle, its step then one round trip
            cells = [predict(r, r, own, t_req, t_b, t_a, shards)[0] for r in (8, 32, 128)]
            srv = predict(1, 1, own, t_req, t_b, t_a, shards)[2]
            thr = predict(1, 1, own, t_req, t_b, t_a, shards, threads=True)[2]
            print(f"| {label} | {shards} | {srv:.0f} ({thr:.0f}) | "
                  + " | ".join(f"{c:.0f}" for c in cells) + f" | {srv * own:.0f} replicas |")
    worst = max(abs(r["observed"] / predict(r["replicas"], cores, cycle, t_req, 0.0, t_apply,
                                            1)[0] - 1) for r in runs)
    saturation = predict(1, 1, cycle, t_req, 0.0, t_apply, 1)[2] * cycle
    print(f"\nbench_capacity: digits MLP, 1 shard saturates from {saturation:.1f} replicas; "
          f"observed vs predicted at 1/2/4 replicas within {worst:.0%}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
