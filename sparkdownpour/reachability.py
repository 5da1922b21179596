"""Before training: can the executors reach the servers this process started?

Under Spark Connect the driver-side Python (and so the master model server) runs in the
client's process, which may sit on a laptop or a notebook host the executors cannot dial.
Executors that cannot reach the parameter server and hang until their timeouts are the failure
users of parameter-server libraries report most; here ``fit`` fails within seconds instead,
naming the address it tried and the knob to set.

A classic session on a local master (``local[...]``, ``local-cluster[...]``) needs no probe:
its executors run on this machine, which reaches every address it can bind (and
``check_bindable`` has bound it). Skipping it there saves a Spark job per fit (0.07-0.13 s warm
on the digits benchmark, several seconds cold while Python workers start).
"""

from __future__ import annotations

import functools
import logging
import socket
import time

from sparkdownpour.replica.priority import LOCAL_NICE
from sparkdownpour.replica.probe import PROBE_DDL, probe_partition
from sparkdownpour.session import LOOPBACK, connect_endpoint, is_connect, master_of

__all__ = ["check_bindable", "check_reachable", "executors_on_this_machine", "replica_nice"]

logger = logging.getLogger(__name__)

MAX_PROBE_TASKS = 64


def check_bindable(host: str, what: str = "server_host") -> None:
    """Refuse, before any server starts, an address that is not one of this machine's."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError as e:
        raise RuntimeError(
            f"cannot serve on {host!r} ({what}): {e.strerror or e}. The servers run in this "
            f"process and must listen on one of this machine's addresses that Spark's executors "
            f"can reach; set {what} to such an address (docs/connect.md)") from e


def executors_on_this_machine(spark) -> bool:
    """A classic session on a local master: Spark's executors run in (``local``) or beside
    (``local-cluster``) this process. Under Spark Connect the master names the server's
    machine, which need not be this one."""
    return not is_connect(spark) and master_of(spark).startswith("local")


def replica_nice(spark, configured: int | None) -> int:
    """How far replicas lower their threads' priority (``DownpourConfig.replica_nice``):
    the configured value, else ``LOCAL_NICE`` where the executors share this machine: a local
    master, classic or behind a Connect server on this machine (``remote("local[*]")``)."""
    if configured is not None:
        return configured
    beside = executors_on_this_machine(spark) or is_connect(spark) and \
        connect_endpoint(spark)[0] in LOOPBACK and master_of(spark).startswith("local")
    return LOCAL_NICE if beside else 0


def check_reachable(spark, urls, token: str, *, tasks: int, timeout: float,
                    ca_data: str | None = None, host: str, what: str = "server_host"
                    ) -> float | None:
    """Run ``tasks`` tiny Spark tasks (spread over the executors) that each dial every URL
    with ``token``; raise RuntimeError naming the address if any cannot. Returns seconds, or
    None without a probe where the executors run on this machine."""
    from sparkdownpour.spark_jobs import job_group

    if executors_on_this_machine(spark):
        return None
    started = time.perf_counter()
    urls = tuple(urls)
    tasks = max(1, min(int(tasks), MAX_PROBE_TASKS))
    function = functools.partial(probe_partition, urls=urls, token=token, ca_data=ca_data,
                                 timeout=float(timeout))
    with job_group(spark, f"sparkdownpour: probe {', '.join(urls)} from {tasks} task(s)"):
        rows = spark.range(tasks, numPartitions=tasks).mapInArrow(function, PROBE_DDL).collect()
    failed = [row for row in rows if not row.ok]
    seconds = time.perf_counter() - started
    if failed:
        first = failed[0]
        hosts = sorted({row.executor for row in failed})
        raise RuntimeError(
            f"Spark's executors cannot reach the server at {first.url} ({what}={host!r}): "
            f"{len(failed)} of {len(rows)} probes failed (executor hosts: "
            f"{', '.join(hosts[:5])}{' ...' if len(hosts) > 5 else ''}); first error: "
            f"{first.error}. Set {what} to an address of this machine that the executors can "
            "reach (and open the port, or fix server_port), or run this client inside the "
            "cluster's network (docs/connect.md)")
    logger.info("%d probe task(s) reached %s in %.2f s", len(rows), ", ".join(urls), seconds)
    return seconds
