"""Nobody in: pickles never run, fuzzed frames are all 4xx, TLS verifies the server."""

import http.client
import pickle
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sparkdownpour import ParameterServerError
from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from sparkdownpour.transport.frames import encode_frame, frame_checksum
from sparkdownpour.transport.http_server import tls_context
from tests.security.tls import self_signed
from tests.server.conftest import PlainSGD, full, zeros

pytestmark = pytest.mark.timeout(120)

ROUTES = ["/v1/params", "/v1/update", "/v1/update?return_params=1", "/v1/status",
          "/v1/progress?epoch=1&partition=0", "/", "/v1/nope"]


class RunsCode:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def live():
    store = ParameterStore(zeros(), PlainSGD())
    store.open_epoch(1)
    with ParameterServer(store, host="127.0.0.1") as server:
        yield store, server


def send(server, method, path, body, token):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Content-Type": "application/octet-stream"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def unchanged(store):
    params = store.snapshot()
    return store.step == 0 and all(np.array_equal(p, q) for p, q in zip(params, zeros()))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
@pytest.mark.parametrize("with_token", [True, False])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(live, tmp_path, route, method,
                                                                 with_token):
    store, server = live
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(RunsCode(str(marker)), protocol=pickle.HIGHEST_PROTOCOL)
    status, _ = send(server, method, route, payload, server.token if with_token else None)
    assert 400 <= status < 500
    assert not marker.exists() and unchanged(store)


VALID = encode_frame(full(1), kind="update", step=0, replica="p0-a0",
                     meta={"epoch": 1, "partition": 0, "begin": 0, "end": 1, "attempt": 0})


def mutate(data: bytes, how: str, where: int, value: int) -> bytes:
    where %= max(len(data), 1)
    if how == "flip":
        out = bytearray(data)
        out[where] ^= 1 << (value % 8)
        return bytes(out)
    if how == "truncate":
        return data[:where]
    if how == "byte":
        out = bytearray(data)
        out[where] = value % 256
        return bytes(out)
    if how == "header":  # edit the JSON header and fix the length (not the checksum)
        header_len = struct.unpack_from("<I", data, 5)[0]
        text = data[13:13 + header_len].replace(b'"step":0', b'"step":%d' % value, 1)
        return data[:5] + struct.pack("<I", len(text)) + data[9:13] + text + data[13 + header_len:]
    if how == "reseal":  # a header edit with a correct checksum: the checks behind it must hold
        header_len = struct.unpack_from("<I", data, 5)[0]
        text = data[13:13 + header_len]
        edits = [(b'"<f4"', b'"<f8"'), (b'[3,4]', b'[4,3]'), (b'"update"', b'"params"'),
                 (b'"end":1', b'"end":0'), (b'"epoch":1', b'"epoch":%d' % (value + 2)),
                 (b'"begin":0', b'"begin":%d' % (value + 1)), (b'"meta":{', b'"meta":{"x":1,')]
        old, new = edits[value % len(edits)]
        text = text.replace(old, new, 1)
        rest = text + data[13 + header_len:]
        return data[:5] + struct.pack("<II", len(text), frame_checksum(rest)) + rest
    return bytes(value % 256 for _ in range(where % 64))  # random junk


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(how=st.sampled_from(["flip", "truncate", "byte", "header", "reseal", "junk"]),
       where=st.integers(0, 10**6), value=st.integers(0, 2**16),
       route=st.sampled_from(ROUTES), method=st.sampled_from(["POST", "GET"]))
def test_fuzzed_frames_get_4xx_and_change_nothing(live, how, where, value, route, method):
    store, server = live
    body = mutate(VALID, how, where, value)
    assume(body and body != VALID)  # an empty GET is a legitimate request, not a frame
    status, _ = send(server, method, route, body, server.token)
    assert 400 <= status < 500, (how, route, method, status)
    assert unchanged(store)


def test_the_server_is_still_up_after_the_fuzzing(live):
    store, server = live
    with ParameterClient(server.url, server.token, timeout=5) as client:
        assert client.status()["updates_rejected"] >= 1
        assert client.push(full(1), base_step=0, replica="ok").applied
    assert store.step == 1


def test_tls_serves_verified_clients_only(tmp_path):
    cert, key = self_signed(tmp_path)
    store = ParameterStore(zeros(), PlainSGD())
    with ParameterServer(store, host="127.0.0.1", ssl_context=tls_context(cert, key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with open(cert) as handle:
            ca = handle.read()
        with ParameterClient(server.url, server.token, timeout=5, ca_data=ca) as client:
            client.push(full(2), base_step=0, replica="tls")
            step, params = client.fetch()
            assert step == 1 and np.array_equal(params[0], full(-2)[0])
        # A client that does not trust the certificate never sends its token.
        with pytest.raises(ParameterServerError, match="CERTIFICATE_VERIFY_FAILED"):
            ParameterClient(server.url, server.token, timeout=5, retries=0).fetch()
        # Plain HTTP to the TLS port gets no answer, and the server keeps serving.
        with pytest.raises(ParameterServerError):
            ParameterClient(server.url.replace("https", "http"), server.token, timeout=2,
                            retries=0).fetch()
        with ParameterClient(server.url, server.token, timeout=5, ca_file=cert) as client:
            assert client.status()["updates_applied"] == 1
    with pytest.raises(ValueError, match="cannot load the TLS certificate"):
        tls_context(str(tmp_path / "missing.pem"), key)
    with pytest.raises(ValueError, match="plain http"):
        ParameterClient("http://127.0.0.1:1", "t", ca_data=ca)
