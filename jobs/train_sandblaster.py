"""Train a model with Sandblaster L-BFGS on Spark; print the objective, stop reason and accuracy.

With no arguments: binary logistic regression (L2 1e-3) on the LIBSVM sample that ships with
pyspark (``data/mllib/sample_binary_classification_data.txt``), 80/20 split, on an embedded local
Spark. ``--data PATH`` trains on your Parquet, CSV or LIBSVM file. Settings come from
``--conf-file`` (default ``conf/sandblaster.toml``) and are overridden by the options below.
Run it with ``python jobs/train_sandblaster.py`` or ``spark-submit [--master ...]
jobs/train_sandblaster.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

DEFAULT_CONF = Path(__file__).resolve().parents[1] / "conf" / "sandblaster.toml"
SECTIONS = {
    "data": {"path", "format", "label_col", "features_col", "test_fraction", "seed"},
    "model": {"kind", "hidden", "activation"},
    "sandblaster": None,   # checked by SandblasterConfig.from_dict, which names allowed keys
    "spark": None,
}
MODEL_KINDS = ("logistic", "softmax", "mlp")  # classification kinds of jobmodels


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--conf-file", default=str(DEFAULT_CONF),
                   help="job TOML with [data], [model], [sandblaster] and [spark] sections")
    p.add_argument("--data", help="Parquet/CSV/LIBSVM file or folder (default: pyspark's sample)")
    p.add_argument("--format", choices=["parquet", "csv", "libsvm"], help="file format")
    p.add_argument("--features-col", nargs="+", help="feature column(s)")
    p.add_argument("--label-col", help="label column")
    p.add_argument("--model", choices=MODEL_KINDS, help="logistic, softmax or mlp")
    p.add_argument("--max-iter", type=int, help="L-BFGS iterations at most")
    p.add_argument("--l2", type=float, help="L2 strength (kernels only)")
    p.add_argument("--tol", type=float, help="stop at this relative objective change")
    p.add_argument("--history-size", type=int, help="L-BFGS memory m")
    p.add_argument("--num-shards", type=int, help="parameter shards holding the vectors")
    p.add_argument("--portions", type=int, help="data portions (default: portions_per_core x "
                   "cores)")
    p.add_argument("--checkpoint-dir", help="checkpoint the current point here (every "
                   "checkpoint_every iterations and at the end)")
    p.add_argument("--resume", action="store_true", help="go on from the newest matching "
                   "checkpoint in the checkpoint directory (after a lost driver)")
    p.add_argument("--save-model", help="write the trained Keras model to this .keras file")
    p.add_argument("--plot", help="save the objective and gradient norm per iteration as a PNG "
                   "here (default with --save-model: beside it, <model>-history.png)")
    p.add_argument("--log-dir", help="write TensorBoard scalars per iteration here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--remote", help="a Spark Connect server, sc://host:port (default: the "
                   "SPARK_REMOTE variable; neither: a classic session)")
    return p.parse_args(argv)


def job_settings(args) -> dict:
    from sparkdownpour.jobdata import apply_overrides, read_job_toml

    settings = read_job_toml(args.conf_file, SECTIONS)
    data, model, algo = settings["data"], settings["model"], settings["sandblaster"]
    apply_overrides(args, [("data", data, "path"), ("format", data, "format"),
                           ("features_col", data, "features_col"),
                           ("label_col", data, "label_col"), ("model", model, "kind"),
                           ("max_iter", algo, "max_iter"), ("l2", algo, "l2"),
                           ("tol", algo, "tol"), ("history_size", algo, "history_size"),
                           ("num_shards", algo, "num_shards"),
                           ("checkpoint_dir", algo, "checkpoint_dir")])
    if args.quiet:
        algo["verbose"] = 0
    kind = model.get("kind", "logistic")
    if kind not in MODEL_KINDS:
        raise ValueError(f"{args.conf_file} [model]: kind = {kind!r}; allowed: {MODEL_KINDS}")
    return settings


def history_png(model_path: str) -> str:
    """``models/m.keras`` -> ``models/m-history.png``: the training curve beside the model."""
    base = model_path[:-len(".keras")] if model_path.endswith(".keras") else model_path
    return f"{base.rstrip('/')}-history.png"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    import keras
    import numpy as np

    from sparkdownpour import Sandblaster, SandblasterConfig
    from sparkdownpour.jobdata import held_out_arrays, load_frame, sample_data_path
    from sparkdownpour.jobmodels import loss_for, model_builder
    from sparkdownpour.session import get_or_create_session, master_of, quiet_spark_logs

    try:  # every setting is checked before Spark starts
        settings = job_settings(args)
        data, model = settings["data"], settings["model"]
        kind = model.get("kind", "logistic")
        loss = loss_for(kind)
        config = SandblasterConfig.from_dict({**settings["sandblaster"], "loss": loss},
                                             where=f"{args.conf_file} [sandblaster]")
        if args.resume and config.checkpoint_dir is None:
            raise ValueError("--resume needs --checkpoint-dir (or checkpoint_dir in "
                             "[sandblaster]): where the earlier run wrote its checkpoints")
        spark = get_or_create_session("sparkdownpour-train-sandblaster", settings["spark"],
                                      remote=args.remote)
        quiet_spark_logs(spark)
        started = time.perf_counter()
        path = data.get("path") or sample_data_path("sample_binary_classification_data.txt")
        df, features = load_frame(spark, path, data.get("format") or None,
                                  data.get("label_col", "label"), data.get("features_col"))
        seed = int(data.get("seed", 0))
        fraction = float(data.get("test_fraction", 0.2))
        train, test = df.randomSplit([1 - fraction, fraction], seed=seed)
        x_test, y_test = held_out_arrays(test, features, data.get("label_col", "label"))
        # The seed fixes the model's initial weights too, so the same job file gives the same
        # starting point (and, with the same portions, the same iterations) run after run.
        keras.utils.set_random_seed(seed)
        classes = int(max(train.agg({data.get("label_col", "label"): "max"}).first()[0],
                          y_test.max() if len(y_test) else 0)) + 1
        build = model_builder(kind, x_test.shape[1], max(classes, 2),
                              model.get("hidden", [64]), model.get("activation", "relu"))
    except (ValueError, TypeError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    result = Sandblaster(build, config).fit(train, features, data.get("label_col", "label"),
                                            num_portions=args.portions,
                                            resume=args.resume, log_dir=args.log_dir)
    info = result.history.info
    probabilities = result.model(x_test).numpy()
    predicted = (probabilities[:, 0] > 0.5) if kind == "logistic" else probabilities.argmax(1)
    accuracy = float(np.mean(predicted == y_test)) if len(y_test) else float("nan")
    if args.save_model:
        result.model.save(args.save_model)
    plot = args.plot or (args.save_model and history_png(args.save_model))
    if plot and len(result.history):  # no iteration (x0 already optimal): nothing to draw
        result.history.plot(plot)
    print(f"data:               {path}, {info['rows']} training rows, {len(y_test)} held out")
    print(f"model:              {kind}, {info['features']} features, loss {loss}, l2 {config.l2}")
    print(f"portions:           {info['partitions']} on {master_of(spark)}, "
          f"{config.num_shards} shard(s), {info['evaluation']} evaluation")
    if "resumed_from" in info:
        print(f"resumed from:       {info['resumed_from']['path']} (after iteration "
              f"{info['resumed_from']['iterations_done']})")
    print(f"iterations:         {info['iterations']}")
    print(f"evaluations:        {info['evaluations']}")
    print(f"stop reason:        {info['stop_reason']} ({info['message']})")
    print(f"final objective:    {info['objective']:.8g}")
    print(f"gradient norm:      {info['grad_norm']:.3g}")
    print(f"wall time:          {time.perf_counter() - started:.1f} s")
    print(f"held-out accuracy:  {accuracy:.4f}")
    if plot and len(result.history):
        print(f"training curve:     {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
