"""The coordinator's vectors, split across shards, and the few operations L-BFGS needs on them.

Sandblaster keeps the parameter vector, the gradient, the search direction and the L-BFGS
history (``s_i``, ``y_i``) on the parameter shards, never as one central copy (DistBelief §4.2).
The coordinator only ever sees scalars: it sends each shard a short *program* of operations on
named vectors, every shard runs it on its own contiguous slice, and the partial dot products
come back and are summed.

A program is a list of JSON-able operations, run in order after the shard has stored the
slices of any vectors ``put`` with it::

    ["lincomb", dst, [[name, coef], ...]]   dst = sum(coef * name)   (dst may be a term)
    ["mul", dst, a, b]                      dst = a * b  (elementwise)
    ["dot", a, b]                           appends the slice's a . b to the answer
    ["get", name]                           appends the slice of name to the answer
    ["del", name, ...]                      forgets vectors

Slices are float64 on the shard; only the network carries float32 (``put`` and ``get``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sparkdownpour.server.layout import shard_bounds

MAX_NAME_CHARS = 64


class VectorOpError(ValueError):
    """A program asked for something impossible: an unknown vector, operation or shape."""


@dataclass
class ProgramResult:
    dots: list[float] = field(default_factory=list)
    gets: dict[str, np.ndarray] = field(default_factory=dict)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise VectorOpError(f"a vector name must be a string of 1 to {MAX_NAME_CHARS} characters, "
                            f"received {value!r:.80}")
    return value


def _coef(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise VectorOpError(f"a coefficient must be a finite number, received {value!r:.80}")
    return float(value)


class VectorShard:
    """One shard's slices of every named vector, and the interpreter of programs on them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()  # programs are atomic with respect to each other

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._vectors)

    def get(self, name: str) -> np.ndarray:
        with self._lock:
            return self._vector(name).copy()

    def _vector(self, name: Any) -> np.ndarray:
        try:
            return self._vectors[_name(name)]
        except KeyError:
            raise VectorOpError(f"no vector named {name!r} on this shard (it has "
                                f"{sorted(self._vectors)})") from None

    def run(self, program: Sequence[Any], puts: dict[str, np.ndarray] | None = None) -> ProgramResult:
        """Store ``puts``, then run ``program``; all or nothing: a bad program changes nothing."""
        with self._lock:
            staged = dict(self._vectors)  # new arrays replace entries; nothing is written in place
            for name, values in (puts or {}).items():
                array = np.asarray(values, dtype=np.float64).reshape(-1)
                if array.shape != (self.size,):
                    raise VectorOpError(f"vector {name!r} has {array.size} values, this shard "
                                        f"holds {self.size}")
                staged[_name(name)] = array
            result = ProgramResult()
            if not isinstance(program, (list, tuple)):
                raise VectorOpError(f"a program must be a list of operations, received "
                                    f"{type(program).__name__}")
            for op in program:
                self._step(op, staged, result)
            self._vectors = staged
            return result

    def _step(self, op: Any, vectors: dict[str, np.ndarray], result: ProgramResult) -> None:
        def vector(name):
            try:
                return vectors[_name(name)]
            except KeyError:
                raise VectorOpError(f"no vector named {name!r} on this shard (it has "
                                    f"{sorted(vectors)})") from None

        if not isinstance(op, (list, tuple)) or not op:
            raise VectorOpError(f"an operation must be a non-empty list, received {op!r:.80}")
        kind, args = op[0], list(op[1:])
        if kind == "lincomb" and len(args) == 2 and isinstance(args[1], (list, tuple)) and args[1]:
            total = np.zeros(self.size)
            for term in args[1]:
                if not isinstance(term, (list, tuple)) or len(term) != 2:
                    raise VectorOpError(f"a lincomb term must be [name, coef], received {term!r:.80}")
                total += _coef(term[1]) * vector(term[0])
            vectors[_name(args[0])] = total
        elif kind == "mul" and len(args) == 3:
            vectors[_name(args[0])] = vector(args[1]) * vector(args[2])
        elif kind == "dot" and len(args) == 2:
            result.dots.append(float(np.dot(vector(args[0]), vector(args[1]))))
        elif kind == "get" and len(args) == 1:
            result.gets[args[0]] = vector(args[0]).copy()
        elif kind == "del":
            for name in args:
                vectors.pop(_name(name), None)
        else:
            raise VectorOpError(f"unknown or malformed operation {op!r:.120}; known: lincomb, "
                                "mul, dot, get, del")


class VectorSpace(Protocol):
    """Where the coordinator's vectors live: run a program on every shard, sum the dots."""

    size: int

    def run(self, program: Sequence[Any], puts: dict[str, np.ndarray] | None = None
            ) -> ProgramResult: ...


def merge_results(results: Sequence[ProgramResult]) -> ProgramResult:
    """Sum the shards' partial dots and concatenate their slices, in shard order."""
    dots = [float(sum(parts)) for parts in zip(*(r.dots for r in results))]
    names = results[0].gets.keys() if results else ()
    gets = {name: np.concatenate([r.gets[name] for r in results]) for name in names}
    return ProgramResult(dots=dots, gets=gets)


def split_puts(puts: dict[str, np.ndarray] | None, bounds: Sequence[tuple[int, int]],
               size: int) -> list[dict[str, np.ndarray]]:
    """Each shard's slice of every full vector in ``puts``."""
    puts = puts or {}
    for name, values in puts.items():
        if np.shape(values) != (size,):
            raise VectorOpError(f"vector {name!r} has shape {np.shape(values)}, expected ({size},)")
    return [{name: np.asarray(values)[lo:hi] for name, values in puts.items()}
            for lo, hi in bounds]


class LocalVectors:
    """Shards in this process: the reference implementation, used by tests and single-node runs."""

    def __init__(self, size: int, num_shards: int = 1) -> None:
        self.size = size
        self.bounds = shard_bounds(size, num_shards)
        self.shards = [VectorShard(hi - lo) for lo, hi in self.bounds]

    def run(self, program, puts=None) -> ProgramResult:
        slices = split_puts(puts, self.bounds, self.size)
        return merge_results([shard.run(program, part) for shard, part in zip(self.shards, slices)])
