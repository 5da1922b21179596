"""Row-sparse pushes: SGD and Adagrad bit for bit as dense, Adam lazy, others dense-equivalent."""

import numpy as np
import pytest

from sparkdownpour.optimizers import SGD, Adagrad, Adam, Momentum
from sparkdownpour.optimizers.sparse import RowSparse, apply_update, densify, row_sparse

D, H = 50, 3


def pushes(count=4, seed=0):
    """Gradients of a (D, H) kernel touching a few rows each, and of a dense (H,) bias."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        kernel = np.zeros((D, H), np.float32)
        rows = rng.choice(D, 6, replace=False)
        kernel[rows] = rng.normal(size=(6, H)).astype(np.float32)
        out.append([kernel, rng.normal(size=H).astype(np.float32)])
    return out


def params0():
    rng = np.random.default_rng(9)
    return [rng.normal(size=(D, H)).astype(np.float32), rng.normal(size=H).astype(np.float32)]


def run(rule, sparse):
    params = params0()
    state = rule.init(params)
    for grads in pushes():
        sent = [row_sparse(grads[0]), grads[1]] if sparse else grads
        if sparse:
            assert isinstance(sent[0], RowSparse) and len(sent[0].rows) == 6
        params, state = apply_update(rule, sent, state, params)
    return params, state


def bits(a):
    return np.asarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("rule", [SGD(0.1), Adagrad(0.1)], ids=["sgd", "adagrad"])
def test_sgd_and_adagrad_row_sparse_equal_dense_bit_for_bit(rule):
    dense_params, dense_state = run(rule, sparse=False)
    sparse_params, sparse_state = run(rule, sparse=True)
    for d, s in zip(dense_params, sparse_params):
        np.testing.assert_array_equal(bits(d), bits(s))
    if dense_state is not None:
        for d, s in zip(dense_state.accumulator, sparse_state.accumulator):
            np.testing.assert_array_equal(bits(d), bits(s))


def test_adam_is_lazy_untouched_rows_keep_parameters_and_moments():
    rule = Adam(0.01)
    params = params0()
    state = rule.init(params)
    first, second = pushes(2)
    params1, state1 = apply_update(rule, [row_sparse(first[0]), first[1]], state, params)
    # The first push equals dense Adam (zero moments: untouched rows do not move either way).
    dense1, _ = rule.update(first, state, params)
    np.testing.assert_array_equal(bits(params1[0]), bits(dense1[0]))
    params2, state2 = apply_update(rule, [row_sparse(second[0]), second[1]], state1, params1)
    assert state2.count == 2
    touched = np.flatnonzero(np.any(second[0] != 0, axis=1))
    untouched = np.setdiff1d(np.arange(D), touched)
    np.testing.assert_array_equal(params2[0][untouched], params1[0][untouched])
    np.testing.assert_array_equal(state2.m[0][untouched], state1.m[0][untouched])
    np.testing.assert_array_equal(state2.v[0][untouched], state1.v[0][untouched])
    # Touched rows: Adam's formula at count 2 on those rows' moments.
    g = second[0][touched]
    m = 0.9 * state1.m[0][touched] + 0.1 * g
    v = 0.999 * state1.v[0][touched] + 0.001 * g * g
    step = 0.01 * np.sqrt(1 - 0.999 ** 2) / (1 - 0.9 ** 2)
    np.testing.assert_allclose(params2[0][touched],
                               params1[0][touched] - step * m / (np.sqrt(v) + 1e-7), rtol=1e-6)
    # Dense Adam would have moved the first push's rows on their momentum: lazy did not.
    dense2, _ = rule.update(second, state1, params1)
    moved = np.setdiff1d(np.flatnonzero(np.any(first[0] != 0, axis=1)), touched)
    assert not np.allclose(dense2[0][moved], params1[0][moved])


def test_other_rules_get_the_dense_equivalent():
    rule = Momentum(0.1, 0.9)
    params = params0()
    state = rule.init(params)
    for grads in pushes():
        expected, expected_state = rule.update(grads, state, params)
        params, state = apply_update(rule, [row_sparse(grads[0]), grads[1]], state, params)
        np.testing.assert_array_equal(params[0], expected[0])


def test_row_sparse_only_when_at_most_half_the_rows_are_non_zero():
    g = np.zeros((10, 2), np.float32)
    g[[1, 4]] = 1.0
    g[7, 1] = -0.0  # a negative zero is zero
    sparse = row_sparse(g)
    assert isinstance(sparse, RowSparse) and sparse.rows.tolist() == [1, 4]
    np.testing.assert_array_equal(sparse.to_dense(), g)
    assert row_sparse(np.ones((10, 2), np.float32)).shape == (10, 2)  # dense stays dense
    assert densify([sparse])[0].shape == (10, 2)


def test_row_sparse_checks_its_rows():
    with pytest.raises(ValueError, match="out of range"):
        RowSparse((4, 2), [1, 4], np.zeros((2, 2))).check()
    with pytest.raises(ValueError, match="distinct and ascending"):
        RowSparse((4, 2), [2, 1], np.zeros((2, 2))).check()
    with pytest.raises(ValueError, match="values of shape"):
        RowSparse((4, 2), [1], np.zeros((2, 2))).check()
