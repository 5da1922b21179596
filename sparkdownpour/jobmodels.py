"""Model specs the spark-submit jobs build from their TOML files: layer sizes and activations."""

from __future__ import annotations

from collections.abc import Sequence

MODEL_KINDS = ("logistic", "softmax", "mlp", "linear")
TASKS = ("classification", "regression")


def check_model_spec(kind: str, hidden: Sequence[int] = (64,), activation="relu",
                     task: str = "classification", where: str = "[model]") -> None:
    """Refuse a bad spec before Spark starts, naming the key and what is allowed."""
    import keras

    if kind not in MODEL_KINDS:
        raise ValueError(f"{where}: kind = {kind!r}; allowed: {MODEL_KINDS}")
    if task not in TASKS:
        raise ValueError(f"{where}: task = {task!r}; allowed: {TASKS}")
    if kind == "linear" and task != "regression" or kind in ("logistic", "softmax") and \
            task != "classification":
        raise ValueError(f"{where}: kind = {kind!r} does not do task = {task!r}")
    if not isinstance(hidden, (list, tuple)) or not hidden or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"{where}: hidden = {hidden!r}; give a list of layer sizes >= 1, "
                         "e.g. [64, 32]")
    activations = [activation] * len(hidden) if isinstance(activation, str) else activation
    if not isinstance(activations, (list, tuple)) or len(activations) != len(hidden):
        raise ValueError(f"{where}: activation = {activation!r}; give one name, or one per "
                         f"hidden layer ({len(hidden)})")
    for name in activations:
        try:
            keras.activations.get(name)
        except (ValueError, TypeError):
            raise ValueError(f"{where}: activation {name!r} is not a Keras activation (e.g. "
                             "'relu', 'tanh', 'gelu')") from None


def loss_for(kind: str, task: str = "classification") -> str:
    if task == "regression" or kind == "linear":
        return "mse"
    return "binary_crossentropy" if kind == "logistic" else "sparse_categorical_crossentropy"


def model_builder(kind: str, inputs: int, classes: int, hidden: Sequence[int] = (64,),
                  activation="relu", task: str = "classification"):
    """A zero-argument builder of the chosen model kind (shipped to executors by Spark)."""
    import keras

    if kind == "logistic" and classes > 2:
        raise ValueError(f"kind = 'logistic' needs labels 0/1, the data has {classes} classes; "
                         "use kind = 'softmax'")
    activations = [activation] * len(hidden) if isinstance(activation, str) else activation
    hidden = [int(h) for h in hidden]

    def build():
        layers = [keras.Input((inputs,))]
        if kind == "mlp":
            layers += [keras.layers.Dense(h, activation=a) for h, a in zip(hidden, activations)]
        if task == "regression" or kind == "linear":
            layers.append(keras.layers.Dense(1))
        elif kind == "logistic":
            layers.append(keras.layers.Dense(1, activation="sigmoid"))
        else:
            layers.append(keras.layers.Dense(classes, activation="softmax"))
        return keras.Sequential(layers)

    return build
