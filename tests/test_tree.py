"""Model trees flatten to the wire's array list and back, for every supported shape of model."""

import numpy as np
import pytest

from sparkdownpour import tree


class Weights:
    def __init__(self):
        self.w = [np.ones((2, 2)), np.zeros(3)]

    def get_weights(self):
        return self.w

    def set_weights(self, ws):
        self.w = [np.array(a) for a in ws]


def test_nested_dict_and_list_round_trip():
    model = {"b": np.arange(3.0), "a": [np.ones((2, 2)), (np.zeros(1), 2.0)]}
    leaves, structure = tree.flatten(model)
    assert [leaf.shape for leaf in leaves] == [(2, 2), (1,), (), (3,)]  # sorted keys
    back = tree.unflatten(structure, [leaf + 1 for leaf in leaves])
    np.testing.assert_array_equal(back["b"], np.arange(3.0) + 1)
    assert isinstance(back["a"][1], tuple) and float(back["a"][1][1]) == 3.0


def test_flatten_copies_so_the_caller_can_mutate():
    w = np.zeros(2)
    leaves, _ = tree.flatten({"w": w})
    w += 5
    assert leaves[0].tolist() == [0.0, 0.0] and leaves[0].dtype == np.float32


def test_weights_object_is_assigned_in_place():
    model = Weights()
    leaves, structure = tree.flatten(model)
    same = tree.assign(model, structure, [leaf * 3 for leaf in leaves])
    assert same is model and model.w[0].tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_wrong_leaf_count_and_types_are_refused():
    _, structure = tree.flatten({"w": np.zeros(2)})
    with pytest.raises(ValueError, match="fewer arrays"):
        tree.unflatten(structure, [])
    with pytest.raises(ValueError, match="more arrays"):
        tree.unflatten(structure, [np.zeros(2), np.zeros(2)])
    with pytest.raises(TypeError, match=r"model\['w'\] is a str"):
        tree.flatten({"w": "zero"})
