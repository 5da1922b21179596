"""``GET /metrics``: the server's counters in Prometheus text format (``prometheus-client``).

Every server has its own ``CollectorRegistry`` (never the process-global one), so several
servers in one driver, e.g. two trainers in a notebook, do not collide. Counters are read from
the same ``status()`` dict that ``GET /v1/status`` serves, at scrape time, so the two always
agree; only the request latencies are measured here, around the fetch and push routes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["downpour_families", "install_metrics", "STALENESS_BOUNDS"]

PREFIX = "sparkdownpour"
# Cumulative staleness buckets built from the store's per-value histogram.
STALENESS_BOUNDS = (0, 1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _Families:
    """prometheus-client's custom-collector protocol: ``collect()`` yields metric families."""

    def __init__(self, build: Callable[[], Iterable[Metric]]) -> None:
        self._build = build

    def collect(self) -> Iterable[Metric]:
        return list(self._build())


def install_metrics(app: Flask, families: Callable[[], Iterable[Metric]],
                    timed: dict[str, str] | None = None) -> CollectorRegistry:
    """Add ``GET /metrics`` to ``app`` (behind its token check) and return the registry.

    ``families()`` yields the metric families at scrape time; ``timed`` maps endpoint names to
    an ``op`` label whose request latency is recorded (e.g. ``{"params": "fetch"}``).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    timed = dict(timed or {})
    latency = Histogram(f"{PREFIX}_request_seconds", "Server time per request, by operation",
                        ["op"], registry=registry, buckets=LATENCY_BUCKETS)
    for op in timed.values():
        latency.labels(op=op)  # present (at zero) before the first request

    @app.before_request
    def _start_clock() -> None:
        g.sdp_started = time.perf_counter()

    @app.after_request
    def _stop_clock(response: Response) -> Response:
        op = timed.get(request.endpoint or "")
        started = g.get("sdp_started")
        if op is not None and started is not None and response.status_code < 400:
            latency.labels(op=op).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        resp = Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    return registry


def _counter(name: str, doc: str, value: float, labels: dict | None = None,
             family: CounterMetricFamily | None = None) -> CounterMetricFamily:
    family = family or CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _staleness(histogram: dict[str, int], mean: float, name: str,
               labels: dict | None = None, family: HistogramMetricFamily | None = None
               ) -> HistogramMetricFamily:
    """The store's ``{"0": n, ..., "64": n, ">64": n}`` as cumulative Prometheus buckets."""
    counts = {}
    for key, n in histogram.items():
        counts[10**9 if key.startswith(">") else int(key)] = n
    buckets = [(str(b), sum(n for v, n in counts.items() if v <= b)) for b in STALENESS_BOUNDS]
    buckets.append(("+Inf", sum(counts.values())))
    family = family or HistogramMetricFamily(
        f"{PREFIX}_{name}", "Staleness of applied updates (updates landed since the replica's "
        "fetch)", labels=list(labels or {}))
    # The histogram's own count: a sharded store's holds every shard's updates, more than
    # its ``updates_applied`` (one per push), and its mean is over all of them.
    family.add_metric(list((labels or {}).values()), buckets,
                      sum_value=mean * sum(counts.values()))
    return family


def downpour_families(status: Callable[[], dict[str, Any]]) -> Callable[[], Iterable[Metric]]:
    """Metric families from a Downpour store's ``status()`` (sharded stores included)."""

    def build() -> Iterable[Metric]:
        s = status()
        stale = s.get("staleness", {})
        yield _counter("updates_applied", "Updates applied by the server", s["updates_applied"])
        yield _counter("updates_rejected", "Updates rejected as malformed or invalid",
                       s.get("updates_rejected", 0))
        refused = None
        for reason, n in sorted(s.get("refused", {}).items()):
            refused = _counter("updates_refused", "Well-formed updates refused (exactly-once "
                               "or staleness rules), by reason", n, {"reason": reason}, refused)
        if refused is not None:
            yield refused
        yield _staleness(stale.get("histogram", {}), float(stale.get("mean", 0.0)), "staleness")
        yield _gauge("staleness_max", "Largest staleness applied so far", stale.get("max", 0))
        yield _counter("received_bytes", "Request body bytes received (pushes)", s["bytes_in"])
        yield _counter("sent_bytes", "Response body bytes sent (parameter fetches)",
                       s["bytes_out"])
        yield _gauge("step", "Server step (updates applied, summed over shards)", s["step"])
        yield _gauge("epoch", "The epoch the server accepts pushes for", s.get("epoch") or 0)
        yield _counter("nonfinite_skipped", "Mini-batches replicas skipped for a non-finite "
                       "loss or gradient", s.get("nonfinite_skipped", 0))
        yield _gauge("diverging_replicas", "Replicas whose loss looks divergent",
                     len(s.get("diverging", {})))
        per_replica = None
        for replica, n in sorted(s.get("replicas", {}).items()):
            per_replica = _counter("replica_updates", "Updates applied, by replica", n,
                                   {"replica": replica}, per_replica)
        if per_replica is not None:
            yield per_replica
        devices = s.get("devices") or {}  # replica -> device, where the status has it
        if devices:
            info = GaugeMetricFamily(f"{PREFIX}_replica_device", "The device each replica "
                                     "attempt ran on (value 1)", labels=["replica", "device"])
            for replica, device in sorted(devices.items()):
                info.add_metric([replica, str(device)], 1)
            yield info
        yield from _shard_families(s.get("shards") or [])

    return build


def _shard_families(shards: list[dict]) -> Iterable[Metric]:
    """Per-shard load, when the store is split into shards (a ``shards`` list in status)."""
    if not shards:
        return
    applied = CounterMetricFamily(f"{PREFIX}_shard_updates_applied", "Updates applied, by "
                                  "shard", labels=["shard"])
    received = CounterMetricFamily(f"{PREFIX}_shard_received_bytes", "Bytes received, by shard",
                                   labels=["shard"])
    sent = CounterMetricFamily(f"{PREFIX}_shard_sent_bytes", "Bytes sent, by shard",
                               labels=["shard"])
    stale = None
    for i, shard in enumerate(shards):
        applied.add_metric([str(i)], shard.get("updates_applied", 0))
        received.add_metric([str(i)], shard.get("bytes_in", 0))
        sent.add_metric([str(i)], shard.get("bytes_out", 0))
        st = shard.get("staleness", {})
        stale = _staleness(st.get("histogram", {}), float(st.get("mean", 0.0)),
                           "shard_staleness", {"shard": str(i)}, stale)
    yield from (applied, received, sent, stale)


def iteration_families(view: Any) -> Callable[[], Iterable[Metric]]:
    """Metric families for Sandblaster's dashboard server (``dashboard.IterationView``)."""

    def build() -> Iterable[Metric]:
        last = view.last()
        yield _counter("lbfgs_iterations", "L-BFGS iterations done", view.iterations())
        yield _counter("lbfgs_evaluations", "Objective evaluations (Spark stages) run",
                       last.get("evaluations", 0))
        if last:
            yield _gauge("lbfgs_objective", "Objective after the last iteration",
                         last["objective"])
            yield _gauge("lbfgs_grad_norm", "Gradient norm after the last iteration",
                         last["grad_norm"])

    return build
