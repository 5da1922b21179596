"""Time to 95.5% held-out accuracy on digits: single-process Keras vs Downpour on local[2].

Both train the same 64-128-10 MLP with batch 32 and are scored on the same held-out 20% after
every epoch; the clock stops at the first epoch that reaches the target. Downpour is measured
cold (first fit of the process: Python workers start and import TensorFlow) and warm (a second
fit; workers reused), and warm with ``resident=True`` (every epoch in one Spark stage). The
wire benchmark (4 MB push+fetch vs a raw loopback socket) runs last.
Prints a table and one summary line last.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def keras_time_to_accuracy(x_train, y_train, x_test, y_test, learning_rate, target, max_epochs):
    import keras

    from sparkdownpour.examples import build_digits_mlp

    model = build_digits_mlp()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                  loss="sparse_categorical_crossentropy")
    started = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        model.fit(x_train, y_train, batch_size=32, epochs=1, verbose=0, shuffle=True)
        accuracy = float(np.mean(np.argmax(model(x_test).numpy(), -1) == y_test))
        if accuracy >= target:
            return time.perf_counter() - started, epoch, accuracy
    return float("nan"), max_epochs, accuracy


def downpour_time_to_accuracy(frame, x_test, y_test, target, max_epochs, **knobs):
    from sparkdownpour import Downpour
    from sparkdownpour.examples import build_digits_mlp

    started = time.perf_counter()
    result = Downpour(build_digits_mlp, epochs=max_epochs, verbose=0, **knobs).fit(
        frame, validation_data=(x_test, y_test),
        stop_when=lambda record: record["val_accuracy"] >= target)
    seconds = time.perf_counter() - started
    last = result.history.final
    if last["val_accuracy"] < target:
        seconds = float("nan")
    return seconds, len(result.history), last["val_accuracy"], last


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.955)
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--partitions", type=int, default=2, help="Downpour replicas")
    parser.add_argument("--keras-lr", type=float, nargs="+", default=[0.01, 0.1],
                        help="Keras SGD learning rates (0.01 is Keras' default)")
    args = parser.parse_args(argv)

    from bench_wire import measure_wire

    from sparkdownpour.examples import arrays_to_frame, digits_arrays
    from sparkdownpour.session import get_or_create_session
    from sparkdownpour.transport.child_process import keep_freed_buffers

    x_train, y_train, x_test, y_test = digits_arrays()
    rows = []
    for lr in args.keras_lr:
        seconds, epochs, acc = keras_time_to_accuracy(x_train, y_train, x_test, y_test, lr,
                                                      args.target, args.max_epochs)
        rows.append((f"Keras fit, SGD lr={lr}, 1 process", seconds, epochs, acc, ""))
    spark = get_or_create_session("sparkdownpour-bench-digits")
    spark.sparkContext.setLogLevel("ERROR")
    frame = arrays_to_frame(spark, x_train, y_train, args.partitions).cache()
    frame.count()
    for label, knobs in (("cold", {}), ("warm", {}), ("warm, resident", {"resident": True})):
        seconds, epochs, acc, last = downpour_time_to_accuracy(frame, x_test, y_test, args.target,
                                                               args.max_epochs, **knobs)
        rows.append((f"Downpour adagrad lr=0.05, {args.partitions} replicas, {label}", seconds,
                     epochs, acc, f"staleness mean {last['staleness_mean_total']:.2f}"))
    wire = measure_wire()
    tuned = measure_wire() if keep_freed_buffers() else None  # process-wide, so measured after default

    print(f"\n{'run':<48} {'seconds':>8} {'epochs':>6} {'accuracy':>8}")
    for name, seconds, epochs, acc, note in rows:
        print(f"{name:<48} {seconds:8.2f} {epochs:6d} {acc:8.4f}  {note}")
    print(f"\nwire: 4 MB push+fetch in one request {wire['push_return_params_s'] * 1e3:.2f} ms "
          f"({wire['push_return_params_Bps'] / 1e6:.0f} MB/s), push then fetch "
          f"{wire['push_then_fetch_s'] * 1e3:.2f} ms, raw socket echo "
          f"{wire['socket_echo_s'] * 1e3:.2f} ms ({wire['socket_echo_Bps'] / 1e6:.0f} MB/s): "
          f"ratio {wire['ratio']:.2f} (push then fetch {wire['ratio_push_then_fetch']:.2f})")
    if tuned is not None:
        print(f"wire with glibc malloc thresholds raised (jobs/bench_wire.py --tune-malloc): "
              f"ratio {tuned['ratio']:.2f} (push then fetch {tuned['ratio_push_then_fetch']:.2f})")
    keras_default = rows[0][1]
    keras_best = min(r[1] for r in rows[:len(args.keras_lr)])
    resident, warm, cold = rows[-1][1], rows[-2][1], rows[-3][1]
    print(f"bench_digits: time to {args.target:.1%} Downpour warm {warm:.2f}s cold {cold:.2f}s "
          f"warm resident {resident:.2f}s, Keras lr=0.01 {keras_default:.2f}s best "
          f"{keras_best:.2f}s; ratio warm/keras {warm / keras_default:.2f} (vs best "
          f"{warm / keras_best:.2f}, resident vs best {resident / keras_best:.2f}), cold/keras "
          f"{cold / keras_default:.2f}; wire ratio {wire['ratio']:.2f}"
          + (f" (malloc tuned {tuned['ratio']:.2f})" if tuned is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
