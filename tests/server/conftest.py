"""Fixtures for the server tests: a real plain-SGD rule, a store, a live server on 127.0.0.1."""

import struct

import numpy as np
import pytest

from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from sparkdownpour.transport.frames import frame_checksum

SHAPES = [(3, 4), (5,), ()]


class PlainSGD:
    """params - learning_rate * grads; a real (pure) update rule, independent of optimizers/."""

    name = "sgd"

    def __init__(self, learning_rate: float = 1.0) -> None:
        self.learning_rate = np.float32(learning_rate)

    def init(self, params):
        return ()

    def update(self, grads, state, params):
        return [p - self.learning_rate * g for p, g in zip(params, grads)], state


def reseal(frame: bytes) -> bytes:
    """Recompute a hand-edited frame's checksum, so it reaches the checks behind the checksum."""
    magic, version, hlen, _ = struct.unpack_from("<4sBII", frame)
    return struct.pack("<4sBII", magic, version, hlen, frame_checksum(frame[13:])) + frame[13:]


def zeros(shapes=SHAPES):
    return [np.zeros(s, np.float32) for s in shapes]


def full(value, shapes=SHAPES):
    return [np.full(s, value, np.float32) for s in shapes]


@pytest.fixture
def store():
    return ParameterStore(zeros(), PlainSGD(1.0))


@pytest.fixture
def server(store):
    with ParameterServer(store, host="127.0.0.1") as srv:
        yield srv


@pytest.fixture
def client(server):
    with ParameterClient(server.url, server.token, timeout=5.0, retries=1, backoff=0.05) as c:
        yield c
