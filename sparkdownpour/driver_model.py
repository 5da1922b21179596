"""The driver's side of the model: its keras.Model copy, and device checks before any job.

Executors never import this module: ``replica`` holds what runs in a Spark task.
"""

from __future__ import annotations

import contextlib
import logging

from sparkdownpour.keras_model import resolve_loss, spec_for, with_key
from sparkdownpour.replica.devices import NO_GPU, DeviceOptions, _tf_initialised

__all__ = ["check_devices_on_driver", "check_gpu_on_driver", "device_options", "driver_cpu",
           "driver_model", "raise_if_no_gpu"]

logger = logging.getLogger(__name__)


def driver_model(model, loss, num_features: int, features_col, slots: tuple = ()):
    """The driver's keras.Model (the user's instance, or one built) and its ``ModelSpec``.

    An unknown loss, an unbuildable model or a features-count mismatch fails here, on the
    driver, before any Spark job. A model with several inputs (``slots``, see
    ``sparkdownpour.inputs``) comes back behind one flat input, its variables shared.
    """
    import dataclasses

    import keras

    resolve_loss(loss)
    spec = spec_for(model, num_features, loss)
    if slots:
        from sparkdownpour.inputs import flat_model

        user = model if isinstance(model, keras.Model) else spec.build()
        return flat_model(user, slots), with_key(dataclasses.replace(spec, inputs=tuple(slots)))
    built = model if isinstance(model, keras.Model) else spec.build()
    if not built.built:
        built.build((None, num_features))
    expected = built.inputs[0].shape[-1] if getattr(built, "inputs", None) else num_features
    if expected is not None and int(expected) != num_features:
        raise ValueError(f"the model takes {expected} input features but features column "
                         f"{features_col!r} holds {num_features} per row")
    return built, with_key(spec)


_DRIVER_HID: dict = {}


@contextlib.contextmanager
def driver_cpu():
    """Run the driver's TensorFlow work (its copy of the model, validation) on the CPU.

    ``tf.device`` alone is not enough: TensorFlow's first op opens a context (and, without
    memory growth, most of the memory) on every GPU it sees. So when TensorFlow is not yet
    initialised in the driver process, its GPUs are hidden from it with
    ``tf.config.set_visible_devices([], "GPU")``. That is process-wide: a notebook that wants
    the GPU in the driver too should initialise TensorFlow first (any op, or
    ``tf.config.list_logical_devices()``); sparkdownpour then only places its work on the CPU
    and leaves the GPUs as they are. Hiding uses TensorFlow's API, not ``CUDA_VISIBLE_DEVICES``,
    so Python workers started later by a local master still see every GPU.
    """
    import tensorflow as tf

    if not _DRIVER_HID and not _tf_initialised(tf):
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:  # initialised after all: placing on the CPU is all we can do
                gpus = []
        if gpus:
            logger.info("hid %d GPU(s) from TensorFlow in the driver process, so the driver "
                        "holds no GPU memory (initialise TensorFlow before fit to keep them)",
                        len(gpus))
        _DRIVER_HID["done"] = True
    with tf.device("/CPU:0"):
        yield


def raise_if_no_gpu(error: Exception, where: str) -> None:
    """Re-raise an executor's ``device="gpu"`` failure on the driver as a plain RuntimeError
    with its message, instead of a Py4J stack trace."""
    text = str(error)
    start = text.find(NO_GPU)
    if start >= 0:
        raise RuntimeError(f"{where}: {text[start:start + 800].splitlines()[0]}") from error


def check_gpu_on_driver(device: str, master: str, task_gpu_amount: str | None) -> None:
    """``device="gpu"`` refused before any Spark job when it cannot work: a local master (the
    replicas run on this machine) and no GPU TensorFlow can see here. With Spark GPU scheduling
    or a cluster master the executors check for themselves."""
    if device != "gpu" or task_gpu_amount or not master.startswith("local"):
        return
    import tensorflow as tf

    found = tf.config.list_physical_devices("GPU")  # lists; opens no context
    if not found:
        build = "built with CUDA" if tf.test.is_built_with_cuda() else "a CPU-only build"
        raise RuntimeError(f"{NO_GPU}: the master is {master!r}, so replicas run on this machine, "
                           f"and TensorFlow {tf.__version__} ({build}) finds no GPU here. "
                           "Use device='auto' or device='cpu', or run on GPU executors.")


def device_options(cfg) -> DeviceOptions:
    """The device knobs of a Downpour or Sandblaster config, for executors."""
    return DeviceOptions(device=cfg.device, memory_growth=cfg.gpu_memory_growth,
                         memory_limit_mb=cfg.gpu_memory_limit_mb or 0)


def check_devices_on_driver(device: str, spark) -> None:
    """Refuse ``device="gpu"`` before any Spark job where the driver can tell it cannot work."""
    from sparkdownpour.session import LOOPBACK, conf_value, connect_endpoint, is_connect, master_of

    if is_connect(spark) and connect_endpoint(spark)[0] not in LOOPBACK:
        return  # a Connect server elsewhere: even a local master's replicas run on its machine
    check_gpu_on_driver(device, master_of(spark),
                        conf_value(spark, "spark.task.resource.gpu.amount"))


def adopt_server_state(model, store) -> None:
    """Put the server's combined non-trainable state (``server.model_state``: BatchNorm
    statistics) into the driver's ``model``; nothing when the model has none."""
    from sparkdownpour.keras_model import assign_state

    arrays = store.fetch_state()
    if len(arrays):
        with driver_cpu():
            assign_state(model, arrays)


def state_info(model, status: dict | None = None, replicas: int = 1) -> dict | None:
    """What ``history.info["model_state"]`` says: the variables held and how they were
    combined (from a store's ``status()``, ``replicas``: the run's, see ``replica.state``);
    None for a model without non-trainable state."""
    from sparkdownpour.keras_model import state_names

    names = state_names(model)
    if not names:
        return None
    info = {"variables": names, "combine": "elementwise mean of each partition's latest report",
            "batchnorm_momentum": f"m ** {replicas} on each of {replicas} replicas (m: the "
                                  "layer's own), so the mean moves as one average over all"}
    held = (status or {}).get("model_state")
    if held:
        info.update(described=held["described"],
                    partitions_reporting=held["partitions_reporting"],
                    reports_received=held["reports_received"],
                    reports_refused=held["reports_refused"])
    return info
