"""Downpour's numpy replica for models that are a chain of ``Dense`` layers (MLPs).

A cold Spark Python worker spends about 4 s importing TensorFlow before its first mini-batch,
and on a small MLP a TensorFlow call costs more than its arithmetic (0.2 ms a step against
tens of microseconds of matrix products). For a model that is one 2-D input into plain
``Dense`` layers (``lbfgs.linear.dense_layers``: trainable, float32, no regularizer, LoRA or
state) with hidden activations numpy has (``relu``, ``tanh``, ``sigmoid``, ``linear``) and an
output that goes with a loss named by a string (softmax with sparse categorical
cross-entropy, sigmoid with binary cross-entropy over one output, linear with mean squared
error over one output), ``dense_stack`` describes it on the driver, and each replica computes
the loss and its gradient here, in numpy, without importing TensorFlow. The objective is the
TensorFlow replica's (``replica.gradient``): Keras takes those cross-entropies from the
logits, and so does ``lbfgs.linear.loss_and_dlogits``; ``tests/replica/test_dense_stack.py``
checks both agree. Dense features only (a CSR mini-batch would give a dense first-layer
gradient as wide as the hashed feature space), float32 precision only, and not on a task
Spark gave a GPU or where ``device="gpu"``: those keep TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sparkdownpour.data.batches import stack_rows
from sparkdownpour.lbfgs.linear import dense_layers, loss_and_dlogits, loss_family

__all__ = ["DenseStack", "DenseStackGradient", "dense_stack", "shipped_model"]

HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid", "linear")


@dataclass(frozen=True)
class DenseStack:
    """What the numpy replica needs of a Dense chain: plain values, shipped to executors."""

    num_features: int
    layers: tuple[tuple[int, bool, str], ...]  # (units, use_bias, activation), input to output
    family: str  # of the output and the loss: "sparse" | "binary" | "squared" (lbfgs.linear)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The trainable weights' shapes, in ``model.trainable_variables`` order."""
        shapes, width = [], self.num_features
        for units, use_bias, _ in self.layers:
            shapes.append((width, units))
            if use_bias:
                shapes.append((units,))
            width = units
        return shapes


def dense_stack(model, loss, precision: str | None = None) -> DenseStack | None:
    """The model's ``DenseStack`` when the numpy replica computes exactly its gradient."""
    if precision not in (None, "float32"):
        return None
    found = dense_layers(model, loss)
    if found is None:
        return None
    features, layers = found
    activations = [getattr(layer.activation, "__name__", None) for layer in layers]
    family = loss_family(activations[-1], loss)
    if family is None or any(a not in HIDDEN_ACTIVATIONS for a in activations[:-1]) or \
            (family != "sparse" and layers[-1].units != 1):  # one label number a row
        return None
    return DenseStack(features, tuple((int(layer.units), bool(layer.use_bias), activation)
                                      for layer, activation in zip(layers, activations)),
                      family)


def shipped_model(model, spec, precision: str | None, sparse_features: bool):
    """``(ModelSpec to ship, DenseStack or None)`` for the driver's built ``model``: a Dense
    chain travels as its JSON rather than its builder, whose unpickling alone imports Keras
    and TensorFlow on every executor (a task given a GPU builds the model from the JSON)."""
    form = None if spec.inputs or sparse_features else dense_stack(model, spec.loss, precision)
    if form is None:
        return spec, None
    try:
        return replace(spec, builder=None, config_json=model.to_json()), form
    except Exception:  # not serialisable after all: the builder travels, numpy still runs
        return spec, form


class DenseStackGradient:
    """``replica.gradient.GradientFunction``'s interface, in numpy: ``assign`` the weights,
    then ``(x, y)`` gives the mini-batch's mean loss and gradient, ``summed`` the sum over
    several mini-batches at once."""

    sums_batches = True  # no state, no added losses, one loss per row: sums are exact

    def __init__(self, form: DenseStack, task_cpus: int) -> None:
        from threadpoolctl import threadpool_limits  # scikit-learn's: always installed

        # One BLAS thread per task CPU, as configure_threads does for TensorFlow.
        threadpool_limits(limits=max(task_cpus, 1), user_api="blas")
        self.form = form
        self.weights = [np.zeros(shape, np.float32) for shape in form.shapes]

    def assign(self, arrays) -> None:
        if len(arrays) != len(self.weights):
            raise ValueError(f"the model has {len(self.weights)} trainable variables, "
                             f"received {len(arrays)} arrays")
        self.weights = [np.asarray(a, np.float32).reshape(w.shape)
                        for a, w in zip(arrays, self.weights)]

    def reset(self) -> None:
        """Nothing carries over between runs but the weights, which every run assigns."""

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
        rows = len(y)
        loss_sum, grads = self._backprop(x, y, np.float32(1.0 / rows))
        return loss_sum / rows, grads

    def summed(self, batches: list[tuple[np.ndarray, np.ndarray]]
               ) -> tuple[float, list[np.ndarray]]:
        """``(sum of the rows' losses, sum of the mini-batches' mean gradients)``."""
        x = stack_rows([b[0] for b in batches])  # one gather of the shuffled rows
        y = np.concatenate([b[1] for b in batches]) if len(batches) > 1 else batches[0][1]
        weights = np.concatenate([np.full(len(b[1]), 1.0 / len(b[1]), np.float32)
                                  for b in batches])[:, None]
        return self._backprop(x, y, weights)

    def _backprop(self, x, y, row_weights) -> tuple[float, list[np.ndarray]]:
        """Summed loss over the rows, and the gradient of the rows' losses times
        ``row_weights`` (a number, or one per row), float32 products as TensorFlow's."""
        h = np.asarray(x, np.float32)
        inputs, outputs, params, k = [], [], [], 0
        for _, use_bias, activation in self.form.layers:
            kernel, k = self.weights[k], k + 1
            bias = None
            if use_bias:
                bias, k = self.weights[k], k + 1
            params.append((kernel, bias))
            inputs.append(h)
            z = h @ kernel
            if bias is not None:
                z += bias
            h = _activate(activation, z) if len(inputs) < len(self.form.layers) else z
            outputs.append(h)
        loss, dlogits = loss_and_dlogits(self.form.family, outputs[-1].astype(np.float64), y)
        delta = (dlogits * row_weights).astype(np.float32)
        grads: list[np.ndarray] = []
        for i in range(len(params) - 1, -1, -1):
            kernel, bias = params[i]
            if bias is not None:
                grads.append(delta.sum(axis=0))
            grads.append(inputs[i].T @ delta)
            if i:
                delta = (delta @ kernel.T) * _slope(self.form.layers[i - 1][2], outputs[i - 1])
        grads.reverse()  # kernel, bias of the first layer first
        return float(loss), grads


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0.0, out=z)
    if name == "tanh":
        return np.tanh(z, out=z)
    if name == "sigmoid":
        return (0.5 * (np.tanh(0.5 * z) + 1.0)).astype(np.float32)  # no overflow in exp
    return z  # linear


def _slope(name: str, out: np.ndarray) -> np.ndarray | float:
    """The activation's derivative, from its output (as TensorFlow's gradients take it)."""
    if name == "relu":
        return (out > 0).astype(np.float32)
    if name == "tanh":
        return 1.0 - out * out
    if name == "sigmoid":
        return out * (1.0 - out)
    return 1.0
