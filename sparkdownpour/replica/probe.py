"""The executors' half of the reachability probe: can this task dial the run's servers?

One Spark task per probe partition opens a connection to every server URL with the run's
token and asks for a route nobody serves: a 404 means the address, the port, TLS and the token
all work (a wrong token answers 401, before routing). The task never raises: it yields one row
per URL saying what happened, so the driver can fail at once with the address it tried instead
of waiting for Spark's task retries or the replicas' request timeouts.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pyarrow as pa

__all__ = ["PROBE_DDL", "PROBE_ROUTE", "probe_partition"]

PROBE_ROUTE = "/sparkdownpour-probe"
PROBE_DDL = "url string, ok boolean, error string, executor string"
_SCHEMA = pa.schema([("url", pa.string()), ("ok", pa.bool_()), ("error", pa.string()),
                     ("executor", pa.string())])


def probe_partition(batches: Iterator[pa.RecordBatch], *, urls: tuple[str, ...], token: str,
                    ca_data: str | None, timeout: float) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: one row per URL (the rows it was given are ignored)."""
    from sparkdownpour.transport.client import HttpClient

    for _ in batches:
        pass
    rows = []
    for url in urls:
        error = None
        try:
            with HttpClient(url, token, timeout=timeout, retries=0, ca_data=ca_data) as client:
                client.request("GET", PROBE_ROUTE, idempotent=True, accept=(404,))
        except Exception as e:  # noqa: BLE001 - reported to the driver, which raises
            error = f"{type(e).__name__}: {e}"
        rows.append({"url": url, "ok": error is None, "error": error,
                     "executor": socket.gethostname()})
    yield pa.RecordBatch.from_pylist(rows, schema=_SCHEMA)
