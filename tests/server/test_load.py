"""Load: 16 concurrent clients pushing and fetching; nothing lost, nothing doubled.

The issue asks for 30 s; the default here is 8 s so the suite stays short on 2 cores
(set SPARKDOWNPOUR_LOAD_SECONDS=30 for the full length). One shard: sharding is not built.
"""

import os
import threading
import time

import numpy as np
import pytest

from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from tests.server.conftest import PlainSGD

SHAPES = [(256, 64), (64,), (64, 10), (10,)]
CLIENTS = 16


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sixteen_clients_for_a_bounded_time():
    seconds = float(os.environ.get("SPARKDOWNPOUR_LOAD_SECONDS", "8"))
    store = ParameterStore([np.zeros(s, np.float32) for s in SHAPES], PlainSGD(1.0))
    sums = [[np.zeros(s, np.float64) for s in SHAPES] for _ in range(CLIENTS)]
    acknowledged, errors = [0] * CLIENTS, []
    deadline = time.monotonic() + seconds

    with ParameterServer(store, host="127.0.0.1") as server:
        def client_loop(c):
            rng = np.random.default_rng(c)
            try:
                with ParameterClient(server.url, server.token, timeout=30) as client:
                    step, _ = client.fetch()
                    while time.monotonic() < deadline:
                        grads = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
                        client.push(grads, base_step=step, replica=f"c{c}",
                                    return_params=bool(acknowledged[c] % 2))
                        step = client.last_push.step
                        acknowledged[c] += 1  # only after the server answered 200
                        for total, g in zip(sums[c], grads):
                            total += g
                        if acknowledged[c] % 5 == 0:
                            client.fetch()
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
        status = store.status()
    assert not errors and not any(t.is_alive() for t in threads)
    assert status["updates_applied"] == status["step"] == sum(acknowledged) > CLIENTS
    assert status["updates_rejected"] == 0
    expected = [-sum(s[i] for s in sums) for i in range(len(SHAPES))]  # lr 1: -sum of pushes
    for got, want in zip(store.snapshot(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.sqrt(sum(acknowledged)))
