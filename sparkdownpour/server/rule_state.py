"""An update rule's state (named tuples of arrays and numbers) as JSON plus a list of arrays,
so checkpoints hold it without pickling anything."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["flatten_rule_state", "unflatten_rule_state"]


def flatten_rule_state(node: Any, arrays: list) -> Any:
    """The rule state's structure as JSON (arrays replaced by their index into ``arrays``)."""
    if isinstance(node, np.ndarray):
        arrays.append(node)
        return {"array": len(arrays) - 1}
    if isinstance(node, (list, tuple)):
        return [flatten_rule_state(child, arrays) for child in node]
    if node is None or isinstance(node, (bool, int, float, str)):
        return {"value": node.item() if isinstance(node, np.generic) else node}
    if isinstance(node, np.generic):
        return {"value": node.item()}
    raise TypeError(f"cannot checkpoint rule state of type {type(node).__name__}: rule states "
                    "must be (named) tuples/lists of numpy arrays and plain numbers")


def unflatten_rule_state(template: Any, structure: Any, arrays: Sequence[np.ndarray]) -> Any:
    if isinstance(template, (list, tuple)):
        if not isinstance(structure, list) or len(structure) != len(template):
            raise ValueError("the checkpoint's rule state does not match the rule's")
        children = [unflatten_rule_state(t, s, arrays) for t, s in zip(template, structure)]
        if isinstance(template, list):
            return children
        return type(template)(*children) if hasattr(template, "_fields") else tuple(children)
    if "array" in structure:
        return np.array(arrays[structure["array"]], copy=True)
    return structure["value"]
