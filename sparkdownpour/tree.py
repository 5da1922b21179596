"""Model state as a tree of numpy arrays, flattened to the list the wire carries.

Supported trees: a numpy array (leaf), a dict (keys in sorted order), a list or tuple, any
nesting of those, objects with ``get_weights``/``set_weights`` (a keras.Model among them),
whose weights list is the subtree, and plain objects whose state is numpy arrays held in their
attributes, directly or inside plain lists and dicts (DeepDist's gensim-style models, e.g.
``model.syn0``): those attributes, by name, are the subtree; any other attribute (a vocabulary,
a learning rate) is not state and is left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _has_weights(obj) -> bool:
    return callable(getattr(obj, "get_weights", None)) and callable(getattr(obj, "set_weights", None))


def _is_array_state(value) -> bool:
    """A numeric numpy array, or a non-empty plain list/tuple/dict made only of such."""
    if isinstance(value, np.ndarray):
        return np.issubdtype(value.dtype, np.number)
    if isinstance(value, dict):
        return bool(value) and all(_is_array_state(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_is_array_state(v) for v in value)
    return False


def state_attributes(obj) -> list[str]:
    """The names of ``obj``'s attributes that hold its numpy state, sorted."""
    return sorted(name for name, value in vars(obj).items() if _is_array_state(value))


def flatten(tree) -> tuple[list[np.ndarray], Any]:
    """Leaves in a fixed order, and a structure description that ``unflatten`` reverses."""
    leaves: list[np.ndarray] = []
    return leaves, _flatten(tree, leaves, "model")


def _flatten(node, leaves: list, path: str):
    if isinstance(node, dict):
        keys = sorted(node)
        return ("dict", keys, [_flatten(node[k], leaves, f"{path}[{k!r}]") for k in keys])
    if isinstance(node, (list, tuple)):
        return ("list" if isinstance(node, list) else "tuple",
                [_flatten(v, leaves, f"{path}[{i}]") for i, v in enumerate(node)])
    if _has_weights(node):
        return ("weights", _flatten(list(node.get_weights()), leaves, f"{path}.get_weights()"))
    names = state_attributes(node) if hasattr(node, "__dict__") and \
        not isinstance(node, (type, np.ndarray, np.generic)) else []
    if names:
        return ("object", names, [_flatten(getattr(node, n), leaves, f"{path}.{n}")
                                  for n in names])
    if isinstance(node, (np.ndarray, np.generic, float, int)) and not isinstance(node, bool):
        array = np.asarray(node)
        if not np.issubdtype(array.dtype, np.number):
            raise TypeError(f"{path} is an array of {array.dtype}; model state must be numeric")
        leaves.append(np.array(array, dtype=np.float32))  # a copy: the caller may mutate its own
        return ("leaf", array.shape)
    raise TypeError(f"{path} is a {type(node).__name__}; model state must be numpy arrays in "
                    "dicts/lists, an object with get_weights/set_weights, or an object whose "
                    "attributes hold numpy arrays")


def unflatten(structure, leaves) -> Any:
    """A new tree of the given structure; weights objects come back as their weights list,
    plain objects as a dict of their state attributes (``update["syn0"]``)."""
    it = iter(leaves)
    tree = _unflatten(structure, it)
    if next(it, None) is not None:
        raise ValueError("more arrays than the model structure holds")
    return tree


def _unflatten(structure, it):
    kind = structure[0]
    if kind in ("dict", "object"):
        return {k: _unflatten(s, it) for k, s in zip(structure[1], structure[2])}
    if kind in ("list", "tuple"):
        items = [_unflatten(s, it) for s in structure[1]]
        return items if kind == "list" else tuple(items)
    if kind == "weights":
        return _unflatten(structure[1], it)
    try:
        return np.asarray(next(it)).reshape(structure[1])
    except StopIteration:
        raise ValueError("fewer arrays than the model structure holds") from None


def assign(tree, structure, leaves) -> Any:
    """Load ``leaves`` into ``tree``: weights objects in place, containers rebuilt. Returns the tree."""
    if structure[0] == "weights":
        tree.set_weights(unflatten(structure[1], leaves))
        return tree
    if structure[0] == "object":  # attributes updated in place: the caller's object stays
        for name, value in unflatten(structure, leaves).items():
            setattr(tree, name, _assign_value(getattr(tree, name, None), value))
        return tree
    if structure[0] == "dict" and isinstance(tree, dict):
        tree.update(unflatten(structure, leaves))
        return tree
    if structure[0] == "list" and isinstance(tree, list):
        tree[:] = unflatten(structure, leaves)
        return tree
    return unflatten(structure, leaves)


def _assign_value(current, value):
    """``value`` loaded into ``current`` where it can be (same-shape arrays keep their dtype
    and identity, containers are refilled), else ``value`` itself."""
    if isinstance(current, np.ndarray) and isinstance(value, np.ndarray) and \
            current.shape == value.shape and current.flags.writeable:
        current[...] = value
        return current
    if isinstance(current, dict) and isinstance(value, dict):
        for key, item in value.items():
            current[key] = _assign_value(current.get(key), item)
        return current
    if isinstance(current, list) and isinstance(value, (list, tuple)) and \
            len(current) == len(value):
        current[:] = [_assign_value(old, new) for old, new in zip(current, value)]
        return current
    return value
