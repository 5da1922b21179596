"""A replica's non-trainable state (BatchNorm moving statistics): pulled and reported.

The forward passes of ``gradient()`` (``training=True``) update a BatchNorm layer's moving mean
and variance in the replica's own model; the server's update rule never sees them. So a
replica *pulls* the server's combined state when its partition starts (its moving averages
continue from everybody's, also on a fresh Python worker or after a resume), and *reports*
its own every ``REPORT_EVERY`` mini-batches and when the partition ends. The server keeps
each partition's latest report and serves their mean (``server.model_state``).

The server combines reports by their mean. The mean of K replicas' moving averages, each
over its own mini-batches, forgets the initial values only as fast as one replica's average
does: K times slower, counted in mini-batches trained, than a single process's. So each
replica's ``BatchNormalization`` layers run with momentum ``m ** K`` (K: the run's replicas,
``spec.state_replicas``) instead of ``m``: the mean of K such averages weighs every replica's
mini-batches as one moving average with momentum ``m`` over all of them, interleaved, would
(see docs/keras_models.md). Only the replicas' copies change; the driver's model keeps ``m``.

A model without such variables does nothing here and sends nothing.
"""

from __future__ import annotations

import time

from sparkdownpour.keras_model import all_layers, assign_state, state_arrays, state_variables
from sparkdownpour.server.state_client import StateClient

__all__ = ["REPORT_EVERY", "ReplicaState", "scale_batchnorm_momentum"]

REPORT_EVERY = 16  # mini-batches between two reports (and one when the partition ends)


class ReplicaState:
    """The state side of one replica's pass over ``partition`` in ``spec.epoch``.

    Each method returns the seconds it spent on the wire (the loop's ``comm_s``)."""

    def __init__(self, spec, model, partition: int, attempt: int,
                 every: int = REPORT_EVERY) -> None:
        self.model, self.epoch = model, spec.epoch
        self.partition, self.attempt, self.every = partition, attempt, every
        self.active = model is not None and bool(state_variables(model))  # None: numpy
        if self.active:
            scale_batchnorm_momentum(model, getattr(spec, "state_replicas", 1))
        url = spec.shard_urls[0] if spec.shard_urls else spec.url
        self.client = StateClient(url, spec.token, timeout=spec.request_timeout,
                                  retries=spec.request_retries, ca_data=spec.tls_ca) \
            if self.active else None
        self.since = 0
        self.reports = 0

    def pull(self) -> float:
        """Adopt the server's combined state."""
        if not self.active:
            return 0.0
        t0 = time.perf_counter()
        _, arrays = self.client.fetch_state()
        assign_state(self.model, arrays)
        return time.perf_counter() - t0

    def step(self) -> float:
        """After a mini-batch: report when ``every`` have passed since the last report."""
        if not self.active:
            return 0.0
        self.since += 1
        return self.report() if self.since >= self.every else 0.0

    def report(self) -> float:
        """Send this replica's state now (if a mini-batch ran since the last report or pull)."""
        if not self.active or self.since == 0:
            return 0.0
        t0 = time.perf_counter()
        self.client.report_state(state_arrays(self.model), epoch=self.epoch,
                                 partition=self.partition, attempt=self.attempt,
                                 replica=f"p{self.partition}-a{self.attempt}")
        self.since, self.reports = 0, self.reports + 1
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def scale_batchnorm_momentum(model, replicas: int) -> None:
    """Give this replica's BatchNorm layers momentum ``m ** replicas`` (once per built model,
    before its training step is traced: TensorFlow bakes the momentum into the trace)."""
    import keras

    if replicas <= 1 or getattr(model, "_sdp_state_replicas", None) is not None:
        return
    model._sdp_state_replicas = replicas
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(layer.momentum) ** replicas

