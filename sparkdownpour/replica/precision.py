"""Mixed precision on executors: float16/bfloat16 compute, float32 weights and gradients.

Keras' mixed policies keep every variable in float32 and compute in the low precision, so the
gradient with respect to a variable comes out in float32: replicas push float32 gradients and
the server's master weights stay float32. The loss is computed in float32 from predictions cast
back up. float16's narrow exponent range needs loss scaling (``LossScale``); bfloat16 has
float32's range and needs none.
"""

from __future__ import annotations

import contextlib

import numpy as np


def is_mixed(precision: str | None) -> bool:
    return precision in ("mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def dtype_policy(precision: str | None):
    """Keras' global dtype policy set to ``precision`` while building, then restored, so other
    models built in the same Python worker (another run's) are not affected."""
    import keras

    if not is_mixed(precision):
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(spec, precision: str | None):
    """``spec.build()`` under ``precision``.

    A builder function creates its layers under the policy. A model rebuilt from its JSON
    configuration carries each layer's own float32 policy, so its layers are cloned with the
    mixed one (input layers stay float32)."""
    import keras

    with dtype_policy(precision):
        model = spec.build()
        if is_mixed(precision) and not _all_mixed(model, precision):
            model = keras.models.clone_model(
                model, clone_function=lambda layer: layer.__class__.from_config(
                    {**layer.get_config(), "dtype": precision}))
            if not model.built:
                model.build((None, spec.num_features))
    if is_mixed(precision) and not _all_mixed(model, precision):
        raise TypeError(f"could not build the model with precision={precision!r}: layers "
                        f"{_unmixed(model, precision)} kept another dtype policy; build the "
                        "layers without an explicit dtype")
    return model


def _unmixed(model, precision: str) -> list[str]:
    return [layer.name for layer in model.layers
            if layer.weights and getattr(layer.dtype_policy, "name", None) != precision]


def _all_mixed(model, precision: str) -> bool:
    return not _unmixed(model, precision)


class LossScale:
    """Dynamic loss scaling for float16, as Keras' ``LossScaleOptimizer`` does it: the loss is
    multiplied by ``value`` before differentiation (so small gradients do not flush to zero in
    float16) and the gradients divided by it after. A non-finite gradient halves the scale and
    the mini-batch is computed again; ``period`` finite steps in a row double it."""

    def __init__(self, initial: float = 2.0 ** 15, period: int = 2000) -> None:
        self.value, self.period, self._good = float(initial), period, 0

    def update(self, grads: list[np.ndarray]) -> bool:
        """Record one step's gradients; True if they are finite (usable)."""
        if all(np.isfinite(g).all() for g in grads):
            self._good += 1
            if self._good >= self.period:
                self.value, self._good = self.value * 2.0, 0
            return True
        self.value, self._good = max(self.value / 2.0, 1.0), 0
        return False
