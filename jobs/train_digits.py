"""Train an MLP with Downpour SGD on Spark; print held-out accuracy and the run's statistics.

With no arguments: scikit-learn's bundled handwritten digits (64-128-10 MLP, 80/20 split,
random_state=0) on an embedded local Spark. ``--data PATH`` trains on your Parquet, CSV or LIBSVM
file instead (label column ``label``; features from ``--features-col`` or every other numeric
column). Run it with ``python jobs/train_digits.py`` or ``spark-submit [--master ...]
jobs/train_digits.py``: the master and every Spark setting come from spark-submit.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", help="Parquet/CSV/LIBSVM file or folder (default: bundled digits)")
    p.add_argument("--format", choices=["parquet", "csv", "libsvm"],
                   help="file format (default: from the extension)")
    p.add_argument("--features-col", nargs="+", help="feature column(s) (vector, array or "
                   "numeric); default: 'features' if present, else every numeric non-label column")
    p.add_argument("--label-col", default="label", help="integer class label column")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of --data")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=0.05)
    p.add_argument("--optimizer", default="adagrad", help="server-side update rule")
    p.add_argument("--n-fetch", type=int, default=1, help="fetch parameters every N mini-batches")
    p.add_argument("--n-push", type=lambda v: v if v == "auto" else int(v), default="auto",
                   help="push gradients every N mini-batches, or 'auto' (the default)")
    p.add_argument("--partitions", type=int, default=4,
                   help="data partitions (Downpour trains one replica per task slot)")
    p.add_argument("--hidden", type=int, default=128, help="hidden units of the MLP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="save the training curve (loss, val_loss, val_accuracy per "
                   "epoch) as a PNG here")
    p.add_argument("--log-dir", help="write TensorBoard scalars per epoch here")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="where replicas compute (Spark's GPU scheduling picks which GPU)")
    p.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   default="float32", help="replicas' compute precision (weights stay float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--target-accuracy", type=float, help="stop after the first epoch whose "
                   "held-out accuracy reaches this (default: train every epoch)")
    p.add_argument("--remote", help="a Spark Connect server, sc://host:port (default: the "
                   "SPARK_REMOTE variable; neither: a classic session)")
    return p.parse_args(argv)


def load_user_data(spark, args):
    from sparkdownpour.jobdata import load_frame

    try:
        df, features = load_frame(spark, args.data, args.format, args.label_col, args.features_col)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    train, test = df.randomSplit([1 - args.test_fraction, args.test_fraction], seed=args.seed)
    return train, test, features


def _target_reached(target: float | None):
    if target is None:
        return None
    return lambda record: record["val_accuracy"] >= target


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    from sparkdownpour import Downpour
    from sparkdownpour.examples import arrays_to_frame, build_mlp, digits_arrays
    from sparkdownpour.jobdata import held_out_arrays
    from sparkdownpour.session import get_or_create_session, master_of, quiet_spark_logs

    spark = get_or_create_session("sparkdownpour-train-digits", remote=args.remote)
    quiet_spark_logs(spark)
    started = time.perf_counter()
    if args.data:
        train, test, features = load_user_data(spark, args)
        x_test, y_test = held_out_arrays(test, features, args.label_col)
        classes = int(max(train.agg({args.label_col: "max"}).first()[0], y_test.max())) + 1
        train = train.repartition(args.partitions)
    else:
        x_train, y_train, x_test, y_test = digits_arrays()
        train, features, classes = arrays_to_frame(spark, x_train, y_train, args.partitions), \
            "features", 10
    inputs = x_test.shape[1]
    hidden, seed = args.hidden, args.seed
    result = Downpour(lambda: build_mlp(inputs, hidden, classes, seed),
                      loss="sparse_categorical_crossentropy", optimizer=args.optimizer,
                      learning_rate=args.learning_rate, batch_size=args.batch_size,
                      epochs=args.epochs, n_fetch=args.n_fetch, n_push=args.n_push, seed=seed,
                      device=args.device, precision=args.precision,
                      verbose=0 if args.quiet else 1,
                      ).fit(train, features, args.label_col, validation_data=(x_test, y_test),
                            log_dir=args.log_dir, stop_when=_target_reached(args.target_accuracy))
    if args.plot:
        result.history.plot(args.plot)
    last = result.history.final
    print(f"data:               {args.data or 'scikit-learn digits (bundled)'}, "
          f"{result.history.info['rows']} training rows, {len(y_test)} held out")
    print(f"replicas:           {result.history.info['partitions']} on {master_of(spark)}")
    print(f"devices:            {'; '.join(result.history.info['devices'])}, "
          f"precision {args.precision}")
    print(f"epochs:             {len(result.history)}")
    print(f"updates applied:    {last['updates_total']}")
    print(f"staleness:          mean {last['staleness_mean_total']:.2f}, "
          f"max {last['staleness_max_total']}")
    print(f"final train loss:   {last['loss']:.4f}")
    print(f"wall time:          {time.perf_counter() - started:.1f} s")
    print(f"held-out accuracy:  {last['val_accuracy']:.4f}")
    if args.plot:
        print(f"training curve:     {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
