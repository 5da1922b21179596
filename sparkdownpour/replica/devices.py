"""Which device a Spark task's TensorFlow runs on: the GPU Spark assigned it, or the CPU.

Spark's resource scheduling is the source of truth. With ``spark.executor.resource.gpu.amount``
and ``spark.task.resource.gpu.amount`` set, a task reads its addresses from
``TaskContext.get().resources()["gpu"]`` and TensorFlow in its Python worker is shown only those
GPUs, with memory growth on (or a fixed per-task memory limit), so tasks sharing a GPU
(fractional amounts) or an executor never grab each other's memory.

Facts about TensorFlow that shape this module:

- Visible GPUs and memory options can only be set before TensorFlow's runtime initialises in a
  process (its first op). After that they are fixed for the life of the process.
- PySpark reuses a Python worker for many tasks. The first task in a worker decides what that
  worker's TensorFlow sees (``_APPLIED``); later tasks given the same address reuse it. A later
  task given an address the worker cannot see (an executor owning several GPUs) runs on the CPU
  with a warning under ``device="auto"`` and fails under ``device="gpu"``: running it on the
  worker's other GPU would put two tasks on one GPU behind Spark's back.
- When the worker has not imported TensorFlow yet, ``CUDA_VISIBLE_DEVICES`` is set (so CUDA never
  even opens the other GPUs); otherwise ``tf.config.set_visible_devices``.
- CUDA numbers GPUs fastest-first by default while nvidia-smi (and so the discovery script)
  numbers them by PCI bus: ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes an address mean the same GPU.

Nothing here touches a SparkSession; ``driver_model.driver_cpu`` is the driver's counterpart.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Marker in the executor's error, so the driver can re-raise it as itself (see downpour._run_job).
NO_GPU = "no usable GPU for device='gpu'"


@dataclass(frozen=True)
class DeviceOptions:
    """The device knobs, as plain values shipped to executors."""

    device: str = "auto"            # "auto": a GPU if one is usable, else the CPU
    memory_growth: bool = True      # allocate GPU memory as needed, not all of it up front
    memory_limit_mb: int = 0        # > 0: a fixed per-task cap (implies no growth beyond it)


@dataclass(frozen=True)
class Placement:
    """Where one task runs, and why: what the status route and the history report."""

    device: str                     # the TensorFlow device: "/GPU:0" or "/CPU:0"
    addresses: tuple[str, ...]      # the task's Spark GPU addresses (empty: none assigned)
    visible: str                    # the visibility setting this worker applied
    note: str = ""                  # why no GPU is used, or that a worker kept a setting

    def describe(self) -> str:
        """A short label such as ``GPU:0 (spark gpu 1)`` or ``CPU:0``."""
        return device_label(self.device, ",".join(self.addresses))


def device_label(device: str, addresses: str) -> str:
    """``GPU:0 (spark gpu 1)``: the TensorFlow device and the Spark address(es) it stands for."""
    return device.lstrip("/") + (f" (spark gpu {addresses})" if addresses else "")


_APPLIED: dict = {}  # process-wide: what the first task in this worker applied


def task_gpu_addresses() -> tuple[str, ...]:
    """The GPU addresses Spark assigned to the running task; empty outside a task or without."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return ()
    info = (ctx.resources() or {}).get("gpu")
    return tuple(str(a) for a in info.addresses) if info is not None else ()


def numpy_eligible(options: DeviceOptions) -> bool:
    """Whether a numpy evaluator may run this task instead of TensorFlow: not when the user
    asked for a GPU, Spark gave the task one, or (``device="auto"``) the machine has an NVIDIA
    device TensorFlow would use (checked without importing TensorFlow)."""
    if options.device == "gpu" or task_gpu_addresses():
        return False
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() in ("-1",)
    return options.device == "cpu" or hidden or not os.path.exists("/dev/nvidiactl")


def cuda_visible_value(addresses: tuple[str, ...], inherited: str | None) -> str:
    """``CUDA_VISIBLE_DEVICES`` narrowing a process to Spark's ``addresses``.

    When the executor already inherited a value (YARN or a container runtime restricted it) and
    the addresses are not entries of it, they are read as positions in it, which is how
    nvidia-smi inside such a container numbers the GPUs it sees."""
    if not inherited or inherited.strip() in ("", "-1"):
        return ",".join(addresses)
    entries = [e.strip() for e in inherited.split(",") if e.strip()]
    if all(a in entries for a in addresses):
        return ",".join(addresses)
    if all(a.isdigit() and int(a) < len(entries) for a in addresses):
        return ",".join(entries[int(a)] for a in addresses)
    raise RuntimeError(f"Spark assigned GPU address(es) {list(addresses)} but this executor "
                       f"may only use CUDA_VISIBLE_DEVICES={inherited!r}; make the discovery "
                       "script print addresses from that list")


def _tf_initialised(tf) -> bool:
    """Whether TensorFlow's runtime is up in this process (its devices are then fixed). A
    private attribute, so callers still catch the RuntimeError TensorFlow raises if it lies."""
    try:
        from tensorflow.python.eager import context
    except ImportError:
        return False
    return bool(getattr(context.context(), "_initialized", False))


def _ordinal(address: str, inherited: str | None) -> int | None:
    """The index of Spark's ``address`` among the GPUs TensorFlow lists in this process."""
    entries = [e.strip() for e in (inherited or "").split(",") if e.strip()]
    if entries and entries != ["-1"] and address in entries:
        return entries.index(address)
    return int(address) if address.isdigit() else None


def _apply_visibility(options: DeviceOptions, addresses: tuple[str, ...]) -> str:
    """Restrict this fresh worker's TensorFlow; returns the setting applied, in words."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # read by CUDA when it starts
    if "tensorflow" not in sys.modules and (addresses or options.device == "cpu"):
        value = "-1" if options.device == "cpu" else \
            cuda_visible_value(addresses, os.environ.get("CUDA_VISIBLE_DEVICES"))
        os.environ["CUDA_VISIBLE_DEVICES"] = value
        _configure_memory(options)
        return f"CUDA_VISIBLE_DEVICES={value}"
    import tensorflow as tf

    if _tf_initialised(tf):
        return "unchanged: TensorFlow was already initialised in this worker"
    physical = tf.config.list_physical_devices("GPU")
    if options.device == "cpu":
        chosen, what = [], "none"
    elif addresses:
        inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
        ordinals = [_ordinal(a, inherited) for a in addresses]
        if None in ordinals:
            return (f"unchanged: GPU address(es) {list(addresses)} are not indices; TensorFlow "
                    "was imported before the task started, so CUDA_VISIBLE_DEVICES came too late")
        chosen = [physical[i] for i in ordinals if i < len(physical)]
        what = "GPU " + ",".join(addresses)
    else:  # no scheduling: one GPU, so this worker never opens contexts on the others
        chosen, what = physical[:1], "GPU 0" if physical else "none"
    try:
        tf.config.set_visible_devices(chosen, "GPU")
        _configure_memory(options)
    except RuntimeError:  # initialised after all (see _tf_initialised)
        return "unchanged: TensorFlow was already initialised in this worker"
    return f"tf.config.set_visible_devices({what})"


def _configure_memory(options: DeviceOptions) -> None:
    import tensorflow as tf

    for gpu in tf.config.get_visible_devices("GPU"):
        if options.memory_limit_mb:
            # A logical device with a cap; TensorFlow refuses growth together with it.
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=options.memory_limit_mb)])
        elif options.memory_growth:
            tf.config.experimental.set_memory_growth(gpu, True)


def place(options: DeviceOptions, addresses: tuple[str, ...] | None = None) -> Placement:
    """Set up (first task in a worker) or read back (later tasks) this worker's TensorFlow
    devices, and choose the task's device. Raises ``RuntimeError`` for ``device="gpu"`` when no
    GPU can be used, naming what was assigned and found."""
    addresses = task_gpu_addresses() if addresses is None else tuple(addresses)
    note = ""
    if not _APPLIED:
        visibility = _apply_visibility(options, addresses)
        # "narrowed": the addresses TensorFlow now numbers GPU:0, GPU:1, ... in this worker.
        _APPLIED.update(addresses=addresses, visible=visibility, device=options.device,
                        narrowed=() if visibility.startswith("unchanged") else addresses)
    elif (_APPLIED["addresses"], _APPLIED["device"]) != (addresses, options.device):
        note = (f"this Python worker kept the setting of its first task (device="
                f"{_APPLIED['device']!r}, spark gpu {list(_APPLIED['addresses'])}); TensorFlow's "
                "devices cannot change once it is initialised")
    import tensorflow as tf

    visible = tf.config.get_visible_devices("GPU")
    applied = _APPLIED["narrowed"]
    device, why = "/CPU:0", ""
    if options.device == "cpu" or not (visible or addresses or options.device == "gpu"):
        pass  # the CPU, as asked, or "auto" on a machine without GPUs: nothing to explain
    elif not visible:
        why = (f"TensorFlow {tf.__version__} sees no GPU in this worker "
               f"({'built with CUDA' if tf.test.is_built_with_cuda() else 'a CPU-only build'}, "
               f"physical GPUs: {len(tf.config.list_physical_devices('GPU'))}")
        why += f", visibility: {_APPLIED['visible']})"
    elif addresses and addresses[0] not in applied and applied:
        why = (f"Spark assigned gpu {addresses[0]} but this reused Python worker's TensorFlow "
               f"was set up for gpu {list(applied)}; give each executor one GPU "
               "(spark.executor.resource.gpu.amount=1) or set spark.python.worker.reuse=false")
    else:
        index = 0 if not addresses else applied.index(addresses[0]) if applied else \
            _ordinal(addresses[0], os.environ.get("CUDA_VISIBLE_DEVICES"))
        if index is not None and index < len(visible):
            device = f"/GPU:{index}"
        else:
            why = f"GPU {index} is not among the {len(visible)} visible to TensorFlow"
    if why and options.device == "gpu":
        raise RuntimeError(f"{NO_GPU}: {why}. Use device='auto' to fall back to the CPU.")
    if why:
        logger.warning("running on the CPU: %s", why)
    placement = Placement(device, addresses, _APPLIED["visible"],
                          "; ".join(n for n in (why, note) if n))
    logger.info("task device %s (visibility: %s)", placement.describe(), placement.visible)
    return placement
