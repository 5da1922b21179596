"""How many Downpour replicas: chosen from the task slots Spark has, not from the DataFrame's
partitioning (issue 15: any partitioning of the same data should train about as fast as the
best one).

Each replica is a Spark task per epoch with fixed costs (the task, a model fetch, the
partition's last push), so partitions beyond the task slots (a shuffle's 200, say) are merged,
without a shuffle, into one replica per slot: every epoch is then one wave of tasks. Measured
on digits, local[2], 5 warm epochs (``jobs/bench_partitioning.py``): 8 partitions as 8
replicas took 1.9x the best layout, 200 partitions validated before merging 1.8x (a validation
pass of 200 tiny tasks: 1.7 s instead of 0.24 s), and two replicas per slot (two waves) still
1.27-1.45x; one per slot brought every layout within 1.11-1.17x. The merge happens before the
validation pass where the count is free (a classic session); under Spark Connect, after it.
"""

from __future__ import annotations

__all__ = ["MAX_PARTITIONS_PER_SLOT", "merged_for_slots", "plan_replicas", "replicas_for_slots",
           "requested_replicas", "task_slots"]

# More partitions than this many per task slot are merged into fewer replicas.
MAX_PARTITIONS_PER_SLOT = 1


def replicas_for_slots(partitions: int, slots: int) -> int:
    """How many replicas train ``partitions`` cached partitions on ``slots`` task slots.

    Up to ``MAX_PARTITIONS_PER_SLOT`` per slot, every partition is a replica; beyond that,
    that many per slot, so an epoch is one wave of a few tasks instead of several waves (or
    hundreds of short tasks) each paying a task's, a fetch's and a last push's fixed cost.
    """
    return min(partitions, MAX_PARTITIONS_PER_SLOT * slots)


def task_slots(spark) -> int:
    """Tasks Spark runs at once: ``spark.default.parallelism / spark.task.cpus``."""
    from sparkdownpour.session import default_parallelism, task_cpus

    return max(default_parallelism(spark) // task_cpus(spark), 1)


def merged_for_slots(frame) -> tuple[object, int | None]:
    """``frame`` merged (``coalesce``, no shuffle) into ``replicas_for_slots`` partitions when
    its plan has far more than the task slots, and the count it had; ``(frame, None)`` when it
    needs no merge or the count would cost a job (Spark Connect). Downpour trains on it; the
    memory estimate's and Sandblaster's passes read through it (same rows, fewer tasks)."""
    from sparkdownpour.session import planned_partitions

    planned = planned_partitions(frame)
    if not planned:
        return frame, None
    chosen = replicas_for_slots(planned, task_slots(frame.sparkSession))
    return (frame.coalesce(chosen), planned) if chosen < planned else (frame, None)


def requested_replicas(frame, wanted: int):
    """``num_replicas=wanted``: ``frame`` as it is when its plan already has that many
    partitions (no shuffle; the layout the user gave is kept) or under Spark Connect (the
    count is known only after the validation pass: ``plan_replicas`` decides there), else
    repartitioned to ``wanted`` (a shuffle, rows spread evenly)."""
    from sparkdownpour.session import planned_partitions

    planned = planned_partitions(frame)
    return frame if planned in (None, wanted) else frame.repartition(wanted)


def plan_replicas(partitions: int, nonempty: int | None, rows: int, slots: int,
                  batch_size: int, wanted: int | None = None) -> tuple[str, int]:
    """After the validation pass: ``("merge", n)`` (coalesce the cached frame: more
    partitions than slots, not merged before the pass), ``("spread", n)`` (repartition before
    caching: the rows sit in fewer partitions than task slots, e.g. one file, or a skewed
    shuffle that left the others empty, so one round-robin shuffle gives every slot a replica
    when there are at least two mini-batches for each; or ``num_replicas=n`` asked for another
    count than the frame has), or ``("keep", partitions)``."""
    if wanted is not None:
        return ("keep" if partitions == wanted else "spread"), wanted
    chosen = replicas_for_slots(partitions, slots)
    if chosen < partitions:
        return "merge", chosen
    if nonempty is not None and nonempty < slots and rows >= 2 * slots * batch_size:
        return "spread", slots
    return "keep", partitions
