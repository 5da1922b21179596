"""Frozen dataclasses for every knob, validated on construction, loadable from TOML.

A bad value is refused when the trainer is built, long before a Spark job starts, with the
knob's name and the value received.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:  # config stays free of the rules' import; the annotation only names it
    from sparkdownpour.optimizers.base import UpdateRule


def _integer(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, received {value!r} of type "
                        f"{type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, received {value!r}")


def _positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, received {value!r} of type "
                        f"{type(value).__name__}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, received {value!r}")


def _check_loss(loss: Any) -> None:
    if not (isinstance(loss, str) and loss) and not callable(loss):
        raise TypeError(f"loss must be a Keras loss name or a callable, received {loss!r}")


DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = (None, "float32", "mixed_float16", "mixed_bfloat16")


def _check_device_knobs(config) -> None:
    """``device``, ``gpu_memory_growth`` and ``gpu_memory_limit_mb`` (see README "Running on
    GPUs"); kept in step with ``replica.devices``, which config does not import, to stay light."""
    if config.device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)} ('auto': a GPU if TensorFlow "
                         f"can use one, else the CPU), received {config.device!r}")
    if not isinstance(config.gpu_memory_growth, bool):
        raise TypeError(f"gpu_memory_growth must be true or false, received "
                        f"{config.gpu_memory_growth!r}")
    if config.gpu_memory_limit_mb is not None:
        _integer("gpu_memory_limit_mb", config.gpu_memory_limit_mb, minimum=1)


class _Loadable:
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


MODES = ("async", "sync", "easgd")
DEFAULT_LEARNING_RATE = 0.05  # for an update rule given by name

# The one default limit on a request body (a push, a vector): servers answer bigger ones 413.
# Config knobs give it in MiB (``max_request_mb``); servers take bytes.
DEFAULT_MAX_REQUEST_MB = 512.0
DEFAULT_MAX_REQUEST_BYTES = int(DEFAULT_MAX_REQUEST_MB * 2**20)


@dataclass(frozen=True)
class DownpourConfig(_Loadable):
    """Downpour SGD's knobs (DistBelief §4.1). Defaults follow the paper: Adagrad on the server,
    every replica fetching and pushing after each mini-batch."""

    SECTION: ClassVar[str] = "downpour"

    loss: str | Callable = "sparse_categorical_crossentropy"
    optimizer: str | UpdateRule = "adagrad"  # a rule's name (optimizers.RULES) or an UpdateRule
    # For a rule given by name; None: 0.05. An UpdateRule has its own, so giving both is refused.
    learning_rate: float | None = None
    batch_size: int = 32
    epochs: int = 10
    n_fetch: int = 1
    n_push: int = 1
    num_shards: int = 1
    shard_processes: bool = False     # each shard in its own (spawned) process, not a driver thread
    num_replicas: int | None = None   # None: one replica per existing partition of the DataFrame
    warmstart_steps: int = 0          # DistBelief's warm start: one replica alone for K steps
    seed: int = 0
    request_timeout: float = 60.0     # seconds before a replica gives up on one server request
    max_request_mb: float = DEFAULT_MAX_REQUEST_MB  # the server refuses bigger pushes with 413
    verbose: int = 1                  # 0: silent; 1: a progress bar
    # Reliability (see README "Failure model").
    request_retries: int = 3          # connection errors retried with exponential backoff
    skip_nonfinite: bool = False      # a replica drops a NaN/Inf gradient instead of failing
    clip_norm: float | None = None    # clip each mini-batch gradient to this global L2 norm
    divergence_factor: float = 4.0    # status flags a replica whose loss grew this much
    checkpoint_dir: str | None = None  # write the server's state here (None: no checkpoints)
    checkpoint_every_updates: int = 0  # ... every N applied updates (0: off)
    checkpoint_every_s: float = 60.0   # ... and every T seconds; always after every epoch
    checkpoint_keep: int = 3           # keep the newest K checkpoints
    # TLS for the parameter server: PEM certificate + key on the driver; replicas verify it
    # against tls_ca (default: the certificate itself, i.e. a self-signed one).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    # A fixed port and token (first line of this file) so Prometheus can scrape /metrics.
    server_port: int = 0              # 0: a free port per run
    token_file: str | None = None     # None: a fresh random token per run
    # Devices and precision on executors (README "Running on GPUs").
    device: str = "auto"              # "auto" | "cpu" | "gpu"; Spark's GPU scheduling wins
    precision: str | None = None      # None/"float32", "mixed_float16", "mixed_bfloat16"
    gpu_memory_growth: bool = True    # TensorFlow allocates GPU memory as needed
    gpu_memory_limit_mb: int | None = None  # a per-task cap on GPU memory (None: no cap)
    # Parameter server at scale (README "Shards and staleness").
    max_staleness: int | None = None  # refuse pushes staler than this many updates (None: all)
    compression: str | None = None    # pushes as "fp16", "bf16" or "topk"; fetches stay float32
    topk_ratio: float = 0.01          # share of each array a "topk" push sends
    mode: str = "async"               # "async" (Downpour), "sync" (barrier rounds) or "easgd"
    overlap: bool = False             # async: push on a background thread while the next batch computes
    easgd_tau: int = 4                # easgd: mini-batches between two elastic exchanges
    easgd_alpha: float | None = None  # easgd: moving rate; None: 0.9 / replicas (the paper's)

    def __post_init__(self) -> None:
        _check_loss(self.loss)
        _check_device_knobs(self)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)} (mixed: float32 "
                             f"weights, low-precision compute), received {self.precision!r}")
        if not isinstance(self.optimizer, str) and not hasattr(self.optimizer, "update"):
            raise TypeError(f"optimizer must be a rule name such as 'adagrad' or an UpdateRule, "
                            f"received {self.optimizer!r}")
        if isinstance(self.optimizer, str):
            if self.learning_rate is None:
                object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE)
            _positive_number("learning_rate", self.learning_rate)
        elif self.learning_rate is not None:
            raise ValueError(f"optimizer={self.optimizer!r} is a ready UpdateRule with its own "
                             f"learning rate, so learning_rate={self.learning_rate!r} would be "
                             "ignored: set it on the rule, or give the rule's name (e.g. "
                             "optimizer='adagrad') with learning_rate")
        for name in ("batch_size", "epochs", "n_fetch", "n_push", "num_shards"):
            _integer(name, getattr(self, name), minimum=1)
        if self.num_replicas is not None:
            _integer("num_replicas", self.num_replicas, minimum=1)
        for name in ("warmstart_steps", "seed", "verbose"):
            _integer(name, getattr(self, name), minimum=0)
        _positive_number("request_timeout", self.request_timeout)
        _positive_number("max_request_mb", self.max_request_mb)
        _integer("request_retries", self.request_retries, minimum=0)
        _integer("checkpoint_every_updates", self.checkpoint_every_updates, minimum=0)
        _integer("checkpoint_keep", self.checkpoint_keep, minimum=1)
        _positive_number("checkpoint_every_s", self.checkpoint_every_s)
        _positive_number("divergence_factor", self.divergence_factor)
        if self.divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1 (a loss this many times its best "
                             f"is called diverging), received {self.divergence_factor!r}")
        if self.clip_norm is not None:
            _positive_number("clip_norm", self.clip_norm)
        if not isinstance(self.skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be True or False, received "
                            f"{self.skip_nonfinite!r}")
        _integer("server_port", self.server_port, minimum=0)
        if self.server_port > 65535:
            raise ValueError(f"server_port must be in 0..65535 (0: any free port), received "
                             f"{self.server_port!r}")
        for name in ("checkpoint_dir", "tls_cert", "tls_key", "tls_ca", "token_file"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (str, Path)) and str(value)):
                raise TypeError(f"{name} must be a path (str) or None, received {value!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both (PEM files) to serve "
                             f"over TLS, or neither; received tls_cert={self.tls_cert!r}, "
                             f"tls_key={self.tls_key!r}")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError(f"tls_ca={self.tls_ca!r} is only used with tls_cert and tls_key")
        if self.max_staleness is not None:
            _integer("max_staleness", self.max_staleness, minimum=0)
        from sparkdownpour.server.compression import check_compression

        check_compression(self.compression, self.topk_ratio)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, received {self.mode!r}")
        for name in ("overlap", "shard_processes"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, received "
                                f"{getattr(self, name)!r}")
        _integer("easgd_tau", self.easgd_tau, minimum=1)
        if self.easgd_alpha is not None:
            _positive_number("easgd_alpha", self.easgd_alpha)
            if self.easgd_alpha > 1:
                raise ValueError(f"easgd_alpha is a moving rate in (0, 1], received "
                                 f"{self.easgd_alpha!r}")
        if self.mode == "easgd" and self.warmstart_steps:
            raise ValueError(f"warmstart_steps={self.warmstart_steps} pushes gradients, but in "
                             "mode='easgd' the server adds elastic differences; use "
                             "warmstart_steps=0 with easgd")
        if self.mode == "easgd" and self.max_staleness is not None:
            raise ValueError(f"max_staleness={self.max_staleness} refuses stale gradients, but in "
                             "mode='easgd' a push is an elastic difference against the center "
                             "it has just fetched, and dropping one would lose the replica's "
                             "local steps; use max_staleness=None with easgd")
        if self.mode == "sync" and (self.n_fetch, self.n_push) != (1, 1):
            raise ValueError(f"mode='sync' fetches and pushes every mini-batch: n_fetch and n_push "
                             f"must be 1, received {self.n_fetch} and {self.n_push}")



@dataclass(frozen=True)
class SandblasterConfig(_Loadable):
    """Sandblaster L-BFGS's knobs (DistBelief §4.2). The objective is the mean loss over all rows
    plus ``l2/2 * |w|^2`` over the kernels (and the biases too with ``l2_biases``), plus the
    layers' own regularizers (``model.losses``)."""

    SECTION: ClassVar[str] = "sandblaster"

    loss: str | Callable = "binary_crossentropy"
    max_iter: int = 100
    tol: float = 1e-6                 # stop when the objective's relative change is below this
    gtol: float = 1e-5                # ... or the gradient's Euclidean norm is below this
    l2: float = 0.0
    l2_biases: bool = False
    history_size: int = 10            # L-BFGS memory m
    num_shards: int = 1               # servers holding the vectors and the history
    shard_processes: bool = False     # each shard in its own process, not a driver thread
    portions_per_core: int = 4        # data portions per core, for load balancing
    aggregation_depth: int | None = None  # treeReduce depth; None: 1 for small gradients, else 2
    c1: float = 1e-4                  # strong-Wolfe sufficient decrease
    c2: float = 0.9                   # strong-Wolfe curvature
    max_line_search: int = 20         # objective evaluations per line search
    f_noise: float = 1e-7             # objective's relative rounding (float32 evaluations)
    checkpoint_dir: str | None = None  # write the current point here (None: no checkpoints)
    checkpoint_every: int = 10        # ... every N iterations, and when the fit ends
    checkpoint_keep: int = 3          # keep the newest K checkpoints
    request_timeout: float = 60.0
    max_request_mb: float = DEFAULT_MAX_REQUEST_MB
    verbose: int = 1
    # Evaluations' device (README "Running on GPUs"); they always compute in float32, since
    # the line search compares objectives to about 1e-7 (f_noise).
    device: str = "auto"
    gpu_memory_growth: bool = True
    gpu_memory_limit_mb: int | None = None

    def __post_init__(self) -> None:
        _check_loss(self.loss)
        _check_device_knobs(self)
        for name in ("max_iter", "history_size", "num_shards", "portions_per_core",
                     "max_line_search", "checkpoint_every", "checkpoint_keep"):
            _integer(name, getattr(self, name), minimum=1)
        if self.aggregation_depth is not None:
            _integer("aggregation_depth", self.aggregation_depth, minimum=1)
        _integer("verbose", self.verbose, minimum=0)
        if self.history_size > 100:
            raise ValueError(f"history_size must be <= 100, received {self.history_size} "
                             "(beyond a few tens the direction stops improving)")
        for name in ("tol", "gtol", "l2", "f_noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0 <= value < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, received {value!r}")
        for name in ("l2_biases", "shard_processes"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, received "
                                f"{getattr(self, name)!r}")
        if self.checkpoint_dir is not None and not (
                isinstance(self.checkpoint_dir, (str, Path)) and str(self.checkpoint_dir)):
            raise TypeError(f"checkpoint_dir must be a path (str) or None, received "
                            f"{self.checkpoint_dir!r}")
        if self.f_noise >= 1:
            raise ValueError(f"f_noise is a relative rounding error and must be < 1, received "
                             f"{self.f_noise!r}")
        if not (isinstance(self.c1, (int, float)) and isinstance(self.c2, (int, float))
                and 0 < self.c1 < self.c2 < 1):
            raise ValueError(f"the line search needs 0 < c1 < c2 < 1, received c1={self.c1!r}, "
                             f"c2={self.c2!r}")
        _positive_number("request_timeout", self.request_timeout)
        _positive_number("max_request_mb", self.max_request_mb)
