"""``DeepDist``: the DeepDist-compatible low-level API (Neumann's deepdist, done safely).

    with DeepDist(model) as dd:                 # server starts on the driver, free port
        dd.train(rdd, gradient, descent)        # gradient(model, rows) -> update, on executors
        dd.model                                # descent(model, update) -> None, on the driver

The model is any tree of numpy arrays (see ``sparkdownpour.tree``), or, as in DeepDist's own
README, a plain Python object whose state is numpy arrays held in its attributes (gensim's
Word2Vec: ``descent`` does ``model.syn0 += update["syn0"]``): executors get a copy through
Spark's closure and load the fetched arrays into it, ``gradient`` may change it in place, and
``descent`` updates the driver's object in place. Each partition fetches the model once, calls
``gradient`` on its rows and pushes the update; the server applies it at once with the user's
``descent`` on the driver's model. ``train`` takes an RDD (classic sessions) or a DataFrame
(classic or Spark Connect; its partitions run through ``mapInArrow`` and ``gradient`` gets
their rows as ``pyspark.sql.Row`` objects, as ``df.rdd`` would give). Nothing is pickled over the
wire: executors get code through Spark's closure, and arrays as binary frames.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from sparkdownpour import tree
from sparkdownpour.config import DEFAULT_MAX_REQUEST_MB
from sparkdownpour.reachability import check_reachable
from sparkdownpour.server import ParameterServer, ParameterStore
from sparkdownpour.server.client import ParameterClient
from sparkdownpour.session import default_parallelism, driver_address, get_or_create_session
from sparkdownpour.spark_jobs import describe, job_group


class _DescentRule:
    """Adapts ``descent(model, update)`` on the driver's model to the store's update-rule API."""

    name = "descent"

    def __init__(self, model, structure) -> None:
        self.model, self.structure = model, structure
        self.descent: Callable | None = None

    def init(self, params):
        return None

    def update(self, grads, state, params):
        if self.descent is None:
            raise RuntimeError("an update arrived outside DeepDist.train; no descent to apply")
        # Copies: descent usually updates in place (model["w"] -= ...), and the store's arrays
        # must change only by being replaced with what this returns.
        self.model = tree.assign(self.model, self.structure, [np.array(p) for p in params])
        result = self.descent(self.model, tree.unflatten(self.structure, grads))
        if result is not None:  # descent may return a new model instead of mutating it
            self.model = result
        new, structure = tree.flatten(self.model)
        if structure != self.structure:
            raise ValueError("descent changed the model's structure; it must keep every array's "
                             "shape and position")
        return new, state


class DeepDist:
    """Context manager owning the master model server for one model (DeepDist's API).

    Args:
        model: any model whose state is numpy arrays: a keras.Model or an object with
            ``get_weights``/``set_weights``, a dict or list of arrays, or a plain object whose
            attributes hold them (DeepDist's Word2Vec style; updated in place).
        host: the address the server binds to and executors are told (None: as Downpour).
        request_timeout: seconds before an executor gives up on one request.
        max_request_mb: bigger pushes are refused with HTTP 413.

    Raises:
        TypeError: ``model`` holds no numpy state.

    Example:
        >>> with DeepDist(model) as dd:
        ...     dd.train(df, gradient, descent)   # gradient(model, rows) -> update
        ...     trained = dd.model                # descent(model, update) -> None, on the driver
    """

    def __init__(self, model, *, host: str | None = None, request_timeout: float = 60.0,
                 max_request_mb: float = DEFAULT_MAX_REQUEST_MB) -> None:
        self._leaves, self._structure = tree.flatten(model)
        self._rule = _DescentRule(model, self._structure)
        self._store = ParameterStore(self._leaves, self._rule)
        self._host, self._timeout = host, request_timeout
        self._max_bytes = int(max_request_mb * 2**20)
        self._server: ParameterServer | None = None
        self._spark = None
        # Executors need a template to load fetched arrays into: containers are rebuilt from
        # the structure; weights objects and plain objects travel (via Spark's closure) as a copy.
        self._template = model if self._structure[0] in ("weights", "object") else None
        self._probed = False

    def __enter__(self) -> DeepDist:
        self._spark = get_or_create_session()
        host = self._host or driver_address(self._spark)
        self._server = ParameterServer(self._store, host=host, max_request_bytes=self._max_bytes)
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def model(self) -> Any:
        """The driver's model with every update applied so far."""
        _, params = self._store.fetch()
        self._rule.model = tree.assign(self._rule.model, self._structure, params)
        return self._rule.model

    @property
    def status(self) -> dict:
        return self._store.status()

    def train(self, rdd, gradient: Callable, descent: Callable) -> dict:
        """One pass over the data: every partition pushes ``gradient(model, rows)`` once.

        Args:
            rdd: a DataFrame (classic or Spark Connect; ``rows`` are ``Row`` objects) or, in a
                classic session, an RDD.
            gradient: ``gradient(model, rows) -> update``, run on executors against a copy of
                the model loaded with the server's current arrays.
            descent: ``descent(model, update) -> None``, run on the driver for each push.

        Returns:
            ``{"partitions", "rows", ...}``: what the pass covered.

        Raises:
            RuntimeError: outside ``with DeepDist(model) as dd``, or when the executors cannot
                reach the server (checked on the first call, naming the address).
        """
        if self._server is None:
            raise RuntimeError("DeepDist.train must run inside `with DeepDist(model) as dd:`")
        if not callable(gradient) or not callable(descent):
            raise TypeError("gradient and descent must be functions: gradient(model, rows) -> "
                            "update, descent(model, update) -> None")
        self._rule.descent = descent
        worker = functools.partial(
            _train_partition, url=self._server.url, token=self._server.token,
            structure=self._structure, template=self._template, gradient=gradient,
            timeout=self._timeout)
        started = time.perf_counter()
        frame = hasattr(rdd, "mapInArrow")  # a DataFrame: no RDD API needed (Spark Connect)
        session = rdd.sparkSession if frame else self._spark
        if not self._probed:
            check_reachable(session, [self._server.url], self._server.token,
                            tasks=default_parallelism(session),
                            timeout=min(self._timeout, 10.0), host=self._server.host,
                            what="DeepDist's host")
            self._probed = True
        before = self._store.status()["updates_applied"]
        if frame:
            with job_group(session, describe("deepdist", None, "train (DataFrame)")):
                counts = [row.rows for row in rdd.mapInArrow(
                    functools.partial(_train_batches, worker=worker), "rows long").collect()]
        else:
            with job_group(session, describe("deepdist", None, f"train "
                                             f"({rdd.getNumPartitions()} partitions)")):
                counts = rdd.mapPartitionsWithIndex(worker).collect()
        status = self._store.status()
        return {"partitions": len(counts), "rows": int(sum(counts)),
                "updates": status["updates_applied"] - before,
                "seconds": time.perf_counter() - started}


def _train_batches(batches, *, worker):
    """``mapInArrow``'s function: the partition's rows as ``Row`` objects, then ``worker``."""
    from pyspark import TaskContext
    from pyspark.sql import Row

    rows = [Row(**row) for batch in batches for row in batch.to_pylist()]
    for count in worker(TaskContext.get().partitionId(), rows):
        yield pa.RecordBatch.from_pylist([{"rows": count}], schema=pa.schema([("rows", pa.int64())]))


def _train_partition(index, rows, *, url, token, structure, template, gradient, timeout):
    rows = list(rows)
    if not rows:
        return iter([0])
    client = ParameterClient(url, token, timeout=timeout)
    try:
        step, params = client.fetch()
        # The template is this worker's own unpickled copy, so loading into it is safe.
        model = tree.assign(template, structure, [np.array(p) for p in params])
        update = gradient(model, rows)
        leaves, _ = tree.flatten(update)  # the server checks every shape against the model
        client.push(leaves, base_step=step, replica=f"deepdist-p{index}")
    finally:
        client.close()
    return iter([len(rows)])
