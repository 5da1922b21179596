"""``DownpourEstimator`` and ``SandblasterEstimator``: the trainers as Spark ML Estimators.

Each ``fit`` trains a fresh copy of the model, so a ``CrossValidator`` fold or a second ``fit``
never starts from weights another fit trained: a ``keras.Model`` given is cloned with its
current weights, a builder is called anew.

An unfitted estimator saves like any Spark ML stage (``est.save(path)``, inside an unfitted
``Pipeline`` or a ``CrossValidator``): its Params plus its model as ``.keras`` bytes
(``persistence``). A builder function cannot be saved without pickle, so it is saved as a model
it builds; the loaded estimator's ``model`` is that ``keras.Model``, cloned for each fit.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml import Estimator
from pyspark.ml.util import MLReadable, MLReader, MLWritable, MLWriter

from sparkdownpour.config import DownpourConfig, SandblasterConfig
from sparkdownpour.keras_model import (
    BINARY_LOSSES,
    CATEGORICAL_LOSSES,
    SPARSE_LOSSES,
    loss_name,
    output_units,
)
from sparkdownpour.ml.models import DownpourModel, KerasPredictionModel, SandblasterModel
from sparkdownpour.ml.params import (
    DOWNPOUR_KNOBS,
    SANDBLASTER_KNOBS,
    DownpourParams,
    SandblasterParams,
)
from sparkdownpour.ml.persistence import KerasParamsReader, KerasParamsWriter
from sparkdownpour.ml.predict import keras_from_bytes, keras_to_bytes

MULTICLASS_LOSSES = SPARSE_LOSSES + CATEGORICAL_LOSSES


class _KerasEstimator(Estimator, MLReadable, MLWritable):
    """Keyword-only Params, a model (keras.Model or zero-argument builder), config building."""

    _config_class: type = DownpourConfig
    _model_class: type = KerasPredictionModel
    _param_to_knob: dict[str, str] = {}

    def __init__(self, model=None, **params: Any) -> None:
        super().__init__()
        self.model = model
        self.setParams(**params)

    @classmethod
    def from_knobs(cls, model, knobs: dict, **params: Any):
        """An estimator from the trainer config's snake_case knobs (e.g. a job's TOML section):
        Params where the estimator has one, the rest in ``options``."""
        by_knob = {knob: param for param, knob in cls._param_to_knob.items()}
        as_params = {by_knob[key]: value for key, value in knobs.items() if key in by_knob}
        options = {key: value for key, value in knobs.items() if key not in by_knob}
        return cls(model=model, options=options, **as_params, **params)

    def setParams(self, **params: Any):
        """Set any Params by name (Spark's camelCase names)."""
        unknown = sorted(name for name in params if not self.hasParam(name))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no Param(s) {unknown}; it has "
                            f"{sorted(p.name for p in self.params)}")
        self._set(**{name: value for name, value in params.items() if value is not None})
        self._config()  # refuse a bad value now, not when the fit starts
        return self

    def _config(self, extra=None):
        """The trainer's config from these Params (and ``options``); bad values name the Param."""
        knobs = {knob: self.getOrDefault(param) for param, knob in self._param_to_knob.items()}
        options = self.getOrDefault(self.options)
        clash = sorted(set(options) & set(knobs))
        if clash:
            raise ValueError(f"options sets {clash}, which are Params of {type(self).__name__}; "
                             f"set the Params instead")
        allowed = {f for f in self._config_class.__dataclass_fields__}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"options has unknown key(s) {unknown}; allowed: "
                             f"{sorted(allowed - set(knobs))}")
        try:
            config = self._config_class(**{**knobs, **options,
                                           "verbose": options.get("verbose", 0)})
            self._check(config)
            return config
        except (TypeError, ValueError) as exc:
            names = {knob: param for param, knob in self._param_to_knob.items() if param != knob}
            hint = "".join(f"; {knob} is the Param {param}" for knob, param in names.items()
                           if knob in str(exc))
            raise type(exc)(f"{type(self).__name__}: {exc}{hint}") from exc

    def _check(self, config) -> None:
        """Checks the trainer makes beyond the config's own."""

    def _fresh_model(self):
        """An untrained copy (or a builder) for one fit, and a built instance to inspect."""
        import keras

        model = self.model
        if isinstance(model, keras.Model):
            try:
                clone = keras.models.clone_model(model)
                if model.built and not clone.built:
                    clone.build(model.inputs[0].shape)
                clone.set_weights(model.get_weights())
            except Exception as exc:  # subclassed models without get_config, ...
                raise TypeError(f"{type(self).__name__} cannot copy this keras.Model "
                                f"({type(exc).__name__}: {exc}); pass model= a zero-argument "
                                "function that builds it instead") from exc
            return clone, clone
        if callable(model):
            return model, model()
        raise TypeError(f"{type(self).__name__} needs model= a keras.Model or a zero-argument "
                        f"function that builds one, received {model!r}")

    def _fit(self, dataset):
        config = self._config()
        model, inspected = self._fresh_model()
        task, activation = output_semantics(inspected, config.loss)
        inputs = len(getattr(inspected, "inputs", None) or [])
        if inputs > 1 and not self.getFeaturesCols():
            raise ValueError(f"{type(self).__name__}: the model has {inputs} inputs "
                             f"{[t.name for t in inspected.inputs]}; set featuresCols to one "
                             "column per input (by input name or position)")
        result = self._train(model, config, dataset)
        fitted = self._model_class(keras_to_bytes(result.model), result.history)
        fitted._set(task=task, outputActivation=activation,
                    numFeatures=int(result.history.info["features"]),
                    featureInputs=feature_inputs(inspected, self._features_col()))
        return self._copyValues(fitted)

    def _train(self, model, config, dataset):
        raise NotImplementedError

    def write(self) -> MLWriter:
        import keras

        source = "keras.Model" if isinstance(self.model, keras.Model) else "builder"
        return KerasParamsWriter(self, self._model_bytes, lambda: {"modelSource": source})

    @classmethod
    def read(cls) -> MLReader:
        return KerasParamsReader(_KerasEstimator,
                                 lambda found, payload, _: found(model=keras_from_bytes(payload)),
                                 "estimator")

    def _model_bytes(self) -> bytes:
        """The model to save: a copy of the ``keras.Model`` given, or one the builder builds."""
        return keras_to_bytes(self._fresh_model()[1])

    def _tracking(self) -> dict:
        return {"log_dir": self.getLogDir() or None, "mlflow": self.getMlflow()}


class DownpourEstimator(_KerasEstimator, DownpourParams):
    """Downpour SGD as a Spark ML Estimator; ``fit`` returns a ``DownpourModel``.

    >>> DownpourEstimator(model=build, loss="sparse_categorical_crossentropy",
    ...                   featuresCol="scaled", labelCol="label", epochs=30)
    """

    _config_class = DownpourConfig
    _model_class = DownpourModel
    _param_to_knob = DOWNPOUR_KNOBS

    def _check(self, config) -> None:
        from sparkdownpour import optimizers

        if isinstance(config.optimizer, str):
            optimizers.get(config.optimizer, learning_rate=config.learning_rate)

    def _train(self, model, config, dataset):
        from sparkdownpour.downpour import Downpour

        return Downpour(model, config).fit(dataset, self._features_col(), self.getLabelCol(),
                                           **self._tracking())


class SandblasterEstimator(_KerasEstimator, SandblasterParams):
    """Sandblaster L-BFGS as a Spark ML Estimator; ``fit`` returns a ``SandblasterModel``."""

    _config_class = SandblasterConfig
    _model_class = SandblasterModel
    _param_to_knob = SANDBLASTER_KNOBS

    def _train(self, model, config, dataset):
        from sparkdownpour.sandblaster import Sandblaster

        return Sandblaster(model, config).fit(dataset, self._features_col(),
                                              self.getLabelCol(), **self._tracking())


def feature_inputs(model, features_col) -> list[dict]:
    """The input mapping a fit of a several-input ``model`` used (``featureInputs``), or ``[]``:
    the same slots as the trainer's (``inputs.slots_for``), as JSON-able dicts."""
    from sparkdownpour.inputs import model_inputs, slots_for

    if isinstance(features_col, str) or len(model_inputs(model)) <= 1:
        return []
    return [{"input": slot.input_name, "column": slot.column, "shape": list(slot.shape),
             "dtype": slot.dtype} for slot in slots_for(model, features_col)]


def output_semantics(model, loss) -> tuple[str, str]:
    """``(task, activation to apply)`` for turning this model's outputs into Spark ML columns."""
    name = loss_name(loss)
    units = output_units(model)
    last = getattr(getattr(model.layers[-1], "activation", None), "__name__", None) \
        if model.layers else None
    from_logits = bool(getattr(loss, "from_logits", False))
    if name in MULTICLASS_LOSSES:
        return "multiclass", "softmax" if from_logits or last != "softmax" else "none"
    if name in BINARY_LOSSES:
        if units != 1:
            raise ValueError(f"loss {name!r} with {units} output units is multi-label; the "
                             "Spark ML estimators predict one label: give the model one "
                             "sigmoid unit, or use sparse_categorical_crossentropy")
        return "binary", "sigmoid" if from_logits or last != "sigmoid" else "none"
    if units != 1:
        raise ValueError(f"a regression model (loss {name!r}) must have one output unit for "
                         f"the prediction column; it has {units}")
    return "regression", "none"
