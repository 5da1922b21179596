"""Models with non-trainable state (BatchNorm) through Downpour: they score as single-process
Keras does, and their moving statistics survive the final model, checkpoints, resume, shards,
shard processes, save and load (``server.model_state``, docs/keras_models.md)."""

import numpy as np
import pytest

from sparkdownpour import Downpour
from sparkdownpour.examples import build_digits_bn_mlp, build_digits_convnet, digits_arrays
from sparkdownpour.keras_model import state_arrays
from sparkdownpour.server.checkpoint import latest_checkpoint

pytestmark = pytest.mark.timeout(900)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False).numpy(), axis=-1) == y))


def single_process_accuracy(build, epochs=10):
    """The same model trained by plain Keras ``fit`` (Adagrad 0.05, batches of 32)."""
    import keras

    x_train, y_train, x_test, y_test = digits_arrays()
    model = build(0)
    model.compile(optimizer=keras.optimizers.Adagrad(0.05),
                  loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return accuracy(model, x_test, y_test)


def assert_moved_from_initial(model):
    mean, variance = state_arrays(model)[:2]  # the first BatchNorm's moving mean, variance
    assert np.abs(mean).max() > 0.01
    assert np.abs(variance - 1.0).max() > 0.1


def test_batchnorm_mlp_scores_as_single_process_keras_and_checkpoints_and_resume_keep_it(
        digits, tmp_path):
    frame, (x_test, y_test) = digits
    reference = single_process_accuracy(build_digits_bn_mlp)
    result = Downpour(build_digits_bn_mlp, epochs=10, verbose=0,
                      checkpoint_dir=str(tmp_path)).fit(frame)
    trained = accuracy(result.model, x_test, y_test)
    assert trained >= reference - 0.02, (trained, reference)
    assert_moved_from_initial(result.model)
    info = result.history.info["model_state"]
    assert [name.rsplit("/", 1)[-1] for name in info["variables"]] == ["moving_mean",
                                                                      "moving_variance"]
    # One replica per task slot: the 4 partitions merged into 2, each reporting its statistics.
    assert info["partitions_reporting"] == 2 and "mean" in info["combine"]
    assert result.history.final["state_partitions"] == 2
    # The newest checkpoint holds exactly the final model's statistics.
    saved = latest_checkpoint(tmp_path)["model_state"]["arrays"]
    for got, want in zip(saved, state_arrays(result.model)):
        np.testing.assert_array_equal(got, want)
    # Resume for one more epoch: the replicas start from the restored statistics (from the
    # initial 0 and 1, one epoch of 12 mini-batches per replica, at momentum 0.99**4, would
    # leave 0.62 = 0.99**48 of the initial variance).
    resumed = Downpour(build_digits_bn_mlp, epochs=11, verbose=0,
                       checkpoint_dir=str(tmp_path)).fit(frame, resume=True)
    assert resumed.history.info["resumed_from"]["epochs_done"] == 10
    assert len(resumed.history) == 1
    variance, restored = state_arrays(resumed.model)[1], saved[1]
    assert np.abs(variance - restored).mean() < 0.25 * np.abs(1.0 - restored).mean()
    assert accuracy(resumed.model, x_test, y_test) >= reference - 0.02


def test_small_convnet_with_batchnorm_on_8x8_images_scores_as_single_process_keras(digits):
    frame, (x_test, y_test) = digits
    reference = single_process_accuracy(build_digits_convnet)
    result = Downpour(build_digits_convnet, epochs=10, verbose=0).fit(frame)
    trained = accuracy(result.model, x_test, y_test)
    assert trained >= reference - 0.02, (trained, reference)
    assert_moved_from_initial(result.model)


@pytest.mark.parametrize("knobs", [{"num_shards": 2, "shard_processes": True},
                                   {"num_shards": 3, "mode": "sync", "num_replicas": 2}],
                         ids=["shard-processes", "threaded-shards-sync"])
def test_sharded_servers_hold_the_state_in_shard_zero(digits, knobs):
    frame, (x_test, y_test) = digits
    result = Downpour(build_digits_bn_mlp, epochs=2, verbose=0, **knobs).fit(frame)
    assert_moved_from_initial(result.model)
    replicas = 2  # one per task slot (sync: a barrier stage, one task per core, asks 2)
    assert result.history.info["model_state"]["partitions_reporting"] == replicas
    assert accuracy(result.model, x_test, y_test) > 0.8


def test_the_estimators_saved_model_carries_the_statistics(spark, digits, tmp_path):
    from sparkdownpour.examples import arrays_to_frame
    from sparkdownpour.ml import DownpourEstimator
    from sparkdownpour.ml.models import DownpourModel

    frame, (x_test, y_test) = digits
    fitted = DownpourEstimator(model=build_digits_bn_mlp, epochs=3).fit(frame)
    model = fitted.keras_model
    assert_moved_from_initial(model)
    fitted.save(str(tmp_path / "fitted"))
    loaded = DownpourModel.load(str(tmp_path / "fitted"))
    for got, want in zip(state_arrays(loaded.keras_model), state_arrays(model)):
        np.testing.assert_array_equal(got, want)
    test = arrays_to_frame(spark, x_test, y_test, 2)
    rows = loaded.transform(test).select("label", "prediction").collect()
    scored = np.mean([row["prediction"] == row["label"] for row in rows])
    assert scored == pytest.approx(accuracy(model, x_test, y_test))
