"""A Python worker keeps a built replica for the next fit of the same model (ModelSpec.key):
no build and no retrace, and nothing of the last fit carries over (real server, no Spark)."""

import dataclasses

import numpy as np

from sparkdownpour import optimizers
from sparkdownpour.examples import build_mlp
from sparkdownpour.keras_model import ModelSpec, trainable_arrays, with_key
from sparkdownpour.replica.loop import run_partition
from sparkdownpour.replica.worker import replica_for
from sparkdownpour.server import ParameterServer, ParameterStore
from tests.replica.test_loop import batches, builder, spec


def wider():
    return build_mlp(inputs=4, hidden=16, outputs=3)


def fit_once(model: ModelSpec, initial, learning_rate: float):
    """One replica's pass over 50 rows against a fresh server; its statistics row, the spec
    and the server's final parameters."""
    store = ParameterStore(initial, optimizers.get("sgd", learning_rate=learning_rate))
    with ParameterServer(store, host="127.0.0.1") as server:
        run = spec(server.url, server.token, model=model)
        (stats,) = list(run_partition(batches(50), run))
        _, params = store.fetch()
    return stats.to_pylist()[0], run, params


def test_a_second_fit_of_the_same_model_reuses_the_built_replica_and_only_its_structure():
    model = with_key(ModelSpec(num_features=4, loss="sparse_categorical_crossentropy",
                               builder=builder))
    assert model.key and with_key(dataclasses.replace(model, key="")).key == model.key
    initial = trainable_arrays(builder())
    first, _, _ = fit_once(model, initial, learning_rate=0.1)
    assert first["model_build_s"] > 0
    # A new run of the same model: parameters nothing like the last run's, which a learning
    # rate of 1e-30 leaves as they are (in float32); the reused replica must hold exactly them.
    fixed = [np.full_like(a, 0.25) for a in initial]
    second, run, params = fit_once(model, fixed, learning_rate=1e-30)
    assert second["model_build_s"] == 0.0 and second["steps"] == 10
    replica, build_s = replica_for(run)
    assert build_s == 0.0 and replica.run_id == run.run_id
    for held, expected in zip(trainable_arrays(replica.model), params):
        np.testing.assert_array_equal(held, expected)
        np.testing.assert_array_equal(held, 0.25)


def test_another_model_or_one_without_a_key_is_built_again():
    model = with_key(ModelSpec(num_features=4, loss="sparse_categorical_crossentropy",
                               builder=builder))
    other = with_key(ModelSpec(num_features=4, loss="sparse_categorical_crossentropy",
                               builder=wider))
    assert other.key != model.key
    initial = trainable_arrays(builder())
    fit_once(model, initial, 0.1)
    assert fit_once(other, trainable_arrays(wider()), 0.1)[0]["model_build_s"] > 0
    unkeyed = ModelSpec(num_features=4, loss="sparse_categorical_crossentropy", builder=builder)
    fit_once(unkeyed, initial, 0.1)
    assert fit_once(unkeyed, initial, 0.1)[0]["model_build_s"] > 0  # each run its own
