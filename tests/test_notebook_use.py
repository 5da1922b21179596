"""How a notebook drives the trainers: several fits in one driver, at once, and interrupted."""

import socket
import threading
import time
from urllib.parse import urlparse

import numpy as np
import pytest

from sparkdownpour import Downpour, Sandblaster
from sparkdownpour.callbacks import LambdaCallback
from sparkdownpour.examples import build_digits_mlp


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x).numpy(), axis=-1) == y))


def refuses_connections(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=1).close()
    except OSError:
        return True
    return False


def test_two_trainers_at_once_in_one_driver_both_converge(digits, spark):
    frame, (x_test, y_test) = digits
    results, errors = {}, []

    def train(name, trainer):
        try:
            results[name] = trainer.fit(frame, "features", "label")
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(name, Downpour(build_digits_mlp, epochs=6,
                                                                   verbose=0, seed=seed)))
               for name, seed in (("a", 1), ("b", 2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    servers = {name: result.history.info["server"] for name, result in results.items()}
    assert servers["a"] != servers["b"]  # each its own server, port and token
    for result in results.values():
        assert accuracy(result.model, x_test, y_test) >= 0.9
    assert all(refuses_connections(url) for url in servers.values())


def softmax_regression():
    import keras

    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])


def test_fits_in_a_row_reuse_nothing_but_the_session(digits):
    frame, (x_test, y_test) = digits
    first = Downpour(build_digits_mlp, epochs=2, verbose=0).fit(frame)
    second = Sandblaster(softmax_regression, loss="sparse_categorical_crossentropy",
                         max_iter=10, verbose=0).fit(frame)
    assert first.history.info["server"] not in second.history.info["shard_urls"]
    assert accuracy(second.model, x_test, y_test) >= 0.8


def test_keyboard_interrupt_tears_the_server_down_and_cancels_the_job(digits, spark):
    frame, _ = digits
    trainer = Downpour(build_digits_mlp, epochs=20, verbose=0)
    seen = {}
    on_start = lambda server: seen.setdefault("url", server.url)

    def interrupt(record):  # as Ctrl-C in a notebook lands between epochs
        assert cached_rdds(spark) - cached_before  # while training, the prepared frame is
        raise KeyboardInterrupt

    cached_before = cached_rdds(spark)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(frame, stop_when=interrupt,
                    callbacks=[LambdaCallback(on_server_start=on_start)])
    assert refuses_connections(seen["url"])
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
    # The fit's cached copy of the data is gone. Its unpersist does not block (as Spark's own
    # default), so on a loaded machine the blocks may take a moment to go.
    deadline = time.monotonic() + 10
    while cached_rdds(spark) != cached_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cached_rdds(spark) == cached_before


def cached_rdds(spark) -> set[int]:
    return {info.id() for info in spark.sparkContext._jsc.sc().getRDDStorageInfo()}
