"""A replica's work at a lower CPU priority than the parameter server's, on shared cores.

Every replica waits on the server (an overlapped push is collected before the next one), so
where the replicas and the server share a machine's cores (a ``local`` or ``local-cluster``
master, a notebook) the server should run the moment a request arrives, and a replica's
matrix products should wait. Measured on the 1M-row run (2 replicas, 2 cores, see the
benchmarks page): the replicas' compute share was 0.80-0.83 over six fits with ``nice`` 5 on
the replicas, against 0.76-0.81 at the server's priority in the same run, because the round
trips' slow tail, which left a replica waiting 5-15% of its task, shrank.

Linux sets ``nice`` per thread, and an unprivileged thread cannot take it back. So the work
runs on a thread of its own that ends with it: the Python worker, reused by Spark for later
tasks, keeps its priority. Threads the work starts (the push courier; TensorFlow's pools, if
their first use is here) inherit the lower priority. Elsewhere than Linux nothing changes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["LOCAL_NICE", "at_spec_nice", "run_at_nice", "thread_nice"]

LOCAL_NICE = 5  # replica_nice=None where the executors share the driver's machine

T = TypeVar("T")


def thread_nice() -> int:
    """The calling thread's nice value (Linux; elsewhere the process's)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id() if _per_thread() else 0)


def _per_thread() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")


def run_at_nice(work: Callable[[], T], nice: int) -> T:
    """``work()``, on a thread ``nice`` steps below the caller's priority when ``nice > 0`` (on
    Linux); the caller waits for it, and its result or exception comes back as if called here."""
    if nice <= 0 or not _per_thread():
        return work()
    outcome: dict[str, object] = {}

    def body() -> None:
        try:
            # who = this thread's id: Linux applies it to the thread alone
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           min(19, thread_nice() + nice))
        except OSError:  # a sandbox that forbids it: run at the same priority
            pass
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=body, name="sparkdownpour-replica", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def at_spec_nice(function, batches, spec):
    """``mapInArrow``'s ``function(batches, spec)`` (any mode's partition function), its
    statistics rows computed at ``spec.nice``."""
    return iter(run_at_nice(lambda: list(function(batches, spec)), spec.nice))
