"""A progress bar fed from the master model server's counters while a Spark job runs."""

from __future__ import annotations

import threading

from sparkdownpour.errors import ParameterServerError


def expected_updates(config, rows: int, partitions: int) -> int:
    """How many updates the server applies in a whole run, for the progress bar's total.

    ``config`` is a ``DownpourConfig``. Per epoch, each partition has ``b`` mini-batches
    (``rows`` spread evenly over ``partitions``); the server applies one update per push in
    ``"async"`` (every ``n_push`` mini-batches and at the partition's end), one per *round* in
    ``"sync"`` (every replica's gradient averaged into one update, ``b`` rounds), and one per
    elastic exchange in ``"easgd"`` (every ``easgd_tau`` mini-batches and at the end). The warm
    start (one replica, ``warmstart_steps`` mini-batches) pushes every ``n_push``. Exact for
    evenly filled partitions; an estimate otherwise. ``n_push="auto"`` counts every mini-batch (the
    replicas choose their periods as they go), and the bar closes at the updates applied.
    """
    partitions = max(partitions, 1)
    n_push = 1 if config.n_push == "auto" else config.n_push
    batches = -(-rows // (partitions * config.batch_size))
    if config.mode == "sync":
        per_epoch = batches
    else:
        every = config.easgd_tau if config.mode == "easgd" else n_push
        per_epoch = partitions * -(-batches // every)
    warm = min(config.warmstart_steps, -(-rows // config.batch_size))
    return per_epoch * config.epochs + -(-warm // n_push)


class ServerProgress:
    """Polls ``store.status()`` on a daemon thread and shows updates applied, rate and staleness.

    Does nothing when ``verbose`` is 0. tqdm's ``auto`` front end picks the notebook widget when
    one is available and plain text otherwise.
    """

    def __init__(self, store, total_updates: int, verbose: int, interval: float = 0.25) -> None:
        self._store, self._interval = store, interval
        self._stop = threading.Event()
        self._bar = None
        self._postfix: dict = {}
        self._thread = None
        if verbose:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_updates, unit="upd", desc="downpour", leave=True,
                             dynamic_ncols=True)

    def __enter__(self) -> ServerProgress:
        if self._bar is not None:
            self._thread = threading.Thread(target=self._run, name="sparkdownpour-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def set_epoch(self, epoch: int, epochs: int, **postfix) -> None:
        if self._bar is not None:
            self._bar.set_description(f"epoch {epoch}/{epochs}")
            self._postfix.update({k: v for k, v in postfix.items() if v is not None})
            self._refresh()

    def _refresh(self) -> None:
        status = self._store.status()
        self._bar.n = status["updates_applied"]
        staleness = status.get("staleness", {})
        self._bar.set_postfix(stale=f"{staleness.get('mean', 0.0):.2f}", **self._postfix,
                              refresh=False)
        self._bar.refresh()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._refresh()
            except ParameterServerError:  # the server is gone: the trainer raises, not the bar
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._bar is not None:
            try:
                self._refresh()
                if exc[0] is None and self._bar.n < self._bar.total:  # fewer pushes than planned
                    self._bar.total = self._bar.n
            except ParameterServerError:
                if exc[0] is None:  # only when nothing else is being raised already
                    raise
            finally:
                self._bar.close()
