"""Spark ML ``Param`` declarations for the Keras estimators and their fitted models.

The shared mixins of ``pyspark.ml.param.shared`` are reused wherever Spark already has the name
(featuresCol, labelCol, predictionCol, probabilityCol, maxIter, tol, learningRate, batchSize,
seed), so a ``ParamGridBuilder`` and a ``CrossValidator`` treat these estimators like MLlib's.
A Param's default is its config field's (``DownpourConfig``, ``SandblasterConfig``): one source.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import (
    HasBatchSize,
    HasFeaturesCol,
    HasLabelCol,
    HasLearningRate,
    HasMaxIter,
    HasPredictionCol,
    HasProbabilityCol,
    HasSeed,
    HasTol,
)

from sparkdownpour.config import DownpourConfig, SandblasterConfig
from sparkdownpour.optimizers import RULES

# Each trainer's Params and the config fields they set (the estimators build the config from
# them); every other config field goes through the ``options`` Param.
DOWNPOUR_KNOBS = {"loss": "loss", "optimizer": "optimizer", "learningRate": "learning_rate",
                  "batchSize": "batch_size", "epochs": "epochs", "nFetch": "n_fetch",
                  "nPush": "n_push", "numShards": "num_shards",
                  "shardProcesses": "shard_processes", "seed": "seed"}
SANDBLASTER_KNOBS = {"loss": "loss", "maxIter": "max_iter", "tol": "tol", "gtol": "gtol",
                     "l2": "l2", "historySize": "history_size", "numShards": "num_shards",
                     "shardProcesses": "shard_processes"}
TASKS = ("multiclass", "binary", "regression")


def _positive_int(name: str):
    def convert(value: Any) -> int:
        number = TypeConverters.toInt(value)
        if number < 1:
            raise ValueError(f"{name} must be an integer >= 1, received {value!r}")
        return number
    return convert


def _push_period(value: Any) -> int | str:
    """nPush: an integer >= 1, or ``"auto"`` (``DownpourConfig.n_push``)."""
    return value if value == "auto" else _positive_int("nPush")(value)


def _non_negative_float(name: str):
    def convert(value: Any) -> float:
        number = TypeConverters.toFloat(value)
        if not 0 <= number < float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0, received {value!r}")
        return number
    return convert


def config_defaults(config_class: type, knobs: dict[str, str]) -> dict[str, Any]:
    """The Params' defaults: the fields of a default ``config_class()``, by Param name."""
    defaults = config_class()
    return {param: getattr(defaults, knob) for param, knob in knobs.items()}


def _loss(value: Any):
    """A Keras loss name, or a callable (a callable loss cannot be saved with the estimator)."""
    if callable(value) or (isinstance(value, str) and value):
        return value
    raise TypeError(f"loss must be a Keras loss name or a callable, received {value!r}")


def _options(value: Any) -> dict:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise TypeError(f"options must be a dict of config field names to values, received "
                        f"{value!r}")
    return dict(value)


def _feature_inputs(value: Any) -> list[dict]:
    """``[{"input", "column", "shape", "dtype"}, ...]`` in model input order (JSON-able)."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"featureInputs must be a list of input descriptions, received {value!r}")
    entries = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"input", "column", "shape", "dtype"}:
            raise TypeError("featureInputs entries are dicts with keys input, column, shape, "
                            f"dtype; received {entry!r}")
        entries.append({"input": str(entry["input"]), "column": str(entry["column"]),
                        "shape": [int(d) for d in entry["shape"]], "dtype": str(entry["dtype"])})
    return entries


class HasColumns(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol):
    """The columns an estimator reads and its model writes."""

    featuresCols = Param(Params._dummy(), "featuresCols",
                         "feature columns of a model with several inputs, one per input (mapped "
                         "by input name, or by position when the names are not the inputs'), or "
                         "several numeric columns; when not empty it wins over featuresCol",
                         typeConverter=TypeConverters.toListString)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setDefault(featuresCols=[])

    def setFeaturesCol(self, value: str):
        return self._set(featuresCol=value)

    def setFeaturesCols(self, value: list[str]):
        return self._set(featuresCols=value)

    def getFeaturesCols(self) -> list[str]:
        return self.getOrDefault(self.featuresCols)

    def _features_col(self) -> str | list[str]:
        """What ``fit`` reads as ``features_col``: ``featuresCols`` when set, else
        ``featuresCol``."""
        return list(self.getFeaturesCols()) or self.getFeaturesCol()

    def setLabelCol(self, value: str):
        return self._set(labelCol=value)

    def setPredictionCol(self, value: str):
        return self._set(predictionCol=value)

    def setProbabilityCol(self, value: str):
        return self._set(probabilityCol=value)


class HasTrainerCommon(HasColumns):
    """Params both trainers have: the loss, the shards and the remaining config knobs."""

    loss = Param(Params._dummy(), "loss", "Keras loss name (or a callable) the model minimises",
                 typeConverter=_loss)
    numShards = Param(Params._dummy(), "numShards", "parameter server shards",
                      typeConverter=_positive_int("numShards"))
    shardProcesses = Param(Params._dummy(), "shardProcesses",
                           "serve each shard from its own child process, not a driver thread",
                           typeConverter=TypeConverters.toBoolean)
    options = Param(Params._dummy(), "options",
                    "other fields of the trainer's config (DownpourConfig or SandblasterConfig) "
                    "as a dict, e.g. {'clip_norm': 1.0}", typeConverter=_options)

    logDir = Param(Params._dummy(), "logDir",
                   "write TensorBoard scalars of the fit here (empty: none)",
                   typeConverter=TypeConverters.toString)
    mlflow = Param(Params._dummy(), "mlflow",
                   "log params, metrics and the model to the active MLflow run",
                   typeConverter=TypeConverters.toBoolean)

    def getLogDir(self) -> str:
        return self.getOrDefault(self.logDir)

    def getMlflow(self) -> bool:
        return self.getOrDefault(self.mlflow)

    def getLoss(self):
        return self.getOrDefault(self.loss)

    def getNumShards(self) -> int:
        return self.getOrDefault(self.numShards)

    def getShardProcesses(self) -> bool:
        return self.getOrDefault(self.shardProcesses)

    def getOptions(self) -> dict:
        return self.getOrDefault(self.options)


class DownpourParams(HasTrainerCommon, HasLearningRate, HasBatchSize, HasSeed):
    """Downpour SGD's Params; names follow ``DownpourConfig`` in Spark's camelCase."""

    optimizer = Param(Params._dummy(), "optimizer",
                      f"server-side update rule, one of: {', '.join(RULES)}",
                      typeConverter=TypeConverters.toString)
    epochs = Param(Params._dummy(), "epochs", "passes over the data",
                   typeConverter=_positive_int("epochs"))
    nFetch = Param(Params._dummy(), "nFetch", "mini-batches between parameter fetches",
                   typeConverter=_positive_int("nFetch"))
    nPush = Param(Params._dummy(), "nPush", "mini-batches between gradient pushes, or 'auto' "
                  "(chosen per replica from its measured compute and communication)",
                  typeConverter=_push_period)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setDefault(**config_defaults(DownpourConfig, DOWNPOUR_KNOBS), options={},
                         logDir="", mlflow=False)

    def getOptimizer(self) -> str:
        return self.getOrDefault(self.optimizer)

    def getEpochs(self) -> int:
        return self.getOrDefault(self.epochs)

    def getNFetch(self) -> int:
        return self.getOrDefault(self.nFetch)

    def getNPush(self) -> int | str:
        return self.getOrDefault(self.nPush)


class SandblasterParams(HasTrainerCommon, HasMaxIter, HasTol):
    """Sandblaster L-BFGS's Params; names follow ``SandblasterConfig`` in camelCase."""

    l2 = Param(Params._dummy(), "l2", "L2 strength: the objective adds l2/2 * |kernels|^2",
               typeConverter=_non_negative_float("l2"))
    gtol = Param(Params._dummy(), "gtol", "stop when the gradient norm is at most this",
                 typeConverter=_non_negative_float("gtol"))
    historySize = Param(Params._dummy(), "historySize", "L-BFGS memory m",
                        typeConverter=_positive_int("historySize"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setDefault(**config_defaults(SandblasterConfig, SANDBLASTER_KNOBS), options={},
                         logDir="", mlflow=False)

    def getL2(self) -> float:
        return self.getOrDefault(self.l2)

    def getGtol(self) -> float:
        return self.getOrDefault(self.gtol)

    def getHistorySize(self) -> int:
        return self.getOrDefault(self.historySize)


class KerasModelParams(HasColumns):
    """What a fitted model needs to turn model outputs into Spark ML columns."""

    task = Param(Params._dummy(), "task",
                 "multiclass (argmax + probability vector), binary (p > 0.5 + [1-p, p]) or "
                 "regression (the single output)", typeConverter=TypeConverters.toString)
    outputActivation = Param(Params._dummy(), "outputActivation",
                             "activation applied to the model's outputs to get probabilities: "
                             "none (they already are), softmax or sigmoid (they are logits)",
                             typeConverter=TypeConverters.toString)
    numFeatures = Param(Params._dummy(), "numFeatures", "features per row the model takes",
                        typeConverter=_positive_int("numFeatures"))
    featureInputs = Param(Params._dummy(), "featureInputs",
                          "a model with several inputs: each input's name, the column the fit "
                          "fed it from, its shape and dtype, in input order (set by fit; empty "
                          "for one input)", typeConverter=_feature_inputs)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._setDefault(task="multiclass", outputActivation="none", featureInputs=[])

    def getTask(self) -> str:
        return self.getOrDefault(self.task)

    def getOutputActivation(self) -> str:
        return self.getOrDefault(self.outputActivation)

    def getNumFeatures(self) -> int:
        return self.getOrDefault(self.numFeatures)

    def getFeatureInputs(self) -> list[dict]:
        return self.getOrDefault(self.featureInputs)
