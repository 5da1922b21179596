"""Training inside a Structured Streaming query: a ``foreachBatch`` callback that keeps one Keras
model learning from every micro-batch, with Downpour, exactly once per batch id.

>>> trainer = MicroBatchTrainer(build_model, "/data/ckpt/clicks-model",
...                             loss="sparse_categorical_crossentropy", learning_rate=0.05)
>>> query = (spark.readStream.schema(schema).parquet("/data/incoming")
...          .writeStream.foreachBatch(trainer)
...          .option("checkpointLocation", "/data/ckpt/clicks-query").start())

Each micro-batch is one ``Downpour(model, ...).fit(batch)`` that starts from the weights the
previous batch left (the driver's ``keras.Model`` is trained in place). After a batch, the model
is saved as ``model-<batch id>.keras`` in ``checkpoint_dir`` and then ``state.json`` (written to a
temporary file and renamed, so it is either the old or the new one) records that batch id as
applied and names that model file. Spark re-runs the last micro-batch with the same id when a
query restarts after a failure before committing it; a batch id at or below the last applied
one is skipped, so its rows are never trained on twice. A crash between saving the model and
renaming ``state.json`` leaves the old state, which still names the old model: the re-run then
trains on the old weights, as if the first attempt had not happened.

A new ``MicroBatchTrainer`` over the same ``checkpoint_dir`` (a restarted job) resumes from the
saved model and ignores the ``model`` it is given. The Downpour optimizer's accumulators (Adagrad's)
live on the parameter server of one fit, so they restart with every micro-batch.

``checkpoint_dir`` is a directory on the driver's file system (a local or mounted path): the
callback runs on the driver.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
RECENT = 100  # batch records kept in state.json


class MicroBatchTrainer:
    """A ``foreachBatch(trainer)`` callback: ``trainer(batch_df, batch_id)`` trains the model on
    the micro-batch with Downpour once per batch id, and checkpoints it.

    ``model`` is a ``keras.Model`` or a zero-argument function that builds one; it is used only
    when ``checkpoint_dir`` holds no saved state. Keyword arguments are ``DownpourConfig``
    fields (loss, optimizer, learning_rate, batch_size, n_fetch, ...); ``epochs`` (passes over
    each micro-batch) defaults to 1 and ``verbose`` to 0 (no progress bar per batch).
    """

    def __init__(self, model: Any, checkpoint_dir: str | os.PathLike, *,
                 features_col: str | Sequence[str] = "features", label_col: str = "label",
                 epochs: int = 1, verbose: int = 0, **config: Any) -> None:
        from sparkdownpour import Downpour

        self.checkpoint_dir = os.fspath(checkpoint_dir)
        self.features_col = features_col
        self.label_col = label_col
        # Validates every knob now, not at the first micro-batch.
        self._config = Downpour(None, epochs=epochs, verbose=verbose, **config).config
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        self._state = self._read_state()
        if self._state is None:
            self._model = _build(model)
            self._state = {"last_batch_id": None, "model": None, "batches": []}
            self._commit(self._model, "initial")
        else:
            self._model = None  # loaded from the checkpoint on first use
            logger.info("resuming from %s: last applied micro-batch %s", self.checkpoint_dir,
                        self._state["last_batch_id"])

    @property
    def model(self):
        """The current ``keras.Model`` (the one the last applied micro-batch left)."""
        if self._model is None:
            import keras

            self._model = keras.saving.load_model(
                os.path.join(self.checkpoint_dir, self._state["model"]), compile=False,
                safe_mode=True)
        return self._model

    @property
    def last_batch_id(self) -> int | None:
        """The newest micro-batch id applied to the model (None before the first)."""
        return self._state["last_batch_id"]

    @property
    def batches(self) -> list[dict]:
        """One record per applied micro-batch (the newest 100): batch_id, rows, loss, seconds."""
        return list(self._state["batches"])

    def __call__(self, batch_df, batch_id: int) -> None:
        from sparkdownpour import Downpour

        batch_id = int(batch_id)
        last = self._state["last_batch_id"]
        if last is not None and batch_id <= last:
            logger.info("micro-batch %d already applied (last applied: %d); skipped", batch_id,
                        last)
            return
        started = time.perf_counter()
        record: dict[str, Any] = {"batch_id": batch_id, "rows": 0}
        if not batch_df.isEmpty():
            try:
                result = Downpour(self.model, self._config).fit(batch_df, self.features_col,
                                                               self.label_col)
            except BaseException:
                # The model may hold a part of this batch: forget it, so that Spark's re-run
                # starts from the last committed checkpoint.
                self._model = None
                raise
            last_epoch = result.history.epochs[-1] if result.history.epochs else {}
            record.update(rows=int(result.history.info.get("rows", 0)),
                          loss=last_epoch.get("loss"))
        record["seconds"] = round(time.perf_counter() - started, 3)
        self._commit(self.model, batch_id, record)

    def __getstate__(self) -> dict:
        # Pickled (a Spark Connect foreachBatch runs the callback in a server-side process):
        # the far side loads the model from checkpoint_dir.
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def _read_state(self) -> dict | None:
        path = os.path.join(self.checkpoint_dir, STATE_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            return json.load(handle)

    def _commit(self, model, batch_id: int | str, record: dict | None = None) -> None:
        """Save the model under a new name, then atomically point state.json at it."""
        from sparkdownpour.ml.predict import keras_to_bytes

        name = f"model-{batch_id:012d}.keras" if isinstance(batch_id, int) else \
            f"model-{batch_id}.keras"
        _write_atomically(os.path.join(self.checkpoint_dir, name), keras_to_bytes(model))
        state = {"last_batch_id": batch_id if isinstance(batch_id, int) else None,
                 "model": name,
                 "batches": (self._state["batches"] + ([record] if record else []))[-RECENT:]}
        _write_atomically(os.path.join(self.checkpoint_dir, STATE_FILE),
                          json.dumps(state, indent=1).encode())
        previous = self._state.get("model")
        self._state = state
        if previous and previous != name:
            try:
                os.remove(os.path.join(self.checkpoint_dir, previous))
            except FileNotFoundError:
                pass


def _build(model: Any):
    import keras

    if isinstance(model, keras.Model):
        return model
    if callable(model):
        built = model()
        if not isinstance(built, keras.Model):
            raise TypeError(f"the model builder returned {type(built).__name__}, not a "
                            "keras.Model")
        return built
    raise TypeError(f"model must be a keras.Model or a function that builds one, received "
                    f"{type(model).__name__}")


def _write_atomically(path: str, payload: bytes) -> None:
    """Write to a temporary file in the same directory, flush it to disk, then rename."""
    folder = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise


__all__ = ["MicroBatchTrainer"]
