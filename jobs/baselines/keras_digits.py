"""The baseline of ``jobs/bench_end_to_end.py``: a plain single-process Keras script training
the digits MLP (64-128-10, batch 32, SGD) until its held-out accuracy reaches the target.

It is what a user would write without Spark, with the same data split and model as
``jobs/train_digits.py``; the benchmark times it as a fresh process, imports included.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target-accuracy", type=float, default=0.955)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--max-epochs", type=int, default=50)
    args = p.parse_args()
    import keras
    import numpy as np

    from sparkdownpour.examples import build_digits_mlp, digits_arrays

    x_train, y_train, x_test, y_test = digits_arrays()
    model = build_digits_mlp()
    model.compile(optimizer=keras.optimizers.SGD(args.learning_rate),
                  loss="sparse_categorical_crossentropy")
    started = time.perf_counter()
    accuracy, epoch = 0.0, 0
    while epoch < args.max_epochs:
        epoch += 1
        model.fit(x_train, y_train, batch_size=32, epochs=1, verbose=0, shuffle=True)
        accuracy = float(np.mean(np.argmax(model(x_test).numpy(), -1) == y_test))
        if accuracy >= args.target_accuracy:
            break
    print(f"epochs:             {epoch}")
    print(f"training time:      {time.perf_counter() - started:.2f} s")
    print(f"held-out accuracy:  {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
