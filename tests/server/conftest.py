"""Fixtures for the server tests: a real plain-SGD rule, a store, a live server on 127.0.0.1,
and a raw socket server that answers exactly the bytes a test gives."""

import socket
import struct
import threading

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


class RawServer:
    """Accepts connections; answers each request on them with the next of ``replies``
    (closing the connection after a reply when ``close_after`` says so). Records requests."""

    def __init__(self, replies: list[bytes], close_after: bool = False) -> None:
        self.replies, self.close_after = list(replies), close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while self.replies:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if b"\r\n\r\n" not in data:
                        break
                    head, data = data.split(b"\r\n\r\n", 1)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(data) < length:
                        data += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + data[:length])
                    data = data[length:]
                    conn.sendall(self.replies.pop(0))
                    if self.close_after:
                        break

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def raw():
    servers = []

    def start(replies, **kwargs):
        servers.append(RawServer(replies, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
