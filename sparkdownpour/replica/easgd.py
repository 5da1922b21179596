"""``mode="easgd"``: asynchronous elastic averaging SGD (Zhang, Choromanska & LeCun, NIPS 2015).

Each replica trains its own copy ``x`` of the model with the configured rule (pure numpy, here
on the executor) and, every ``easgd_tau`` mini-batches, exchanges with the server's *center*
variable ``c``: it fetches ``c``, computes the elastic difference ``d = alpha * (x - c)``,
moves itself to ``x - d`` and pushes ``d``, which the server adds to ``c``
(``optimizers.ElasticAverage``). Replicas may wander from the center between exchanges, which
is what lets EASGD explore; the elastic force pulls them back.

Pushes carry positions like Downpour's, so an exchange is applied at most once; an attempt that
finds its mini-batches applied already skips ahead and restarts from the center.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from sparkdownpour import optimizers
from sparkdownpour.data.batches import mini_batches
from sparkdownpour.replica.loop import with_last
from sparkdownpour.replica.refusal import continue_after_refusal
from sparkdownpour.replica.spec import ReplicaSpec, new_stats
from sparkdownpour.replica.state import ReplicaState
from sparkdownpour.replica.worker import client_for, replica_for, stats_batch, task_identity
from sparkdownpour.server.ledger import Position


def run_easgd_partition(batches: Iterator[pa.RecordBatch], spec: ReplicaSpec
                        ) -> Iterator[pa.RecordBatch]:
    partition, attempt = task_identity()
    replica, build_s = replica_for(spec)
    replica_id = f"p{partition}-a{attempt}"
    config = dict(spec.local_rule or {"name": "sgd"})
    rule = optimizers.get(config.pop("name"), **config)
    alpha = np.float32(spec.easgd_alpha)
    rng = np.random.default_rng([spec.seed, spec.epoch, partition])
    stats, loss_sum, compute_s, comm_s = new_stats(), 0.0, 0.0, 0.0
    client = client_for(spec, replica)
    model_state = ReplicaState(spec, replica.model, partition, attempt)
    try:
        comm_s += model_state.pull()
        t0 = time.perf_counter()
        resume_at = client.progress(spec.epoch, partition, attempt=attempt, pid=os.getpid(),
                                    device=replica.placement.describe())
        steps, local = client.fetch(replica_id)
        comm_s += time.perf_counter() - t0
        state, begin, since = rule.init(local), resume_at, 0
        for index, ((x, y), last) in enumerate(with_last(
                mini_batches(batches, spec.model.num_features, spec.batch_size, rng))):
            last = last or bool(spec.max_steps and index + 1 >= spec.max_steps)
            if index < resume_at:
                stats["skipped"] += 1
                if last:
                    break
                continue
            t0 = time.perf_counter()
            replica.assign(local)
            loss, grads = replica.gradient(x, y)
            local, state = rule.update(grads, state, local)
            compute_s += time.perf_counter() - t0
            comm_s += model_state.step()
            stats["steps"] += 1
            stats["examples"] += len(y)
            loss_sum += loss * len(y) if np.isfinite(loss) else 0.0
            since += 1
            if since < spec.easgd_tau and not last:
                continue
            t0 = time.perf_counter()
            steps, center = client.fetch(replica_id)
            elastic = [alpha * (w - c) for w, c in zip(local, center)]
            position = Position(spec.epoch, partition, begin, index + 1, attempt)
            outcome = client.push(elastic, base_step=steps, replica=replica_id,
                                  position=position,
                                  report={"loss": float(loss) if np.isfinite(loss) else None})
            comm_s += time.perf_counter() - t0
            stats["fetches"] += 1
            if outcome.applied:
                stats["pushes"] += 1
                local = [w - d for w, d in zip(local, elastic)]
            else:
                stats["duplicates"] += 1
                if last or not continue_after_refusal(outcome, position, replica_id):
                    break
                resume_at = outcome.progress
                local, state = [np.array(c) for c in center], rule.init(center)
            begin, since = index + 1 if outcome.applied else resume_at, 0
            if last:
                break
        comm_s += model_state.report()
    finally:
        client.close()
        model_state.close()
    yield stats_batch(replica, partition=partition, attempt=attempt, loss_sum=loss_sum,
                      compute_s=compute_s, comm_s=comm_s, model_build_s=build_s, **stats)
