"""Checks and loading shared by the config dataclasses: integer and number knobs, the loss,
the device knobs, and ``replace`` / ``from_dict`` / ``from_toml`` / ``resolve``."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["DEVICES", "PRECISIONS", "Loadable", "check_device_knobs", "check_loss",
           "check_periods", "check_server_host", "integer", "positive_number"]


def integer(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, received {value!r} of type "
                        f"{type(value).__name__}")
    if value < minimum or maximum is not None and value > maximum:
        bound = f"in {minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, received {value!r}")


def check_periods(cfg) -> None:
    """``DownpourConfig``'s ``n_fetch`` and ``n_push`` (an integer >= 1, or ``"auto"``)."""
    integer("n_fetch", cfg.n_fetch, minimum=1)
    if cfg.n_push != "auto":  # "auto" with n_fetch > 1 pushes every mini-batch (push_periods)
        if isinstance(cfg.n_push, str):
            raise ValueError(f"n_push must be an integer >= 1 or 'auto', received "
                             f"{cfg.n_push!r}")
        integer("n_push", cfg.n_push, minimum=1)
    if cfg.mode == "sync" and (cfg.n_fetch, cfg.n_push) not in ((1, 1), (1, "auto")):
        raise ValueError(f"mode='sync' fetches and pushes every mini-batch: n_fetch must be 1 and "
                         f"n_push 1 or 'auto', received {cfg.n_fetch} and {cfg.n_push!r}")


def positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, received {value!r} of type "
                        f"{type(value).__name__}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, received {value!r}")


def check_loss(loss: Any) -> None:
    if not (isinstance(loss, str) and loss) and not callable(loss):
        raise TypeError(f"loss must be a Keras loss name or a callable, received {loss!r}")


DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = (None, "float32", "mixed_float16", "mixed_bfloat16")


def check_device_knobs(config) -> None:
    """``device``, ``gpu_memory_growth`` and ``gpu_memory_limit_mb`` (see README "Running on
    GPUs"); kept in step with ``replica.devices``, which config does not import, to stay light."""
    if config.device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)} ('auto': a GPU if TensorFlow "
                         f"can use one, else the CPU), received {config.device!r}")
    if not isinstance(config.gpu_memory_growth, bool):
        raise TypeError(f"gpu_memory_growth must be true or false, received "
                        f"{config.gpu_memory_growth!r}")
    if config.gpu_memory_limit_mb is not None:
        integer("gpu_memory_limit_mb", config.gpu_memory_limit_mb, minimum=1)


class Loadable:
    """``replace``, ``from_dict`` and ``from_toml`` for the frozen config dataclasses."""

    SECTION: ClassVar[str] = ""

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_toml(cls, path: str | Path, section: str | None = None):
        """Read ``[section]`` of a TOML file; unknown keys are refused with the allowed ones."""
        section = section or cls.SECTION
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        return cls.from_dict(data.get(section, {}), where=f"{path} [{section}]")

    @classmethod
    def resolve(cls, config=None, knobs: dict | None = None):
        """A trainer's ``config=`` or its keyword knobs (not both) as a validated config."""
        if config is not None and knobs:
            raise TypeError(f"pass either config= or keyword knobs, not both (got config and "
                            f"{sorted(knobs)})")
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"config must be a {cls.__name__}, received {type(config).__name__}")
        return config if config is not None else cls(**(knobs or {}))

    @classmethod
    def from_dict(cls, values: dict, where: str = "config"):
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        return cls(**values)


def check_server_host(host: object) -> None:
    """``server_host``: the address executors dial (see session.driver_address); None: chosen."""
    if host is None:
        return
    if not isinstance(host, str):
        raise TypeError(f"server_host must be a host name or IP address (str) or None, "
                        f"received {host!r} of type {type(host).__name__}")
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"server_host must be a bare host name or IP address (no scheme, "
                         f"port or brackets), received {host!r}")
    if host in ("0.0.0.0", "::", "*"):
        raise ValueError(f"server_host={host!r} is a wildcard, not an address executors can "
                         "dial; give this machine's address on the executors' network")
