"""HTTP/1.1 keep-alive: one connection serves a replica's requests; refusals stay safe."""

import http.client
import threading

import numpy as np
import pytest

from sparkdownpour.server import ParameterServer, ParameterStore
from sparkdownpour.transport.frames import decode_frame, encode_frame
from tests.server.conftest import SHAPES, PlainSGD, full, zeros

pytestmark = pytest.mark.timeout(30)


def post_update(conn, token, value=1.0, path="/v1/update"):
    body = encode_frame(full(value), kind="update", step=0, replica="r0")
    conn.request("POST", path, body=body, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    return resp, resp.read()


def test_one_connection_serves_many_requests(server, store):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for i in range(5):
            resp, data = post_update(conn, server.token, path="/v1/update?return_params=1")
            assert resp.status == 200 and resp.getheader("Connection") is None
            assert decode_frame(data).step == i + 1
        first_socket = conn.sock
        conn.request("GET", "/v1/status", headers={"Authorization": f"Bearer {server.token}"})
        assert conn.getresponse().read() and conn.sock is first_socket  # never reconnected
    finally:
        conn.close()
    assert store.status()["updates_applied"] == 5


def test_refused_small_body_is_drained_and_the_connection_reused(server, store):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        resp, _ = post_update(conn, "wrong-token")
        assert resp.status == 401 and resp.getheader("Connection") is None
        resp, _ = post_update(conn, server.token)  # same socket: the unread body was drained
        assert resp.status == 200
    finally:
        conn.close()
    assert store.status()["updates_applied"] == 1


def test_refused_large_unread_body_closes_the_connection():
    big = [np.zeros((600, 600), np.float32)]  # 1.4 MB: more than is drained to keep alive
    store = ParameterStore(big, PlainSGD())
    with ParameterServer(store, host="127.0.0.1") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        body = encode_frame(big, kind="update", step=0, replica="r0")
        conn.request("POST", "/v1/update", body=body, headers={"Authorization": "Bearer no"})
        resp = conn.getresponse()
        assert resp.status == 401 and resp.getheader("Connection") == "close"
        resp.read()
        conn.close()
    assert store.status()["updates_applied"] == 0


def test_stop_ends_idle_keep_alive_connections():
    store = ParameterStore(zeros(SHAPES), PlainSGD())
    server = ParameterServer(store, host="127.0.0.1").start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    resp, _ = post_update(conn, server.token)
    assert resp.status == 200
    handlers = [t for t in threading.enumerate() if "process_request_thread" in t.name]
    assert handlers  # the keep-alive connection holds its handler thread
    server.stop()
    for thread in handlers:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in handlers)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        post_update(conn, server.token)
    conn.close()
    assert store.status()["updates_applied"] == 1
