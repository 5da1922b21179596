"""SGD, momentum, Adagrad and Adam as pure numpy update rules (see ``base.UpdateRule``)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sparkdownpour.optimizers.base import (
    Arrays,
    UpdateRule,
    check_positive,
    check_unit_interval,
    zeros_like,
)


class SGD(UpdateRule):
    """Plain gradient descent.

        w = w - learning_rate * g
    """

    name = "sgd"
    takes_summed_pushes = True

    def __init__(self, learning_rate: float = 0.01) -> None:
        super().__init__(learning_rate)

    def init(self, params: Arrays) -> None:
        return None

    def update(self, grads: Arrays, state: None, params: Arrays):
        return [_descend(p, g, self.learning_rate) for p, g in zip(params, grads)], state


def _descend(p: np.ndarray, direction: np.ndarray, lr: float, out=None) -> np.ndarray:
    """``p - lr * direction`` into one new (or the given scratch) array.

    The rules run on the server for every push; writing into one buffer instead of allocating a
    temporary per operator keeps large models from spending their time in the allocator.
    """
    out = np.multiply(direction, np.float32(-lr), out=out)
    out += p
    return out


class MomentumState(NamedTuple):
    velocity: list


class Momentum(UpdateRule):
    """Gradient descent with (optionally Nesterov) momentum, as keras.optimizers.SGD writes it.

        v = momentum * v - learning_rate * g
        w = w + v                                   (plain)
        w = w + momentum * v - learning_rate * g    (nesterov)
    """

    name = "momentum"
    takes_summed_pushes = True

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.9, nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum = check_unit_interval("momentum", momentum)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov must be True or False, received {nesterov!r}")
        self.nesterov = nesterov

    def init(self, params: Arrays) -> MomentumState:
        return MomentumState(zeros_like(params))

    def update(self, grads: Arrays, state: MomentumState, params: Arrays):
        lr, mu = np.float32(self.learning_rate), np.float32(self.momentum)
        velocity = [mu * v - lr * g for v, g in zip(state.velocity, grads)]
        if self.nesterov:
            new = [p + mu * v - lr * g for p, v, g in zip(params, velocity, grads)]
        else:
            new = [p + v for p, v in zip(params, velocity)]
        return new, MomentumState(velocity)


class AdagradState(NamedTuple):
    accumulator: list


class Adagrad(UpdateRule):
    """Adagrad, DistBelief's server-side default: each parameter gets its own learning rate.

        a = a + g * g
        w = w - learning_rate * g / (sqrt(a) + epsilon)

    ``initial_accumulator_value`` > 0 keeps the first steps from being huge (keras uses 0.1).
    """

    name = "adagrad"
    takes_summed_pushes = True

    def __init__(self, learning_rate: float = 0.05, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        if initial_accumulator_value != 0:
            initial_accumulator_value = check_positive(
                "initial_accumulator_value", initial_accumulator_value)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = check_positive("epsilon", epsilon)

    def init(self, params: Arrays) -> AdagradState:
        return AdagradState([np.full(np.shape(p), self.initial_accumulator_value, np.float32)
                             for p in params])

    counts_batches = True

    def update(self, grads: Arrays, state: AdagradState, params: Arrays, *, batches: int = 1):
        """``batches=k``: ``grads`` sum k mini-batches' gradients. k equal gradients g would add
        ``k g**2`` to the accumulator and step by ``k lr g / sqrt(a)``; with the sum
        ``G = k g`` that is ``G**2 / k`` and ``lr G / sqrt(a)``: the accumulator takes
        ``G**2 / k``. Summed as it is, it would count the k mini-batches as one step."""
        lr, eps = np.float32(self.learning_rate), np.float32(self.epsilon)
        acc, new = [], []
        for p, g, a_old in zip(params, grads, state.accumulator):
            # Explicit outputs: on a 0-d array a ufunc returns a numpy scalar, which cannot
            # be written into in place below.
            a = np.square(g, out=np.empty(np.shape(g), np.float32))
            if batches != 1:
                a *= np.float32(1.0 / batches)
            a += a_old
            acc.append(a)
            step = np.sqrt(a, out=np.empty_like(a))
            step += eps
            np.divide(g, step, out=step)
            new.append(_descend(p, step, lr, out=step))
        return new, AdagradState(acc)


class AdamState(NamedTuple):
    count: int
    m: list
    v: list


class Adam(UpdateRule):
    """Adam (Kingma & Ba, 2015) with bias correction.

        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        w = w - learning_rate * m_hat / (sqrt(v_hat) + epsilon)
    """

    name = "adam"
    takes_summed_pushes = True

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1 = check_unit_interval("beta_1", beta_1)
        self.beta_2 = check_unit_interval("beta_2", beta_2)
        self.epsilon = check_positive("epsilon", epsilon)

    def init(self, params: Arrays) -> AdamState:
        return AdamState(0, zeros_like(params), zeros_like(params))

    counts_batches = True

    def update(self, grads: Arrays, state: AdamState, params: Arrays, *, batches: int = 1):
        """``batches=k``: ``grads`` sum k mini-batches' gradients; the moments take their mean
        and the step is k times one step's (k steps on equal gradients, near the optimum
        of the bias-corrected moments). Summed as it is, Adam would count them as one step."""
        if batches != 1:
            grads = [g * np.float32(1.0 / batches) for g in grads]
        b1, b2 = np.float32(self.beta_1), np.float32(self.beta_2)
        count = state.count + 1
        m = [b1 * m_ + (1 - b1) * g for m_, g in zip(state.m, grads)]
        v = [b2 * v_ + (1 - b2) * g * g for v_, g in zip(state.v, grads)]
        # Fold both bias corrections into one step size, as the paper's final form does.
        step = np.float32(batches * self.learning_rate * np.sqrt(1 - self.beta_2 ** count)
                          / (1 - self.beta_1 ** count))
        eps = np.float32(self.epsilon)
        new = [p - step * m_ / (np.sqrt(v_) + eps) for p, m_, v_ in zip(params, m, v)]
        return new, AdamState(count, m, v)


class ElasticAverage(UpdateRule):
    """The center variable's rule in elastic averaging (``mode="easgd"``): a push is the
    elastic difference ``alpha * (x_replica - x_center)`` and is added as it is.

        w = w + d

    The replicas run the configured rule locally; ``learning_rate`` is unused (kept at 1).
    """

    name = "elastic_average"

    def __init__(self, learning_rate: float = 1.0) -> None:
        super().__init__(learning_rate)

    def init(self, params: Arrays) -> None:
        return None

    def update(self, grads: Arrays, state: None, params: Arrays):
        return [p + d for p, d in zip(params, grads)], state
