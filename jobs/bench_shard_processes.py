"""Does ``shard_processes=True`` pay? Downpour epochs with threaded vs process shards.

The same Downpour run (generated data, ``--rows`` x ``--features``, a ``--features`` ->
``--hidden`` -> 10 MLP, 2.1M parameters by default, so the server has real work: every push is
an Adagrad update of the whole vector and every answer a copy of it) is timed with its shards served
by threads of
the driver (the default, the baseline) and by child processes, for each ``--shards`` count, in
one process run. Each configuration runs ``--epochs`` epochs after a warm-up fit (the Python
workers already started); the figure is the mean wall time of the epochs after the first
(warm: the server's first frames and the replicas' model builds are in epoch 1).

Run: ``python jobs/bench_shard_processes.py [--rows N] [--hidden H] [--shards 1,2,4]``.
The last line is the summary (processes' epoch time as a ratio to threads').
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np


def build(features: int, hidden: int):
    from sparkdownpour.examples import build_mlp

    return build_mlp(features, hidden, 10, seed=0)


def epoch_seconds(frame, features, hidden, epochs, batch_size, **knobs) -> tuple[float, dict]:
    from sparkdownpour import Downpour

    result = Downpour(lambda: build(features, hidden), epochs=epochs, batch_size=batch_size,
                      verbose=0, **knobs).fit(frame)
    warm = [r["wall_time_s"] for r in result.history.epochs[1:]] or \
        [result.history.final["wall_time_s"]]
    return statistics.mean(warm), result.history.final


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--shards", default="1,2,4")
    args = parser.parse_args(argv)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from sparkdownpour.examples import arrays_to_frame
    from sparkdownpour.session import get_or_create_session

    spark = get_or_create_session("sparkdownpour-bench-shard-processes")
    spark.sparkContext.setLogLevel("ERROR")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.features)).astype(np.float32)
    y = np.argmax(x[:, :10], axis=1).astype(np.int64)
    frame = arrays_to_frame(spark, x, y, args.replicas).cache()
    frame.count()
    params = build(args.features, args.hidden).count_params()
    epoch_seconds(frame, args.features, args.hidden, 1, args.batch_size)  # warm-up
    rows = []
    for shards in [int(s) for s in args.shards.split(",")]:
        for processes in (False, True):
            seconds, last = epoch_seconds(frame, args.features, args.hidden, args.epochs,
                                          args.batch_size, num_shards=shards,
                                          shard_processes=processes)
            rows.append((shards, processes, seconds, last))
            print(f"{shards} shard(s), {'processes' if processes else 'threads'}: "
                  f"{seconds:.2f} s/epoch (warm), {last['updates']} updates, comm "
                  f"{last['comm_s']:.1f} s, compute {last['compute_s']:.1f} s", flush=True)

    print(f"\n{'shards':>7}{'threads s/epoch':>17}{'processes s/epoch':>19}{'ratio':>7}")
    ratios = []
    for shards in sorted({r[0] for r in rows}):
        threads = next(r[2] for r in rows if r[0] == shards and not r[1])
        procs = next(r[2] for r in rows if r[0] == shards and r[1])
        ratios.append((procs / threads, shards))
        print(f"{shards:>7}{threads:>17.2f}{procs:>19.2f}{procs / threads:>7.2f}")
    best = min(ratios)
    print(f"bench_shard_processes: {params / 1e6:.2f}M params, {args.replicas} replicas, "
          f"{os.cpu_count()} cores: process shards' warm epoch time / threaded shards' = "
          + ", ".join(f"{r:.2f} ({s} shards)" for r, s in ratios)
          + f"; best {best[0]:.2f} at {best[1]} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
