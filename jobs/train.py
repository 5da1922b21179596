"""Train any model spec with Downpour or Sandblaster from a TOML job file; save a PipelineModel.

Reads ``--conf-file`` (default ``conf/train.toml``): the data (path, format, columns, held-out
share, scaling), the model (kind, hidden layer sizes and activations, task), the algorithm and
all its knobs, the output path and Spark settings. Builds the Spark ML pipeline
[VectorAssembler] -> [StandardScaler] -> DownpourEstimator | SandblasterEstimator, fits it,
scores the held-out split through the fitted pipeline and saves the PipelineModel (load it with
``pyspark.ml.PipelineModel.load``) and, beside it, its training curve ``<path>-history.png``. Every
setting is checked before Spark starts; an unknown key
or a bad value is refused with its name and what is allowed. Run it with ``python jobs/train.py``
or ``spark-submit [--master ...] jobs/train.py --conf-file conf/train.toml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

DEFAULT_CONF = Path(__file__).resolve().parents[1] / "conf" / "train.toml"
SECTIONS = {
    "data": {"path", "format", "label_col", "features_col", "test_fraction", "seed", "scale"},
    "model": {"kind", "hidden", "activation", "task"},
    "train": {"algorithm"},
    "downpour": None,      # checked by DownpourConfig.from_dict, which names the allowed keys
    "sandblaster": None,   # likewise SandblasterConfig
    "output": {"path", "overwrite"},
    "spark": None,
}
ALGORITHMS = ("downpour", "sandblaster")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--conf-file", default=str(DEFAULT_CONF),
                   help="job TOML: [data], [model], [train], [downpour], [sandblaster], "
                        "[output], [spark]")
    p.add_argument("--data", help="Parquet/CSV/LIBSVM file or folder; overrides [data] path "
                   "(default: pyspark's sample_multiclass_classification_data.txt)")
    p.add_argument("--format", choices=["parquet", "csv", "libsvm"], help="[data] format")
    p.add_argument("--features-col", nargs="+", help="[data] features_col: one vector/array "
                   "column or several numeric columns")
    p.add_argument("--label-col", help="[data] label_col")
    p.add_argument("--algorithm", choices=ALGORITHMS, help="[train] algorithm")
    p.add_argument("--output", help="[output] path: where the fitted PipelineModel is saved "
                   "(empty: not saved)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--remote", help="a Spark Connect server, sc://host:port (default: the "
                   "SPARK_REMOTE variable; neither: a classic session)")
    return p.parse_args(argv)


def job_settings(args) -> dict:
    """The TOML's settings with the command line's overrides, all checked (no Spark yet)."""
    from sparkdownpour.config import DownpourConfig, SandblasterConfig
    from sparkdownpour.jobdata import FORMATS, apply_overrides, read_job_toml
    from sparkdownpour.jobmodels import check_model_spec, loss_for

    settings = read_job_toml(args.conf_file, SECTIONS)
    data, model, train = settings["data"], settings["model"], settings["train"]
    apply_overrides(args, [("data", data, "path"), ("format", data, "format"),
                           ("features_col", data, "features_col"),
                           ("label_col", data, "label_col"),
                           ("algorithm", train, "algorithm"),
                           ("output", settings["output"], "path")])
    where = f"{args.conf_file}"
    algorithm = train.setdefault("algorithm", "downpour")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{where} [train]: algorithm = {algorithm!r}; allowed: {ALGORITHMS}")
    if data.get("format") and data["format"] not in FORMATS:
        raise ValueError(f"{where} [data]: format = {data['format']!r}; allowed: {FORMATS}")
    fraction = data.setdefault("test_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or \
            not 0 < fraction < 1:
        raise ValueError(f"{where} [data]: test_fraction = {fraction!r}; give a share in (0, 1)")
    for key in ("scale",):
        if not isinstance(data.setdefault(key, True), bool):
            raise ValueError(f"{where} [data]: {key} = {data[key]!r}; give true or false")
    model.setdefault("kind", "mlp")
    model.setdefault("hidden", [64])
    model.setdefault("activation", "relu")
    model.setdefault("task", "classification")
    check_model_spec(model["kind"], model["hidden"], model["activation"], model["task"],
                     where=f"{where} [model]")
    knobs = {**settings[algorithm], "loss": loss_for(model["kind"], model["task"])}
    if args.quiet:
        knobs["verbose"] = 0
    config_class = DownpourConfig if algorithm == "downpour" else SandblasterConfig
    config_class.from_dict(knobs, where=f"{where} [{algorithm}]")  # refuse bad knobs now
    settings["knobs"] = knobs
    return settings


def build_pipeline(settings: dict, df, features, inputs: int, classes: int):
    """[VectorAssembler] -> [StandardScaler] -> the estimator, and the column it reads."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.sql import types as T

    from sparkdownpour.jobmodels import model_builder
    from sparkdownpour.ml import DownpourEstimator, SandblasterEstimator

    data, model = settings["data"], settings["model"]
    stages, column = [], features
    if isinstance(features, list):
        stages.append(VectorAssembler(inputCols=features, outputCol="features_vector"))
        column = "features_vector"
    elif data["scale"] and isinstance(df.schema[features].dataType, T.ArrayType):
        raise ValueError(f"[data] scale = true needs a vector column or numeric columns; "
                         f"{features!r} is an array column: set scale = false or store it as "
                         "a Spark ML vector")
    if data["scale"]:
        stages.append(StandardScaler(inputCol=column, outputCol="scaled_features"))
        column = "scaled_features"
    build = model_builder(model["kind"], inputs, max(classes, 2), model["hidden"],
                          model["activation"], model["task"])
    estimator_class = DownpourEstimator if settings["train"]["algorithm"] == "downpour" \
        else SandblasterEstimator
    estimator = estimator_class.from_knobs(build, settings["knobs"], featuresCol=column,
                                           labelCol=data.get("label_col", "label"))
    return Pipeline(stages=stages + [estimator])


def evaluate(predictions, label_col: str, task: str) -> dict:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator, RegressionEvaluator

    if task == "regression":
        evaluator = RegressionEvaluator(labelCol=label_col)
        return {"rmse": evaluator.evaluate(predictions, {evaluator.metricName: "rmse"}),
                "r2": evaluator.evaluate(predictions, {evaluator.metricName: "r2"})}
    evaluator = MulticlassClassificationEvaluator(labelCol=label_col)
    return {"accuracy": evaluator.evaluate(predictions, {evaluator.metricName: "accuracy"}),
            "f1": evaluator.evaluate(predictions, {evaluator.metricName: "f1"})}


def feature_count(features) -> int:
    """Features per row of a prepared row: a dense array's length, or a sparse vector's size
    (wide Spark ML vectors stay sparse: ``data.sparse``)."""
    if isinstance(features, dict) or hasattr(features, "asDict"):
        return int(features["size"])
    return len(features)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    from sparkdownpour import data as sdp_data
    from sparkdownpour.jobdata import load_frame, sample_data_path
    from sparkdownpour.session import get_or_create_session, master_of, quiet_spark_logs

    try:  # every setting is checked before Spark starts
        settings = job_settings(args)
    except (ValueError, TypeError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    data, model, output = settings["data"], settings["model"], settings["output"]
    label_col = data.get("label_col", "label")
    spark = get_or_create_session("sparkdownpour-train", settings["spark"], remote=args.remote)
    quiet_spark_logs(spark)
    started = time.perf_counter()
    path = data.get("path") or sample_data_path("sample_multiclass_classification_data.txt")
    try:
        df, features = load_frame(spark, path, data.get("format") or None, label_col,
                                  data.get("features_col"))
        train, test = df.randomSplit([1 - data["test_fraction"], data["test_fraction"]],
                                     seed=int(data.get("seed", 0)))
        first = sdp_data.prepare(train.limit(1), features, label_col).first()
        if first is None:
            raise ValueError(f"{path}: the training split is empty")
        classes = int(train.agg({label_col: "max"}).first()[0]) + 1 \
            if model["task"] == "classification" else 1
        pipeline = build_pipeline(settings, df, features, feature_count(first["features"]),
                                  classes)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"error: {exc}") from None
    fitted = pipeline.fit(train)
    trained = fitted.stages[-1]
    scores = evaluate(fitted.transform(test), label_col, model["task"])
    curve = None
    if output.get("path"):
        writer = fitted.write()
        (writer.overwrite() if output.get("overwrite", True) else writer).save(output["path"])
        if len(trained.history):  # beside the model: <path>-history.png
            curve = trained.history.plot(f"{output['path'].rstrip('/')}-history.png")
    info = trained.history.info
    print(f"data:               {path}, {info['rows']} training rows")
    print(f"algorithm:          {settings['train']['algorithm']}, model {model['kind']} "
          f"{model['hidden'] if model['kind'] == 'mlp' else ''}".rstrip())
    print(f"pipeline:           {' -> '.join(type(s).__name__ for s in fitted.stages)}")
    print(f"master:             {master_of(spark)}")
    for name, value in scores.items():
        print(f"held-out {name}:{' ' * (10 - len(name))}{value:.4f}")
    print(f"saved to:           {output.get('path') or '(not saved)'}")
    print(f"training curve:     {curve or '(not saved)'}")
    print(f"wall time:          {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
