"""Server-side update rules: pure numpy ``init``/``update`` pairs, looked up by name with ``get``.

No Spark, Flask or TensorFlow import here: the rules run inside the master model server and in
tests on their own.
"""

from __future__ import annotations

import functools

from sparkdownpour.optimizers.base import UpdateRule
from sparkdownpour.optimizers.delay import DCASGD, DelayTolerantAdagrad, StalenessAware
from sparkdownpour.optimizers.rules import SGD, Adagrad, Adam, ElasticAverage, Momentum

RULES: dict = {cls.name: cls for cls in (SGD, Momentum, Adagrad, Adam, StalenessAware, DCASGD,
                                         DelayTolerantAdagrad)}
# The adaptive DC-ASGD by name, so a TOML file or a string knob can select it.
RULES["dc_asgd_adaptive"] = functools.partial(DCASGD, adaptive=True)


def get(identifier: str | UpdateRule, **kwargs) -> UpdateRule:
    """Return an update rule from its name (``"adagrad"``) or pass an ``UpdateRule`` through.

    ``kwargs`` are the rule's hyper-parameters, e.g. ``get("adam", learning_rate=1e-3)``.
    """
    if isinstance(identifier, UpdateRule):
        if kwargs:
            raise ValueError(f"hyper-parameters {sorted(kwargs)} given with a ready rule "
                             f"{identifier!r}; set them on the rule itself")
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"optimizer must be a name ({', '.join(RULES)}) or an UpdateRule, "
                        f"received {identifier!r} of type {type(identifier).__name__}")
    key = identifier.strip().lower()
    if key not in RULES:
        raise ValueError(f"unknown optimizer {identifier!r}; choose one of {', '.join(RULES)}")
    return RULES[key](**kwargs)


__all__ = ["SGD", "Momentum", "Adagrad", "Adam", "ElasticAverage", "StalenessAware", "DCASGD",
           "DelayTolerantAdagrad", "UpdateRule", "RULES", "get"]
