"""Models with several inputs: which column feeds which ``keras.Input``, checked before training.

``fit(df, features_col=[...])`` with a model of several inputs maps each named column to the
model input of the same name, or, when the names do not all match, to the input at the same
position. A column may be a Spark ML vector, a numeric array or a number (one value); its
values per row must fill its input's shape (``(None, 5)``: 5 values, ``(None, 8, 8, 1)``: 64).

On the wire and in every mini-batch the columns travel as one flat float32 vector, their
values concatenated in input order (``data.prepare`` concatenates them). On the replicas and in
Sandblaster's evaluators the model is wrapped (``flat_model``): one input of the total width,
cut back into the user's inputs (reshaped, and cast to an integer input's dtype, e.g. token
ids) in front of the user's model. The wrapper adds no variables, so the parameters, the
server and the checkpoints are those of the user's model, and ``fit`` returns the user's model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["InputSlot", "assign_columns", "check_inputs", "flat_model", "model_inputs", "slots_for",
           "unwrap"]


@dataclass(frozen=True)
class InputSlot:
    """One model input and the column that feeds it."""

    input_name: str
    column: str
    shape: tuple[int, ...]  # without the batch dimension
    dtype: str

    @property
    def width(self) -> int:
        return math.prod(self.shape)


def model_inputs(model) -> list:
    """The model's symbolic inputs (building it first if needed)."""
    return list(getattr(model, "inputs", None) or [])


def _input_name(tensor) -> str:
    name = getattr(tensor, "name", "") or ""
    return name.split(":")[0]


def _columns_for(names: Sequence[str], features_col: Sequence[str]) -> list[str]:
    """The column feeding each input: by name when the columns are exactly the inputs' names,
    else by position."""
    columns = list(features_col)
    if len(columns) != len(names):
        raise ValueError(f"the model has {len(names)} inputs {list(names)} but features_col "
                         f"names {len(columns)} columns {columns}; give one column per input")
    return list(names) if set(names) == set(columns) else columns


def slots_for(model, features_col: Sequence[str]) -> tuple[InputSlot, ...]:
    """The slots of a model with several inputs fed from ``features_col`` (no Spark job)."""
    inputs = model_inputs(model)
    names = [_input_name(t) for t in inputs]
    columns = _columns_for(names, features_col)
    slots = []
    for position, tensor in enumerate(inputs):
        name = names[position]
        column = columns[position]
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise ValueError(f"model input {name!r} has shape {tuple(tensor.shape)}; every "
                             "dimension but the batch one must be known to feed it from "
                             f"column {column!r}")
        slots.append(InputSlot(name, column, tuple(int(d) for d in shape),
                               str(tensor.dtype)))
    return tuple(slots)


def check_inputs(model, df, features_col) -> tuple[InputSlot, ...]:
    """The slots of a model with several inputs (``()`` for one input), after refusing, before
    any training job, a column that is missing, of the wrong type or of the wrong width for its
    input (one small aggregation over the array and vector columns)."""
    import keras
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from sparkdownpour.data.columns import NUMERIC_TYPES, _field

    if isinstance(model, keras.Model) and len(model_inputs(model)) <= 1:
        return ()
    if not isinstance(model, keras.Model):  # a builder: build once to look at its inputs
        model = model()
        if len(model_inputs(model)) <= 1:
            return ()
    if isinstance(features_col, str):
        raise ValueError(f"the model has {len(model_inputs(model))} inputs "
                         f"{[_input_name(t) for t in model_inputs(model)]}; pass features_col "
                         "as a list with one column per input (by input name or position)")
    slots = slots_for(model, features_col)
    sizes = []
    for slot in slots:
        dtype = _field(df, slot.column, "features").dataType
        if isinstance(dtype, NUMERIC_TYPES):
            if slot.width != 1:
                raise ValueError(f"column {slot.column!r} holds one number per row but model "
                                 f"input {slot.input_name!r} takes shape {slot.shape} "
                                 f"({slot.width} values)")
        elif isinstance(dtype, VectorUDT):
            sizes.append((slot, F.size(vector_to_array(F.col(slot.column)))))
        elif isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, NUMERIC_TYPES):
            sizes.append((slot, F.size(F.col(slot.column))))
        else:
            raise TypeError(f"column {slot.column!r} (for model input {slot.input_name!r}) has "
                            f"type {dtype.simpleString()}; expected a Spark ML vector, an array "
                            "of numbers or a number")
    if sizes:
        row = df.agg(*[agg(size).alias(f"{kind}{i}") for i, (_, size) in enumerate(sizes)
                       for kind, agg in (("lo", F.min), ("hi", F.max))]).first()
        for i, (slot, _) in enumerate(sizes):
            lo, hi = row[f"lo{i}"], row[f"hi{i}"]
            if (lo, hi) != (slot.width, slot.width) and lo is not None:
                got = lo if lo == hi else f"{lo} to {hi}"
                raise ValueError(f"column {slot.column!r} holds {got} values per row but model "
                                 f"input {slot.input_name!r} takes shape {slot.shape} "
                                 f"({slot.width} values)")
    return slots


def assign_columns(slots: Sequence[InputSlot],
                   features_col: Sequence[str]) -> tuple[InputSlot, ...]:
    """The same inputs fed from ``features_col``, mapped as ``fit`` maps them (by input name,
    or by position when the names are not exactly the inputs')."""
    columns = _columns_for([slot.input_name for slot in slots], features_col)
    return tuple(InputSlot(slot.input_name, column, slot.shape, slot.dtype)
                 for slot, column in zip(slots, columns))


def flat_model(model, slots: Sequence[InputSlot]):
    """``model`` behind one flat input of the slots' total width (no variables of its own)."""
    import keras

    total = sum(slot.width for slot in slots)
    flat = keras.Input((total,), name="sparkdownpour_features")
    parts, start = [], 0
    for slot in slots:
        part = keras.ops.reshape(flat[:, start:start + slot.width], (-1, *slot.shape))
        if "int" in slot.dtype:
            part = keras.ops.cast(keras.ops.round(part), slot.dtype)
        parts.append(part)
        start += slot.width
    return keras.Model(flat, model(parts), name=f"{model.name}_flat")


def unwrap(flat):
    """The user's model inside ``flat_model``'s wrapper."""
    import keras

    inner = [layer for layer in flat.layers if isinstance(layer, keras.Model)]
    return inner[-1] if inner else flat
