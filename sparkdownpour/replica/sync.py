"""``mode="sync"``: synchronous SGD, one Spark barrier task per replica (the baseline Downpour is
compared with).

Every round all replicas fetch the same parameters, compute one mini-batch gradient each and
push it; the server applies the row-weighted mean once the round's last push arrives
(``server.sync``) and only then answers the round's pushes, so the next round's fetch sees that
update. The barrier stage is what makes this safe: all replicas run at once (a round never
waits for a task Spark has not scheduled), and ``allGather`` first agrees on how many replicas
have a batch for each round. (A ``BarrierTaskContext.barrier()`` per round did the same job at
0.28 s or more per round on this project's loaded 2-core machine, an RPC through the driver;
the server's answer is the cheaper barrier.) A replica that has run out of mini-batches is done.

A retried barrier stage (Spark retries all its tasks together) asks the server how many rounds
of the epoch it applied and skips them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from sparkdownpour.data.batches import mini_batches
from sparkdownpour.errors import ParameterServerError
from sparkdownpour.replica.spec import ReplicaSpec, new_stats
from sparkdownpour.replica.state import ReplicaState
from sparkdownpour.replica.worker import client_for, replica_for, stats_batch


def run_sync_partition(batches: Iterator[pa.RecordBatch], spec: ReplicaSpec
                       ) -> Iterator[pa.RecordBatch]:
    from pyspark import BarrierTaskContext

    context = BarrierTaskContext.get()
    partition, attempt = context.partitionId(), context.attemptNumber()
    replica, build_s = replica_for(spec)
    replica_id = f"p{partition}-a{attempt}"
    rng = np.random.default_rng([spec.seed, spec.epoch, partition])
    data = list(mini_batches(batches, spec.model.num_features, spec.batch_size, rng))
    if spec.max_steps:
        data = data[:spec.max_steps]
    counts = [int(c) for c in context.allGather(str(len(data)))]
    stats, loss_sum, compute_s, comm_s = new_stats(), 0.0, 0.0, 0.0
    client = client_for(spec, replica)
    state = ReplicaState(spec, replica.model, partition, attempt)
    try:
        comm_s += state.pull()
        t0 = time.perf_counter()
        sync = client.status()[0]["sync"]
        done = sync["rounds"] if sync["epoch"] == spec.epoch else 0
        comm_s += time.perf_counter() - t0
        for k in range(max(counts)):
            if k >= len(data):
                break
            if k < done:
                stats["skipped"] += 1
                continue
            t0 = time.perf_counter()
            steps, params = client.fetch(replica_id)
            replica.assign(params)
            stats["fetches"] += 1
            comm_s += time.perf_counter() - t0
            x, y = data[k]
            t0 = time.perf_counter()
            loss, grads = replica.gradient(x, y)
            compute_s += time.perf_counter() - t0
            comm_s += state.step()
            t0 = time.perf_counter()
            outcome = client.push(grads, base_step=steps, replica=replica_id,
                                  sync={"sync_epoch": spec.epoch, "sync_round": k,
                                        "sync_size": sum(c > k for c in counts),
                                        "sync_rows": len(y)})
            comm_s += time.perf_counter() - t0
            if outcome.applied:
                stats["pushes"] += 1
            elif outcome.refusal == "duplicate":
                stats["duplicates"] += 1
            else:
                raise ParameterServerError(f"replica {replica_id}: synchronous push of round {k} "
                                           f"refused ({outcome.refusal}); the server has "
                                           f"applied {outcome.progress} rounds")
            stats["steps"] += 1
            stats["examples"] += len(y)
            loss_sum += loss * len(y)
        comm_s += state.report()
    finally:
        client.close()
        state.close()
    yield stats_batch(replica, partition=partition, attempt=attempt, loss_sum=loss_sum,
                      compute_s=compute_s, comm_s=comm_s, model_build_s=build_s, **stats)
