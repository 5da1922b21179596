"""Moving a cached frame's partitions, each whole and in order, into the tasks of a barrier stage.

Both resident modes (Downpour's ``resident=True``, Sandblaster's resident evaluators) run one
long barrier stage over cached data. Spark refuses a barrier stage whose RDD chain changes the
number of partitions (``BarrierJobUnsupportedRDDChainException``), and a cached frame's lineage
holds whatever the user's frame was made with (a ``coalesce``, a ``union``); worse, Spark 4.x's
scheduler then fails cancelling the refused job and stops the SparkContext. A shuffle ends the
chain, so the stage reads its rows from one: each cached partition goes whole to one task
(``partition % tasks``), and since a shuffle keeps the order of the rows from each map task, a
partition's rows reach its task in their cached order (exactly-once positions and summation
order depend on it). The ``PARTITION_ID`` column tells a task which partition a row came from.

The shuffle costs a pass over the data (0.65 s of a 2.8 s Sandblaster fit of 200k x 100 rows,
measured), so in a classic session it is skipped when the frame's partitions are the tasks
already and its lineage passes Spark's check (``barrier_safe``, read through the JVM gateway).
A Spark Connect client cannot see the lineage, so there the rows are always shuffled.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from sparkdownpour.data.columns import PARTITION_ID, with_partition_id

__all__ = ["barrier_safe", "murmur3_int", "partitions_to_tasks", "task_keys"]


def murmur3_int(value: int, seed: int = 42) -> int:
    """Spark's ``hash()`` of an int column (Murmur3 x86 32-bit, ``Murmur3_x86_32.hashInt``),
    the hash that ``repartition(n, column)`` partitions by."""
    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    k1 = rotl((value * 0xCC9E2D51) & 0xFFFFFFFF, 15) * 0x1B873593 & 0xFFFFFFFF
    h1 = (rotl(seed ^ k1, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    h1 ^= 4
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & 0xFFFFFFFF
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & 0xFFFFFFFF
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 >= 1 << 31 else h1


def task_keys(tasks: int) -> list[int]:
    """For each of ``tasks`` shuffle partitions, the smallest int key hashed to it."""
    keys: dict[int, int] = {}
    candidate = 0
    while len(keys) < tasks:
        keys.setdefault(murmur3_int(candidate) % tasks, candidate)  # Python's % is pmod
        candidate += 1
    return [keys[t] for t in range(tasks)]


def barrier_safe(frame) -> bool:
    """Whether Spark would start a barrier stage right on ``frame``'s partitions: every RDD of
    its lineage up to the last shuffle has the frame's number of partitions (Spark's
    ``checkBarrierStageWithRDDChainPattern``). False where that cannot be seen (Connect)."""
    jdf = getattr(frame, "_jdf", None)
    if jdf is None:
        return False
    try:
        rdd = jdf.queryExecution().toRdd()
        partitions = rdd.getNumPartitions()
        stack, seen = [rdd], set()
        while stack:
            current = stack.pop()
            if current.id() in seen:
                continue
            seen.add(current.id())
            if current.getNumPartitions() != partitions:
                return False
            dependencies = current.dependencies().iterator()
            while dependencies.hasNext():
                dependency = dependencies.next()
                if dependency.getClass().getSimpleName() != "ShuffleDependency":
                    stack.append(dependency.rdd())  # a narrow one: the same stage
        return True
    except Exception:  # noqa: BLE001 - any gateway surprise: shuffle, which is always safe
        return False


def partitions_to_tasks(frame, tasks: int, partitions: int):
    """``frame`` (of ``partitions`` partitions) with its partition ids (``PARTITION_ID``), in
    ``tasks`` partitions: partition ``p`` whole, in order, in task ``p % tasks``. Shuffled
    unless it can stay as it is (``barrier_safe``)."""
    if tasks == partitions and barrier_safe(frame):
        return with_partition_id(frame)
    # Hash partitioning of an int key k sends it to pmod(murmur3(k), tasks): pick, for each
    # task, a key that lands on it.
    keys = F.array(*[F.lit(k) for k in task_keys(tasks)])
    task = F.element_at(keys, (F.col(PARTITION_ID) % tasks + 1).cast("int"))
    return with_partition_id(frame).repartition(tasks, task.cast("int"))
