"""Training per micro-batch of a Structured Streaming query (``MicroBatchTrainer``): each batch
once, from the weights the previous one left; a re-run batch id is skipped, also after a restart."""

import json

import numpy as np
import pytest
from pyspark.sql import functions as F

from sparkdownpour.examples import arrays_to_frame
from sparkdownpour.ml import MicroBatchTrainer
from tests.ml.test_estimators import dense


def weights(model):
    return [np.array(w) for w in model.get_weights()]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def batches(spark):
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(3):
        x = rng.normal(size=(32, 3)).astype(np.float32)
        y = (x @ np.array([1.5, -2.0, 0.5]) > 0).astype(np.float32)
        frames.append(arrays_to_frame(spark, x, y, 2))
    return frames


def test_a_stream_trains_once_per_batch_id_and_resumes_after_a_restart(spark, batches,
                                                                        tmp_path):
    source, state = tmp_path / "incoming", tmp_path / "model"
    for i, frame in enumerate(batches[:2]):
        frame.coalesce(1).write.parquet(str(source / f"file={i}"))
    trainer = MicroBatchTrainer(dense(3, 2, "softmax"), state, learning_rate=0.1)
    initial = weights(trainer.model)
    stream = spark.readStream.schema(batches[0].schema).option("maxFilesPerTrigger", 1) \
        .parquet(str(source / "*"))
    query = (stream.writeStream.foreachBatch(trainer)
             .option("checkpointLocation", str(tmp_path / "query")).start())
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    assert trainer.last_batch_id == 1 and [b["batch_id"] for b in trainer.batches] == [0, 1]
    assert [b["rows"] for b in trainer.batches] == [32, 32]
    trained = weights(trainer.model)
    assert not same(trained, initial)
    saved = json.loads((state / "state.json").read_text())
    assert saved["last_batch_id"] == 1 and (state / saved["model"]).exists()
    assert sorted(p.name for p in state.iterdir()) == ["model-000000000001.keras", "state.json"]

    # Spark re-runs batch 1 after a failure: nothing is applied twice.
    trainer(batches[1], 1)
    assert same(weights(trainer.model), trained) and len(trainer.batches) == 2

    # A restarted job: a new callback over the same directory resumes from the saved model
    # (not the fresh one it is given) and still skips what was applied.
    restarted = MicroBatchTrainer(dense(3, 2, "softmax"), state, learning_rate=0.1)
    assert restarted.last_batch_id == 1
    assert same(weights(restarted.model), trained)
    restarted(batches[1], 1)
    assert same(weights(restarted.model), trained)
    restarted(batches[2], 2)
    assert restarted.last_batch_id == 2 and not same(weights(restarted.model), trained)
    assert [b["batch_id"] for b in restarted.batches] == [0, 1, 2]


def test_bad_knobs_and_models_are_refused_before_any_batch(tmp_path):
    with pytest.raises(ValueError, match="epochs must be >= 1, received 0"):
        MicroBatchTrainer(dense(3, 2, "softmax"), tmp_path / "a", epochs=0)
    with pytest.raises(TypeError, match="keras.Model or a function that builds one"):
        MicroBatchTrainer("model.keras", tmp_path / "b")


def test_a_failed_batch_leaves_nothing_behind(spark, batches, tmp_path):
    trainer = MicroBatchTrainer(dense(3, 2, "softmax"), tmp_path / "model")
    initial = weights(trainer.model)
    with pytest.raises(ValueError, match="outside"):
        trainer(batches[0].withColumn("label", F.lit(5.0)), 0)
    assert trainer.last_batch_id is None and trainer.batches == []
    assert same(weights(trainer.model), initial)  # reloaded from the last checkpoint

