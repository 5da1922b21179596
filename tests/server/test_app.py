"""The HTTP routes, exercised over real HTTP on 127.0.0.1 with raw http.client requests."""

import http.client
import json
import re
import socket

import numpy as np
import pytest

from sparkdownpour.server import FRAME_CONTENT_TYPE, ParameterServer, ParameterStore, create_app
from sparkdownpour.transport.frames import decode_frame, encode_frame
from tests.server.conftest import SHAPES, PlainSGD, full, reseal, zeros

pytestmark = pytest.mark.timeout(30)

ROUTES = [("GET", "/v1/params"), ("POST", "/v1/update"), ("POST", "/v1/update?return_params=1"),
          ("GET", "/v1/status"), ("GET", "/nope"), ("GET", "/"), ("GET", "/v1/dashboard"),
          ("GET", "/metrics"), ("GET", "/static/dashboard.js")]


def request(server, method, path, body=None, token=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def update_frame(value=1.0, base_step=0, replica="r0", shapes=SHAPES):
    return encode_frame(full(value, shapes), kind="update", step=base_step, replica=replica)


def assert_unchanged(store, before_params, before_step=0):
    step, params = store.fetch()
    assert step == before_step
    assert all(np.array_equal(a, b) for a, b in zip(params, before_params))


@pytest.mark.parametrize("method, path", ROUTES)
@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_every_route_needs_the_token(server, store, method, path, token):
    before = store.snapshot()
    body = update_frame() if method == "POST" else None
    status, ctype, data = request(server, method, path, body, token=token)
    assert status == 401 and ctype == "application/json"
    assert json.loads(data)["error"].startswith("unauthorized")
    assert_unchanged(store, before)


def test_token_in_a_different_scheme_is_refused(server):
    status, _, _ = request(server, "GET", "/v1/status", headers={"Authorization": server.token})
    assert status == 401


def test_params_route(server, store):
    status, ctype, data = request(server, "GET", "/v1/params", token=server.token)
    assert status == 200 and ctype == FRAME_CONTENT_TYPE
    frame = decode_frame(data, expected_shapes=SHAPES)
    assert frame.kind == "params" and frame.step == 0


def test_update_then_status_from_two_replicas(server, store):
    for replica, base in [("a", 0), ("b", 0), ("a", 2)]:
        status, _, data = request(server, "POST", "/v1/update", update_frame(1, base, replica),
                                  token=server.token)
        assert status == 200
    assert json.loads(data) == {"step": 3, "staleness": 0, "applied": True, "progress": None}
    status, _, data = request(server, "GET", "/v1/status", token=server.token)
    s = json.loads(data)
    assert status == 200
    assert s["step"] == s["updates_applied"] == 3
    assert s["replicas"] == {"a": 2, "b": 1}
    assert s["staleness"]["max"] == 1 and s["staleness"]["histogram"] == {"0": 2, "1": 1}
    assert s["bytes_in"] == 3 * len(update_frame())
    assert all(np.array_equal(p, q) for p, q in zip(store.snapshot(), full(-3)))


def test_update_with_return_params(server, store):
    status, ctype, data = request(server, "POST", "/v1/update?return_params=1",
                                  update_frame(2, 0), token=server.token)
    assert status == 200 and ctype == FRAME_CONTENT_TYPE
    frame = decode_frame(data, expected_shapes=SHAPES)
    assert frame.kind == "params" and frame.step == 1
    assert all(np.array_equal(p, q) for p, q in zip(frame.arrays, full(-2)))


GARBAGE = [
    (b"", "truncated frame"),
    (b"GET / HTTP/1.1\r\n\r\n", "bad magic"),
    (update_frame()[:-3], "checksum mismatch"),
    (reseal(update_frame()[:-4]), "payload is"),
    (update_frame(shapes=[(4, 3), (5,), ()]), r"shape mismatch at array 0: got \(4, 3\) expected \(3, 4\)"),
    (update_frame(shapes=[(3, 4)]), "expected 3 arrays, got 1"),
    (encode_frame(full(1), kind="params", step=0), "expected a frame of kind 'update'"),
    (encode_frame([np.zeros((3, 4)), np.array([0, 0, 0, np.inf, 0]), np.zeros(())],
                  kind="update", step=0), r"non-finite value \(NaN/Inf\) in array 1"),
    (update_frame().replace(b'"<f4"', b'"<f8"', 1), "checksum mismatch"),
    (reseal(update_frame().replace(b'"<f4"', b'"<f8"', 1)), "dtype '<f8' not accepted"),
]


@pytest.mark.parametrize("body, message", GARBAGE)
def test_bad_update_is_400_and_store_unchanged(server, store, body, message):
    before = store.snapshot()
    status, ctype, data = request(server, "POST", "/v1/update", body, token=server.token)
    assert status == 400 and ctype == "application/json"
    assert re.search(message, json.loads(data)["error"])
    assert_unchanged(store, before)
    assert store.status()["updates_rejected"] == 1


def test_oversized_body_is_413_before_reading():
    store = ParameterStore(zeros(), PlainSGD())
    with ParameterServer(store, max_request_bytes=1000) as server:
        status, _, data = request(server, "POST", "/v1/update", b"\0" * 5000, token=server.token)
        assert status == 413 and "server limit is 1000" in json.loads(data)["error"]
        # Content-Length alone decides: a huge claimed length is refused without waiting
        # for a body that never comes.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(f"POST /v1/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}"
                      f"\r\nContent-Length: {10**12}\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 413")
    assert store.step == 0


def test_unknown_route_and_method_are_json_errors(server):
    status, ctype, data = request(server, "GET", "/v1/nope", token=server.token)
    assert status == 404 and "error" in json.loads(data)
    status, ctype, data = request(server, "DELETE", "/v1/params", token=server.token)
    assert status == 405 and ctype == "application/json"


def test_create_app_validates_arguments(store):
    with pytest.raises(ValueError, match="token"):
        create_app(store, token="")
    with pytest.raises(ValueError, match="max_request_bytes"):
        create_app(store, token="t", max_request_bytes=0)


def test_flask_test_client_works_too(store):
    app = create_app(store, token="t")
    resp = app.test_client().post("/v1/update", data=update_frame(),
                                  headers={"Authorization": "Bearer t"})
    assert resp.status_code == 200 and resp.get_json() == {
        "step": 1, "staleness": 0, "applied": True, "progress": None}
