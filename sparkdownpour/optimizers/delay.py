"""Delay-aware update rules for asynchronous SGD: pure numpy, like ``rules``.

A Downpour push is computed on parameters that are ``tau`` updates old by the time it lands
(its *staleness*). These rules set ``delay_aware = True``; the server then calls

    new_params, new_state = rule.update(grads, state, params, staleness=tau, backup=b)

where ``b`` is what ``rule.backup(state, params)`` returned when the pushing replica last read
the parameters (``None`` if the server never saw that read, e.g. after a restart: the rules
then apply no compensation for that push). Backups hold references, not copies: rules never
mutate their inputs, so an old array stays valid as long as someone refers to it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from sparkdownpour.optimizers.base import (
    Arrays,
    UpdateRule,
    check_positive,
    check_unit_interval,
)

__all__ = ["DCASGD", "DelayTolerantAdagrad", "StalenessAware"]


class StalenessAware(UpdateRule):
    """Staleness-dependent learning rate (Zhang, Gupta, Lian & Liu, IJCAI 2016).

        w = w - learning_rate / max(tau, 1) * g
    """

    name = "staleness_aware"
    delay_aware = True
    takes_summed_pushes = True  # linear in the gradient

    def __init__(self, learning_rate: float = 0.01) -> None:
        super().__init__(learning_rate)

    def init(self, params: Arrays) -> None:
        return None

    def backup(self, state: None, params: Arrays) -> None:
        return None

    def update(self, grads: Arrays, state: None, params: Arrays, *, staleness: int = 0,
               backup: Any = None):
        lr = np.float32(self.learning_rate / max(int(staleness), 1))
        return [p - lr * g for p, g in zip(params, grads)], state


class DCASGDState(NamedTuple):
    mean_square: list | None  # adaptive variant only


class DCASGD(UpdateRule):
    """Delay-compensated ASGD (Zheng et al., ICML 2017): a first-order Taylor correction of the
    stale gradient towards the current parameters, with g ⊙ g standing in for the Hessian.

        g_c = g + lambda * g ⊙ g ⊙ (w - w_backup)          (w_backup: what this replica read)
        w   = w - learning_rate * g_c

    Constant variant (``adaptive=False``): lambda = ``variance_control``. Adaptive variant:
    ``ms = momentum * ms + (1 - momentum) * g ⊙ g`` and
    lambda = ``variance_control`` / sqrt(ms + epsilon), elementwise (the paper's DC-ASGD-a).
    """

    name = "dc_asgd"
    delay_aware = True

    def __init__(self, learning_rate: float = 0.01, variance_control: float | None = None,
                 adaptive: bool = False, momentum: float = 0.95, epsilon: float = 1e-7) -> None:
        super().__init__(learning_rate)
        if not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be True or False, received {adaptive!r}")
        self.adaptive = adaptive
        # The paper's settings: lambda = 0.04 (constant), lambda_0 = 2 (adaptive).
        default = 2.0 if adaptive else 0.04
        self.variance_control = check_positive(
            "variance_control", default if variance_control is None else variance_control)
        self.momentum = check_unit_interval("momentum", momentum)
        self.epsilon = check_positive("epsilon", epsilon)

    def init(self, params: Arrays) -> DCASGDState:
        if not self.adaptive:
            return DCASGDState(None)
        return DCASGDState([np.zeros(np.shape(p), np.float32) for p in params])

    def backup(self, state: DCASGDState, params: Arrays) -> list:
        return list(params)

    def update(self, grads: Arrays, state: DCASGDState, params: Arrays, *, staleness: int = 0,
               backup: Any = None):
        lr, lam = np.float32(self.learning_rate), np.float32(self.variance_control)
        mean_square = None
        if self.adaptive:
            m = np.float32(self.momentum)
            mean_square = [m * ms + (1 - m) * g * g for ms, g in zip(state.mean_square, grads)]
        new = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if backup is None:  # the read is unknown: plain ASGD for this push
                new.append(p - lr * g)
                continue
            scale = lam if mean_square is None else \
                lam / np.sqrt(mean_square[i] + np.float32(self.epsilon))
            compensated = g + scale * g * g * (p - backup[i])
            new.append(p - lr * compensated)
        return new, DCASGDState(mean_square)


class AdaRevisionState(NamedTuple):
    gradient_sum: list   # every gradient applied so far, summed
    z: list              # the delay-corrected sum of squares
    z_max: list          # its running maximum (learning rates only ever decrease)


class DelayTolerantAdagrad(UpdateRule):
    """AdaRevision (McMahan & Streeter, "Delay-Tolerant Algorithms for Asynchronous Distributed
    Online Learning", NIPS 2014), per coordinate. At the read the server keeps the gradient sum
    g_read; at the push:

        g_bck   = g_sum - g_read               (gradients applied since this replica read)
        eta_old = learning_rate / sqrt(z')
        g_sum   = g_sum + g
        z       = z + g * g + 2 * g * g_bck    (the delay's cross terms count too)
        z'      = max(z', z)
        eta     = learning_rate / sqrt(z')
        w       = w - eta * g + (eta_old - eta) * g_bck   (revise those steps to the new rate)

    Without delays (g_bck = 0) this is Adagrad. ``initial_accumulator_value`` starts z and z'.
    ``eta_old`` is the rate in force just before this push, not at the replica's read: the
    steps revised are those taken since the read, at the current rate, as in the paper's
    Update procedure (Petuum's independent AdaRevision server reads it the same way).
    """

    name = "delay_tolerant_adagrad"
    delay_aware = True

    def __init__(self, learning_rate: float = 0.05, initial_accumulator_value: float = 0.1
                 ) -> None:
        super().__init__(learning_rate)
        self.initial_accumulator_value = check_positive("initial_accumulator_value",
                                                        initial_accumulator_value)

    def init(self, params: Arrays) -> AdaRevisionState:
        zeros = [np.zeros(np.shape(p), np.float32) for p in params]
        start = [np.full(np.shape(p), self.initial_accumulator_value, np.float32) for p in params]
        return AdaRevisionState(zeros, start, [s.copy() for s in start])

    def backup(self, state: AdaRevisionState, params: Arrays) -> list:
        return list(state.gradient_sum)

    def update(self, grads: Arrays, state: AdaRevisionState, params: Arrays, *,
               staleness: int = 0, backup: Any = None):
        lr = np.float32(self.learning_rate)
        g_read = backup if backup is not None else state.gradient_sum
        new, g_sum, z, z_max = [], [], [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            g_bck = state.gradient_sum[i] - g_read[i]
            g_sum.append(state.gradient_sum[i] + g)
            z.append(state.z[i] + g * g + 2 * g * g_bck)
            z_max.append(np.maximum(state.z_max[i], z[-1]))
            eta_old = lr / np.sqrt(state.z_max[i])
            eta = lr / np.sqrt(z_max[-1])
            new.append(p - eta * g + (eta_old - eta) * g_bck)
        return new, AdaRevisionState(g_sum, z, z_max)
