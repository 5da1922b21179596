"""Sandblaster's numpy evaluator for models that are one ``Dense`` layer over the features.

Logistic, softmax and least-squares regression are the models most L-BFGS fits are, and for
them a TensorFlow evaluator costs more than it computes: a cold Python worker spends about 4 s
importing TensorFlow before its first evaluation, where the loss and its gradient are two
matrix products. ``linear_form`` recognises such a model on the driver (one trainable
``Dense``, no regularizer or LoRA, float32, a string loss that goes with its activation:
sigmoid with binary cross-entropy, softmax with sparse categorical cross-entropy, linear with
mean squared error); the
executors then evaluate it with ``LinearEvaluator`` in numpy and never import TensorFlow. The
objective is the TensorFlow evaluator's (``lbfgs.stage``): losses from logits, mean over the
outputs, float32 products and float64 sums; ``tests/lbfgs/test_linear_evaluator.py`` checks
both agree. Anything else, and every task Spark gave a GPU, keeps the TensorFlow evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparkdownpour.data.sparse import CSR

# (activation, loss names) -> the loss family the evaluator computes from the logits
FAMILIES = {
    ("sigmoid", ("binary_crossentropy",)): "binary",
    ("softmax", ("sparse_categorical_crossentropy",)): "sparse",
    ("linear", ("mse", "mean_squared_error")): "squared",
}


@dataclass(frozen=True)
class LinearForm:
    """What the numpy evaluator needs of a one-``Dense`` model: plain values."""

    num_features: int
    units: int
    use_bias: bool
    family: str  # "binary" | "sparse" | "squared" (see _FAMILIES)


def linear_form(model, loss) -> LinearForm | None:
    """The model's ``LinearForm`` when the numpy evaluator computes exactly its objective,
    else ``None`` (and the TensorFlow evaluator runs)."""
    found = dense_layers(model, loss)
    if found is None or len(found[1]) != 1:
        return None
    features, (dense,) = found
    family = loss_family(getattr(dense.activation, "__name__", None), loss)
    # Sandblaster's labels are one number per row: a class index (sparse) or one output.
    if family is None or (family != "sparse" and dense.units != 1):
        return None
    return LinearForm(features, int(dense.units), bool(dense.use_bias), family)


def loss_family(activation: str | None, loss) -> str | None:
    """The family (``FAMILIES``) of an output activation and a loss named by a string."""
    return next((f for (act, names), f in FAMILIES.items()
                 if act == activation and loss in names), None)


def dense_layers(model, loss) -> tuple[int, list] | None:
    """``(features, [Dense, ...])`` when ``model`` is one 2-D input into a chain of plain
    trainable float32 ``Dense`` layers (no regularizer, LoRA, quantization or other weights)
    and ``loss`` a string; else None."""
    import keras

    try:  # a subclassed model may have no symbolic inputs at all
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):
        return None
    if not isinstance(loss, str) or len(inputs) != 1 or len(inputs[0].shape) != 2:
        return None
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or any(type(layer) is not keras.layers.Dense for layer in layers):
        return None
    if not isinstance(model, keras.Sequential) and not _is_chain(model, layers):
        return None
    plain = not model.losses and not model.non_trainable_variables and all(
        dense.trainable and dense.kernel_regularizer is None and dense.bias_regularizer is None
        and dense.activity_regularizer is None and not getattr(dense, "lora_enabled", False)
        and getattr(dense, "quantization_mode", None) is None
        and dense.compute_dtype == "float32" and dense.variable_dtype == "float32"
        for dense in layers)
    weights = sum(2 if dense.use_bias else 1 for dense in layers)
    if not plain or len(model.trainable_variables) != weights:
        return None
    return int(inputs[0].shape[1]), layers


def _is_chain(model, layers) -> bool:
    """Whether a functional model's layers run one after the other: each takes the previous
    one's output (or the input), and the last gives the model's one output."""
    try:
        previous = model.inputs[0]
        for layer in layers:
            nodes = layer._inbound_nodes
            if len(nodes) != 1 or len(nodes[0].input_tensors) != 1 or \
                    nodes[0].input_tensors[0] is not previous:
                return False
            previous = nodes[0].output_tensors[0]
        return len(model.outputs) == 1 and model.outputs[0] is previous
    except (AttributeError, IndexError, TypeError):  # Keras internals moved: not a chain
        return False


class LinearEvaluator:
    """The numpy counterpart of ``lbfgs.stage._Evaluator``: ``assign`` a flat point, then
    ``sums`` over ``(x, y)`` blocks gives ``(loss sum, gradient sum, rows)``."""

    def __init__(self, form: LinearForm, task_cpus: int) -> None:
        from threadpoolctl import threadpool_limits  # scikit-learn's: always installed

        # One BLAS thread per task CPU, as configure_threads does for TensorFlow: two tasks on
        # two cores must not each start a pool of two.
        threadpool_limits(limits=max(task_cpus, 1), user_api="blas")
        self.form = form
        self.label = "CPU:0 (numpy)"  # for the history's devices
        self.point: tuple | None = None
        self.run_id = ""
        self.kernel = np.zeros((form.num_features, form.units), np.float32)
        self.bias = np.zeros(form.units, np.float32)

    def assign(self, flat: np.ndarray) -> None:
        size = self.kernel.size
        self.kernel = np.asarray(flat[:size], np.float32).reshape(self.kernel.shape)
        if self.form.use_bias:
            self.bias = np.asarray(flat[size:size + self.form.units], np.float32)

    def sums(self, blocks, limit: int) -> tuple[float, np.ndarray | None, int]:
        """``limit`` (rows per TensorFlow call) does not apply: a block's logits are
        ``rows x units`` floats, small next to the block itself."""
        loss_sum, grad_sum, rows = 0.0, None, 0
        for x, y in blocks:
            loss, grad = self(x, y)
            loss_sum += loss
            grad_sum = grad if grad_sum is None else grad_sum + grad
            rows += len(y)
        return loss_sum, grad_sum, rows

    def __call__(self, x, y: np.ndarray) -> tuple[float, np.ndarray]:
        if isinstance(x, CSR):
            import scipy.sparse  # scikit-learn's dependency, like threadpoolctl

            x = scipy.sparse.csr_matrix((x.values, x.indices, x.indptr), shape=x.shape)
        logits = np.asarray(x @ self.kernel) + self.bias
        loss, dlogits = loss_and_dlogits(self.form.family, logits.astype(np.float64), y)
        dlogits32 = dlogits.astype(np.float32)
        parts = [np.asarray(x.T @ dlogits32, np.float64).ravel()]
        if self.form.use_bias:
            parts.append(dlogits.sum(axis=0))
        return float(loss), np.concatenate(parts)


def loss_and_dlogits(family: str, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed per-row loss over the block and its derivative by the logits ``z`` (float64).

    The loss Keras computes for these pairings: its cross-entropies take the logits under a
    softmax or sigmoid output (``_keras_logits``), not the clipped probabilities."""
    n = len(z)
    if family == "sparse":
        labels = np.asarray(y).astype(np.int64, copy=False).reshape(-1)
        shifted = z - z.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        loss = np.sum(np.log(total[:, 0]) - shifted[rows, labels])
        grad = exp / total
        grad[rows, labels] -= 1.0
        return loss, grad
    target = np.asarray(y, np.float64).reshape(n, 1)  # one output (linear_form)
    if family == "binary":  # sigmoid cross-entropy from logits, the stable form
        per_row = np.maximum(z, 0.0) - z * target + np.log1p(np.exp(-np.abs(z)))
        return per_row.sum(), _sigmoid(z) - target
    error = z - target  # "squared"
    return np.sum(error * error), 2.0 * error


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    e = np.exp(z[~positive])
    out[~positive] = e / (1.0 + e)
    return out
