"""Package names imported on first use (PEP 562), so that an executor's Python worker pays only
for the modules a replica runs.

A Spark Python worker that runs a replica imports ``sparkdownpour.replica`` and, through it, the
``__init__`` of every package on the way (``sparkdownpour``, ``sparkdownpour.data``,
``sparkdownpour.server``). Eager re-exports there would load Flask, pandas, scipy and pyspark.ml
(0.4-0.6 s of a cold worker's start on a 2-core machine) that only the driver needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the module
    that defines it; a name once looked up is kept in ``namespace`` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # later lookups do not come back here
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
