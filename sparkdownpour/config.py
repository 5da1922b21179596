"""Frozen dataclasses for every knob, validated on construction, loadable from TOML.

A bad value is refused when the trainer is built, long before a Spark job starts, with the
knob's name and the value received.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sparkdownpour.config_checks import (  # noqa: F401  (DEVICES, PRECISIONS: part of config's API)
    DEVICES,
    PRECISIONS,
    Loadable,
    check_device_knobs,
    check_loss,
    check_periods,
    check_server_host,
    integer,
    positive_number,
)

if TYPE_CHECKING:  # config stays free of the rules' import; the annotation only names it
    from sparkdownpour.optimizers.base import UpdateRule


MODES = ("async", "sync", "easgd")
EVALUATIONS = ("resident", "stages")  # Sandblaster
DEFAULT_LEARNING_RATE = 0.05  # for an update rule given by name

# The one default limit on a request body (a push, a vector): servers answer bigger ones 413.
# Config knobs give it in MiB (``max_request_mb``); servers take bytes.
DEFAULT_MAX_REQUEST_MB = 512.0
DEFAULT_MAX_REQUEST_BYTES = int(DEFAULT_MAX_REQUEST_MB * 2**20)


@dataclass(frozen=True)
class DownpourConfig(Loadable):
    """Downpour SGD's knobs (DistBelief §4.1). Defaults follow the paper: Adagrad on the server,
    every replica fetching and pushing after each mini-batch."""

    SECTION: ClassVar[str] = "downpour"

    loss: str | Callable = "sparse_categorical_crossentropy"
    """Keras loss name or callable."""
    optimizer: str | UpdateRule = "adagrad"
    """Server-side update rule: ``sgd``, ``momentum``, ``adagrad``, ``adam``, the delay-aware
    ``staleness_aware``, ``dc_asgd``, ``dc_asgd_adaptive``, ``delay_tolerant_adagrad``, or an
    ``UpdateRule`` (e.g. ``optimizers.get("dc_asgd", variance_control=0.1)``).
    """
    learning_rate: float | None = None
    """The learning rate of a rule given by name; ``None``: 0.05. An ``UpdateRule`` has its own,
    so giving both is refused."""
    batch_size: int = 32
    """Mini-batch rows per gradient."""
    epochs: int = 10
    """Passes over the data; each is one Spark job (unless ``resident``)."""
    n_fetch: int = 1
    """Fetch the parameters every N mini-batches."""
    n_push: int | str = "auto"
    """Push the accumulated gradient every N mini-batches. ``"auto"`` (async): each replica times
    its first 20 steps, then pushes (and fetches) every 1-16 mini-batches, keeping communication
    under 1/8 of compute, at least 256 pushes an epoch (so 1 on small data, and 1 if n_fetch>1)."""
    num_shards: int = 1
    """Independent server shards, each holding a contiguous range of the flat parameter vector
    (own store, lock, rule state, step counter, port). Keep each under about 28 MB (7M
    parameters): bigger frames are page-faulted afresh on every request (see Benchmarks);
    ``fit`` warns and names a shard count that fits.
    """
    shard_processes: bool = False     # each shard in its own (spawned) process, not a driver thread
    """Serve each shard (the one store too, with ``num_shards = 1``) from its own spawned child
    process instead of a thread of the driver, so updates to different shards run on
    different cores; the dashboard is then served by the driver
    (``history.info["dashboard_server"]``) and each shard's status reports its ``pid``. On 2
    cores: the server's throughput rises to 0.50-0.53 of a raw socket, training epochs are
    6-10% shorter, about the noise (see Benchmarks).
    """
    num_replicas: int | None = None
    """N replicas: a frame in N partitions as it is, any other repartitioned. ``None``: one per
    task slot: more partitions (a shuffle's 200) merged without a shuffle, rows in fewer than
    the slots spread by one shuffle (``history.info["replicas_chosen"]`` says which)."""
    warmstart_steps: int = 0
    """DistBelief's warm start: one replica trains alone for K steps first."""
    seed: int = 0
    """Per-epoch, per-partition shuffling."""
    request_timeout: float = 60.0     # seconds before a replica gives up on one server request
    """Seconds after which a replica gives up on one server request."""
    max_request_mb: float = DEFAULT_MAX_REQUEST_MB
    """Bigger pushes are refused with HTTP 413."""
    verbose: int = 1                  # 0: silent; 1: a progress bar
    """0 silences the progress bar (and the printed dashboard link)."""
    request_retries: int = 3          # connection errors retried with exponential backoff
    """Connection errors are retried with exponential backoff, then ``ParameterServerError``."""
    skip_nonfinite: bool = False      # a replica drops a NaN/Inf gradient instead of failing
    """A replica drops a NaN/Inf gradient (counted) instead of failing its task."""
    clip_norm: float | None = None    # clip each mini-batch gradient to this global L2 norm
    """Clip each mini-batch gradient to this global L2 norm."""
    divergence_factor: float = 4.0
    """Status lists a replica whose smoothed loss grew this many times its best."""
    checkpoint_dir: str | None = None  # write the server's state here (None: no checkpoints)
    """Write checkpoints here; ``fit(..., resume=True)`` continues from the newest."""
    checkpoint_every_updates: int = 0  # ... every N applied updates (0: off)
    """Checkpoint every N applied updates (0: off); checkpoints are also written after every
    epoch.
    """
    checkpoint_every_s: float = 60.0   # ... and every T seconds; always after every epoch
    """Checkpoint every T seconds (and after every epoch)."""
    checkpoint_keep: int = 3
    """Newest checkpoints kept."""
    tls_cert: str | None = None
    """Serve over TLS with this PEM certificate (with ``tls_key``)."""
    tls_key: str | None = None
    """The PEM key for ``tls_cert``."""
    tls_ca: str | None = None
    """Replicas verify the server against this PEM (default: the certificate itself)."""
    server_port: int = 0              # 0: a free port per run
    """The master model server's port; 0: a free one per run (fix it to scrape ``/metrics``)."""
    server_host: str | None = None
    """The address executors dial to reach the servers, which bind to it (an address of this
    machine); ``None``: loopback for local masters and a local Spark Connect server, the
    client's route address towards a remote Connect server, else ``spark.driver.host``.
    Checked by a probe before the first epoch (docs/connect.md)."""
    token_file: str | None = None     # None: a fresh random token per run
    """Read the run's bearer token from this file's first line (>= 16 characters); ``None``: a
    random one per run.
    """
    device: str = "auto"              # "auto" | "cpu" | "gpu"; Spark's GPU scheduling wins
    """Where replicas compute: ``"auto"`` (a GPU if TensorFlow can use one, else the CPU),
    ``"cpu"``, ``"gpu"`` (fail if none); Spark's GPU scheduling decides *which* GPU (see
    Running on GPUs).
    """
    precision: str | None = None      # None/"float32", "mixed_float16", "mixed_bfloat16"
    """``"mixed_float16"`` (with dynamic loss scaling) or ``"mixed_bfloat16"``: replicas compute
    in 16 bits; weights, gradients pushed and the server's master copy stay float32.
    ``None``/``"float32"``: all float32.
    """
    gpu_memory_growth: bool = True    # TensorFlow allocates GPU memory as needed
    """TensorFlow takes GPU memory as it needs it, not all of it at start."""
    gpu_memory_limit_mb: int | None = None  # a per-task cap on GPU memory (None: no cap)
    """Cap each task's GPU memory (e.g. for fractional GPU amounts); replaces growth."""
    max_staleness: int | None = None  # refuse pushes staler than this many updates (None: all)
    """A push staler than this many updates (on its shard) is refused and counted
    (``stale_refused``); its mini-batches count as consumed and the replica refetches.
    """
    compression: str | None = None    # pushes as "fp16", "bf16" or "topk"; fetches stay float32
    """Pushes as ``"fp16"``, ``"bf16"`` or ``"topk"`` (error feedback on the replica); fetches
    stay float32.
    """
    topk_ratio: float = 0.01          # share of each array a "topk" push sends
    """With ``"topk"``, the share of each array sent per push."""
    mode: str = "async"               # "async" (Downpour), "sync" (barrier rounds) or "easgd"
    """``"async"``: Downpour; ``"sync"``: synchronous SGD on a Spark barrier stage (one averaged
    update per round; needs ``n_fetch = n_push = 1`` and a free task slot per partition);
    ``"easgd"``: elastic averaging.
    """
    overlap: bool = False             # async: push on a background thread while the next batch computes
    """Async: each push (answered with the fresh parameters) runs on a background thread while
    the next mini-batch computes on the parameters at hand; one push in flight, so staleness
    grows by about one.
    """
    resident: bool = False
    """Async: every epoch in one long Spark stage whose tasks (one per task slot) keep their
    partitions, not one Spark job per epoch; same mini-batches and exactly-once updates."""
    replica_nice: int | None = None   # None: 5 where executors share the driver's machine, else 0
    """Lower the replicas' compute threads' CPU priority by this much (Linux ``nice``, 0-19) so
    the server answers the moment a request comes; ``None``: 5 on a ``local``/``local-cluster``
    master (also behind a Connect server on this machine), where replicas and server share
    the cores, 0 elsewhere. Per task thread only.
    """
    easgd_tau: int = 4                # easgd: mini-batches between two elastic exchanges
    """easgd: mini-batches between exchanges."""
    easgd_alpha: float | None = None  # easgd: moving rate; None: 0.9 / replicas (the paper's)
    """easgd: moving rate (``None``: 0.9 / replicas). easgd refuses ``warmstart_steps``."""

    def __post_init__(self) -> None:
        check_loss(self.loss)
        check_device_knobs(self)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)} (mixed: float32 "
                             f"weights, low-precision compute), received {self.precision!r}")
        if not isinstance(self.optimizer, str) and not hasattr(self.optimizer, "update"):
            raise TypeError(f"optimizer must be a rule name such as 'adagrad' or an UpdateRule, "
                            f"received {self.optimizer!r}")
        if isinstance(self.optimizer, str):
            if self.learning_rate is None:
                object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE)
            positive_number("learning_rate", self.learning_rate)
        elif self.learning_rate is not None:
            raise ValueError(f"optimizer={self.optimizer!r} is a ready UpdateRule with its own "
                             f"learning rate, so learning_rate={self.learning_rate!r} would be "
                             "ignored: set it on the rule, or give the rule's name (e.g. "
                             "optimizer='adagrad') with learning_rate")
        check_periods(self)
        for name in ("batch_size", "epochs", "num_shards"):
            integer(name, getattr(self, name), minimum=1)
        if self.num_replicas is not None:
            integer("num_replicas", self.num_replicas, minimum=1)
        for name in ("warmstart_steps", "seed", "verbose"):
            integer(name, getattr(self, name), minimum=0)
        positive_number("request_timeout", self.request_timeout)
        positive_number("max_request_mb", self.max_request_mb)
        integer("request_retries", self.request_retries, minimum=0)
        integer("checkpoint_every_updates", self.checkpoint_every_updates, minimum=0)
        integer("checkpoint_keep", self.checkpoint_keep, minimum=1)
        positive_number("checkpoint_every_s", self.checkpoint_every_s)
        positive_number("divergence_factor", self.divergence_factor)
        if self.divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1 (a loss this many times its best "
                             f"is called diverging), received {self.divergence_factor!r}")
        if self.clip_norm is not None:
            positive_number("clip_norm", self.clip_norm)
        if not isinstance(self.skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite must be True or False, received "
                            f"{self.skip_nonfinite!r}")
        integer("server_port", self.server_port, minimum=0)
        check_server_host(self.server_host)
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
            integer("max_staleness", self.max_staleness, minimum=0)
        from sparkdownpour.server.compression import check_compression

        check_compression(self.compression, self.topk_ratio)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, received {self.mode!r}")
        for name in ("overlap", "shard_processes", "resident"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, received "
                                f"{getattr(self, name)!r}")
        integer("easgd_tau", self.easgd_tau, minimum=1)
        if self.replica_nice is not None:
            integer("replica_nice", self.replica_nice, minimum=0, maximum=19)
        if self.easgd_alpha is not None:
            positive_number("easgd_alpha", self.easgd_alpha)
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
        if self.resident and self.mode != "async":
            raise ValueError(f"resident=True keeps async replicas across epochs; mode="
                             f"{self.mode!r} runs one Spark job per epoch: drop one of them")



@dataclass(frozen=True)
class SandblasterConfig(Loadable):
    """Sandblaster L-BFGS's knobs (DistBelief §4.2). The objective is the mean loss over all rows
    plus ``l2/2 * |w|^2`` over the kernels (and the biases too with ``l2_biases``), plus the
    layers' own regularizers (``model.losses``)."""

    SECTION: ClassVar[str] = "sandblaster"

    loss: str | Callable = "binary_crossentropy"
    """Keras loss; with a sigmoid/softmax last layer the loss is computed from logits (exact
    where probabilities round to 0 or 1).
    """
    max_iter: int = 100
    """L-BFGS iterations at most (stop reason ``max_iter``)."""
    tol: float = 1e-6                 # stop when the objective's relative change is below this
    """Stop when the objective's relative change is at most this (``tol``); a ``tol`` below
    ``f_noise`` turns this test off (gtol and max_iter stop).
    """
    gtol: float = 1e-5                # ... or the gradient's Euclidean norm is below this
    """Stop when the gradient's Euclidean norm is at most this (``gtol``)."""
    l2: float = 0.0
    """The objective adds ``l2/2 * sum(kernel**2)`` (biases too with ``l2_biases``), as MLlib's
    ``regParam`` does.
    """
    l2_biases: bool = False
    """Apply ``l2`` to the biases too."""
    history_size: int = 10            # L-BFGS memory m
    """L-BFGS memory m (at most 100)."""
    num_shards: int = 1               # servers holding the vectors and the history
    """Servers holding the parameter vector, gradient, direction and history, each a contiguous
    slice.
    """
    shard_processes: bool = False     # each shard in its own process, not a driver thread
    """Run each shard in its own child process (spawned), so no process, the driver included,
    holds the whole vector or history; the status route reports each shard's pid.
    """
    evaluation: str = "resident"      # or "stages": a Spark stage per evaluation
    """``"resident"``: one barrier stage, a task per task slot, keeps its portion of the data in
    its Python worker for the whole fit and evaluates each point the coordinator posts
    (``lbfgs.resident``). ``"stages"``: each evaluation is a Spark stage over ``portions_per_core``
    x parallelism portions (load balancing, speculation); also used where a barrier stage cannot
    run (dynamic allocation) or ``fit(num_portions=)`` exceeds the task slots."""
    portions_per_core: int = 4        # data portions per core, for load balancing
    """With ``evaluation="stages"``: data portions = this x ``spark.default.parallelism``,
    unless ``fit(num_portions=)``."""
    aggregation_depth: int | None = None  # 1: sum on the driver; None: 1 for small gradients
    """Sum depth: 1 adds the portions' results on the driver, deeper first in groups of about
    ``portions ** (1 / depth)`` on the executors; ``None``: 1 while portions x gradient bytes
    <= 64 MiB, else 2."""
    c1: float = 1e-4                  # strong-Wolfe sufficient decrease
    """Strong-Wolfe sufficient-decrease constant."""
    c2: float = 0.9                   # strong-Wolfe curvature
    """Strong-Wolfe curvature constant."""
    max_line_search: int = 20         # objective evaluations per line search
    """Evaluations per line search; on failure the history is reset and the search retried from
    steepest descent (then stop reason ``line_search``).
    """
    f_noise: float = 1e-7             # objective's relative rounding (float32 evaluations)
    """The objective's relative rounding (evaluations run in float32): a step whose objective
    rises by at most this, relatively, is accepted on its slope alone (Hager-Zhang
    approximate Wolfe), and a failed search that promised less than this stops with reason
    ``precision``; 0 keeps exact Armijo.
    """
    checkpoint_dir: str | None = None  # write the current point here (None: no checkpoints)
    """Write the current point here (``None``: no checkpoints); ``fit(resume=True)`` starts from
    the newest matching one (see Failure model).
    """
    checkpoint_every: int = 10        # ... every N iterations, and when the fit ends
    """Checkpoint every N iterations, and when the fit ends."""
    checkpoint_keep: int = 3          # keep the newest K checkpoints
    """Newest checkpoints kept."""
    request_timeout: float = 60.0
    """As for Downpour: seconds before a request to a shard is given up."""
    max_request_mb: float = DEFAULT_MAX_REQUEST_MB
    """As for Downpour: bigger requests are refused with HTTP 413."""
    verbose: int = 1
    """0 silences the progress bar; the bar shows iterations, objective and gradient norm."""
    server_host: str | None = None
    """As for Downpour: the address executors dial to reach the vector shards."""
    # Evaluations' device (README "Running on GPUs"); they always compute in float32, since
    # the line search compares objectives to about 1e-7 (f_noise).
    device: str = "auto"
    """As for Downpour, for the evaluation tasks; evaluations always compute in float32 (no
    ``precision`` knob: the line search compares objectives to about 1e-7).
    """
    gpu_memory_growth: bool = True
    """As for Downpour, for the evaluation tasks."""
    gpu_memory_limit_mb: int | None = None
    """As for Downpour, for the evaluation tasks."""

    def __post_init__(self) -> None:
        check_loss(self.loss)
        check_device_knobs(self)
        for name in ("max_iter", "history_size", "num_shards", "portions_per_core",
                     "max_line_search", "checkpoint_every", "checkpoint_keep"):
            integer(name, getattr(self, name), minimum=1)
        if self.aggregation_depth is not None:
            integer("aggregation_depth", self.aggregation_depth, minimum=1)
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation must be one of {', '.join(EVALUATIONS)}, received "
                             f"{self.evaluation!r}")
        integer("verbose", self.verbose, minimum=0)
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
        positive_number("request_timeout", self.request_timeout)
        positive_number("max_request_mb", self.max_request_mb)
        check_server_host(self.server_host)
