"""Device and precision choices that need no GPU and no cluster: real TensorFlow, real server."""

import numpy as np
import pytest

from sparkdownpour import Downpour, DownpourConfig, SandblasterConfig, optimizers
from sparkdownpour.examples import build_digits_mlp, build_mlp
from sparkdownpour.keras_model import ModelSpec, trainable_arrays
from sparkdownpour.replica.devices import (
    NO_GPU,
    DeviceOptions,
    _ordinal,
    cuda_visible_value,
    place,
)
from sparkdownpour.replica.gradient import GradientFunction
from sparkdownpour.replica.precision import LossScale, build_model
from sparkdownpour.server import ParameterServer, ParameterStore
from tests.replica.test_loop import batches, spec


@pytest.mark.parametrize("addresses,inherited,expected", [
    (("1",), None, "1"),
    (("0", "1"), "", "0,1"),
    (("3",), "2,3", "3"),                    # YARN left 2,3 visible; Spark says 3
    (("1",), "GPU-aaa,GPU-bbb", "GPU-bbb"),  # container numbering: position 1 of the list
])
def test_cuda_visible_devices_narrows_to_spark_addresses(addresses, inherited, expected):
    assert cuda_visible_value(addresses, inherited) == expected


@pytest.mark.parametrize("address,inherited,expected", [
    ("1", None, 1), ("3", "2,3", 1), ("1", "GPU-aaa,GPU-bbb", 1), ("GPU-bbb", None, None),
])
def test_a_spark_address_maps_to_tensorflows_gpu_number(address, inherited, expected):
    assert _ordinal(address, inherited) == expected


def test_an_address_outside_the_executors_visible_gpus_is_refused():
    with pytest.raises(RuntimeError, match=r"\['5'\].*CUDA_VISIBLE_DEVICES='0,1'"):
        cuda_visible_value(("5",), "0,1")


@pytest.mark.parametrize("knob,value,message", [
    ("device", "tpu", r"device must be one of \['auto', 'cpu', 'gpu'\].*'tpu'"),
    ("precision", "float16", r"precision must be one of .*'float16'"),
    ("gpu_memory_limit_mb", 0, r"gpu_memory_limit_mb must be >= 1, received 0"),
    ("gpu_memory_growth", "yes", r"gpu_memory_growth must be true or false, received 'yes'"),
])
def test_device_knobs_are_validated_quoting_the_value(knob, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        DownpourConfig(**{knob: value})
    if knob != "precision":  # Sandblaster evaluates in float32 only: no precision knob
        with pytest.raises((ValueError, TypeError), match=message):
            SandblasterConfig(**{knob: value})
    with pytest.raises(TypeError):
        SandblasterConfig(precision="mixed_bfloat16")


def test_a_gpu_demand_without_a_gpu_is_a_clear_error_naming_what_was_found(monkeypatch):
    import tensorflow as tf

    from sparkdownpour.replica import devices

    # This process is not a Spark worker: keep its environment (a Spark JVM started later would
    # inherit it) and the module's per-worker record as they were.
    tf.constant(0.0)  # TensorFlow up, so place() reads devices instead of narrowing CUDA
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    monkeypatch.setattr(devices, "_APPLIED", {})
    with pytest.raises(RuntimeError, match=rf"{NO_GPU}: .*Spark assigned|{NO_GPU}: .*sees no GPU"):
        place(DeviceOptions(device="gpu"), addresses=("1",))
    placement = place(DeviceOptions(device="auto"), addresses=("1",))
    assert placement.device == "/CPU:0" and placement.addresses == ("1",)
    assert "GPU" in placement.note and placement.describe() == "CPU:0 (spark gpu 1)"
    assert place(DeviceOptions(device="cpu"), addresses=()).device == "/CPU:0"
    assert placement.visible.startswith("unchanged: TensorFlow was already initialised")


def test_device_gpu_is_refused_on_the_driver_before_any_spark_job(spark, digits):
    frame, _ = digits
    tracker = spark.sparkContext.statusTracker()
    jobs_before = set(tracker.getJobIdsForGroup())
    with pytest.raises(RuntimeError, match=rf"{NO_GPU}: the master is 'local\[2\]'.*finds no GPU"):
        Downpour(build_digits_mlp, device="gpu", epochs=1, verbose=0).fit(frame)
    assert set(tracker.getJobIdsForGroup()) == jobs_before
    spark.range(3).count()  # the tracker does see a job run outside any group
    assert set(tracker.getJobIdsForGroup()) != jobs_before


def test_the_status_route_reports_each_replicas_device():
    store = ParameterStore(trainable_arrays(build_mlp(4, 8, 3)), optimizers.get("sgd"))
    with ParameterServer(store, host="127.0.0.1") as server:
        (stats,) = list(__import__("sparkdownpour.replica.loop", fromlist=["run_partition"])
                        .run_partition(batches(20), spec(server.url, server.token)))
        from sparkdownpour.server import ParameterClient
        with ParameterClient(server.url, server.token) as client:
            status = client.status()
    row = stats.to_pylist()[0]
    assert row["device"] == "/CPU:0" and row["variable_device"].endswith("CPU:0")
    assert status["devices"] == {"p0-a0": "CPU:0"}
    assert status["attempts"]["0"]["device"] == "CPU:0"


def test_float16_gradients_are_float32_and_loss_scaling_recovers_from_overflow():
    model_spec = ModelSpec(num_features=4, loss="sparse_categorical_crossentropy",
                           builder=lambda: build_mlp(4, 8, 3))
    model = build_model(model_spec, "mixed_float16")
    assert {layer.dtype_policy.name for layer in model.layers} == {"mixed_float16"}
    gradient = GradientFunction(model, "sparse_categorical_crossentropy",
                                precision="mixed_float16")
    reference = GradientFunction(build_model(model_spec, None), "sparse_categorical_crossentropy")
    reference.model.set_weights(model.get_weights())
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = np.arange(16, dtype=np.float32) % 3
    gradient.loss_scale.value = 2.0 ** 40  # overflows float16: halved until the grads are finite
    loss, grads = gradient(x, y)
    assert gradient.loss_scale.value < 2.0 ** 40
    _, expected = reference(x, y)
    assert all(g.dtype == np.float32 and np.isfinite(g).all() for g in grads)
    for got, want in zip(grads, expected):  # float16 compute: close to float32, not equal
        np.testing.assert_allclose(got, want, atol=2e-2)


def test_loss_scale_doubles_after_a_run_of_finite_steps_and_halves_on_overflow():
    scale = LossScale(initial=8.0, period=2)
    finite, bad = [np.ones(2, np.float32)], [np.array([np.inf], np.float32)]
    assert scale.update(finite) and scale.value == 8.0
    assert scale.update(finite) and scale.value == 16.0
    assert not scale.update(bad) and scale.value == 8.0


@pytest.mark.timeout(300)
def test_mixed_bfloat16_trains_digits_on_the_cpu(digits):
    frame, (x_test, y_test) = digits
    result = Downpour(build_digits_mlp, precision="mixed_bfloat16", epochs=10, verbose=0).fit(
        frame, validation_data=(x_test, y_test), stop_when=lambda r: r["val_accuracy"] >= 0.95)
    assert result.history.final["val_accuracy"] >= 0.93
    replicas = result.history.final["devices"].values()
    assert len(replicas) == 2 and {r["compute_dtype"] for r in replicas} == {"bfloat16"}
    assert result.history.info["devices"] == ["CPU:0"]  # device="auto", no GPU here
    # The server's master weights and the driver's model stay float32.
    assert {w.dtype for w in result.model.get_weights()} == {np.dtype("float32")}
    assert {layer.dtype_policy.name for layer in result.model.layers} == {"float32"}


def test_the_progress_route_refuses_a_device_label_that_is_not_short_printable_text():
    from sparkdownpour.server.app import create_app

    store = ParameterStore(trainable_arrays(build_mlp(4, 8, 3)), optimizers.get("sgd"))
    client = create_app(store, token="t").test_client()
    headers = {"Authorization": "Bearer t"}
    route = "/v1/progress?epoch=1&partition=0&device="
    assert client.get(route + "GPU:0%20(spark%20gpu%201)", headers=headers).status_code == 200
    for bad in ("x" * 121, "GPU%0A0", "%1B[31m"):
        answer = client.get(route + bad, headers=headers)
        assert answer.status_code == 400 and "'device'" in answer.get_json()["error"]
    assert store.status()["devices"] == {"p0-a0": "GPU:0 (spark gpu 1)"}
