"""A deterministic delayed-gradient simulator: asynchronous SGD on a quadratic, in one process.

Every step one replica reads the parameters and computes a gradient; that gradient reaches the
"server" exactly ``delay`` updates later (so every applied push has staleness ``delay``), the
way Downpour's pushes land with ``delay + 1`` replicas in a round-robin. The rule gets the
staleness and the backup it took at the read, as ``ParameterStore`` gives them. Seeded noise,
scaled by sqrt(h), makes the gradient's second moment a multiple of the Hessian near the
optimum, the regime DC-ASGD's g ⊙ g approximation is built for (Zheng et al., §3).
"""

from collections import deque

import numpy as np

DIM = 20
CURVATURE = np.linspace(0.1, 1.0, DIM).astype(np.float32)  # h: condition number 10
START = np.full(DIM, 3.0, np.float32)


def loss(w: np.ndarray) -> float:
    return float(0.5 * np.sum(CURVATURE * w.astype(np.float64) ** 2))


def simulate(rule, delay: int, steps: int, noise: float = 0.0, seed: int = 0) -> list[float]:
    """Loss after every applied update."""
    rng = np.random.default_rng(seed)
    params = [START.copy()]
    state = rule.init(params)
    aware = getattr(rule, "delay_aware", False)
    in_flight: deque = deque()
    losses = []
    for _ in range(steps + delay):
        w = params[0]
        grad = CURVATURE * w + noise * np.sqrt(CURVATURE) * rng.standard_normal(DIM, np.float32)
        in_flight.append(([grad.astype(np.float32)], rule.backup(state, params) if aware else None))
        if len(in_flight) <= delay:
            continue
        grads, backup = in_flight.popleft()
        if aware:
            params, state = rule.update(grads, state, params, staleness=delay, backup=backup)
        else:
            params, state = rule.update(grads, state, params)
        losses.append(loss(params[0]))
    return losses
