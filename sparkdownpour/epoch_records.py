"""A Downpour epoch's history record, and the held-out scores added to it on the driver."""

from __future__ import annotations

import numpy as np

from sparkdownpour.keras_model import BINARY_LOSSES, SPARSE_LOSSES, loss_name, resolve_loss

__all__ = ["check_validation", "epoch_record", "evaluate"]


def epoch_record(epoch: int, stats: list[dict], status: dict, seconds: float) -> dict:
    examples = sum(s["examples"] for s in stats)
    staleness, this_epoch = status.get("staleness", {}), status["this_epoch"]
    return {
        "epoch": epoch,
        "loss": sum(s["loss_sum"] for s in stats) / max(examples, 1),
        "examples": examples,
        "steps": sum(s["steps"] for s in stats),
        # This epoch's updates and their staleness; the whole run's so far under "_total".
        "updates": this_epoch["updates_applied"],
        "staleness_mean": float(this_epoch["staleness_mean"]),
        "staleness_max": int(this_epoch["staleness_max"]),
        "updates_total": status["updates_applied"],
        "staleness_mean_total": float(staleness.get("mean", 0.0)),
        "staleness_max_total": int(staleness.get("max", 0)),
        "replicas": len(stats),
        "wall_time_s": seconds,
        "compute_s": sum(s["compute_s"] for s in stats),
        "comm_s": sum(s["comm_s"] for s in stats),
        # The replicas' compute time over their tasks' wall time (model builds excluded):
        # what share of the work Downpour's own costs (requests, Arrow, Spark) leave to compute.
        "compute_share": _share(stats),
        # Mini-batches per push, averaged over the replicas (n_push="auto" chooses it per replica)
        "push_period": _mean_period(stats),
        "skipped_steps": sum(s["skipped"] for s in stats),
        "duplicates_refused": status.get("duplicates_refused", 0),
        "stale_refused": status.get("stale_refused", 0),
        "nonfinite_skipped": status.get("nonfinite_skipped", 0),
        "diverging_replicas": sorted(status.get("diverging", {})),
        # Per replica (partition): the device it ran on and how it got there (replica.devices).
        "devices": {str(s["partition"]): {
            "device": s["device"], "gpu_addresses": s["gpu_addresses"], "visible": s["visible"],
            "note": s["device_note"], "variable_device": s["variable_device"], "pid": s["pid"],
            "compute_dtype": s["compute_dtype"],
        } for s in sorted(stats, key=lambda s: (s["partition"], s["attempt"]))},
    }


def _share(stats: list[dict]) -> float | None:
    task = sum(s.get("task_s") or 0.0 for s in stats)
    return sum(s["compute_s"] for s in stats) / task if task > 0 else None


def _mean_period(stats: list[dict]) -> float | None:
    periods = [s["push_period"] for s in stats if s.get("push_period")]
    return sum(periods) / len(periods) if periods else None


def check_validation(validation_data, num_features: int):
    if validation_data is None:
        return None
    try:
        x, y = validation_data
    except (TypeError, ValueError) as exc:
        raise TypeError("validation_data must be a pair (x, y) of numpy arrays") from exc
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if x.ndim != 2 or x.shape[1] != num_features or len(x) != len(y):
        raise ValueError(f"validation_data has x of shape {x.shape} and y of shape {y.shape}; "
                         f"expected (n, {num_features}) and (n,)")
    return x, y


def evaluate(model, loss, x: np.ndarray, y: np.ndarray) -> dict:
    predictions = model(x, training=False).numpy()
    units = predictions.shape[-1]
    y_true = y.reshape(-1, 1) if units == 1 and loss_name(loss) not in SPARSE_LOSSES else y
    record = {"val_loss": float(np.mean(resolve_loss(loss)(y_true, predictions)))}
    name = loss_name(loss)
    if name in SPARSE_LOSSES:
        record["val_accuracy"] = float(np.mean(np.argmax(predictions, axis=-1) == y))
    elif name in BINARY_LOSSES:
        record["val_accuracy"] = float(np.mean((predictions[:, 0] > 0.5) == (y > 0.5)))
    return record

