"""ParameterClient and ParameterServer end to end on 127.0.0.1: results, errors, bounded time."""

import socket
import threading
import time

import numpy as np
import pytest

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from sparkdownpour.server.client import PushOutcome
from tests.server.conftest import SHAPES, PlainSGD, full, zeros

pytestmark = pytest.mark.timeout(30)


def test_fetch_push_status(client, store):
    step, params = client.fetch()
    assert step == 0 and [p.shape for p in params] == SHAPES
    assert client.push(full(1), base_step=0, replica="a") == PushOutcome(
        step=1, staleness=0, applied=True, progress=None, refusal=None, params=None)
    assert client.push(full(1), base_step=0, replica="b").staleness == 1
    step, params = client.fetch()
    assert step == 2 and all(np.array_equal(p, q) for p, q in zip(params, full(-2)))
    status = client.status()
    assert status["replicas"] == {"a": 1, "b": 1} and status["updates_applied"] == 2


def test_push_with_return_params(client):
    outcome = client.push(full(3), base_step=0, replica="a", return_params=True)
    assert outcome.step == 1 and all(np.array_equal(p, q) for p, q in zip(outcome.params, full(-3)))
    assert outcome[:5] == (1, 0, True, None, None) and client.last_push is outcome
    outcome = client.push(full(1), base_step=0, replica="a", return_params=True)
    assert outcome.step == 2 and outcome.staleness == 1


def test_many_requests_reuse_or_reopen_connections(client):
    # The server closes after every response; the client must reopen transparently.
    for i in range(20):
        client.push(full(0), base_step=i, replica="a")
        assert client.fetch()[0] == i + 1


def test_concurrent_clients(server, store):
    def replica(r):
        with ParameterClient(server.url, server.token, timeout=10) as c:
            for _ in range(10):
                step, _ = c.fetch()
                c.push(full(1), base_step=step, replica=f"r{r}")

    threads = [threading.Thread(target=replica, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert store.status()["updates_applied"] == 40
    assert all(np.array_equal(p, q) for p, q in zip(store.snapshot(), full(-40)))


def test_wrong_token_is_a_clear_error(server):
    with ParameterClient(server.url, "not-the-token", timeout=5) as c:
        for call in (c.fetch, c.status, lambda: c.push(zeros(), base_step=0, replica="a")):
            with pytest.raises(ParameterServerError, match="HTTP 401 unauthorized: check the run token") as e:
                call()
            assert server.url in str(e.value)
    assert server.store.step == 0


def test_rejected_update_names_the_problem(client, store):
    with pytest.raises(ParameterServerError,
                       match=r"POST http://127\.0\.0\.1:\d+/v1/update failed: HTTP 400 .*"
                             r"shape mismatch at array 1: got \(6,\) expected \(5,\)"):
        client.push(zeros([(3, 4), (6,), ()]), base_step=0, replica="a")
    with pytest.raises(ParameterServerError, match=r"non-finite value \(NaN/Inf\) in array 0"):
        client.push([np.full((3, 4), np.nan), np.zeros(5), np.zeros(())], base_step=0, replica="a")
    assert store.step == 0 and store.status()["updates_rejected"] == 2


def test_too_large_update_is_413(store):
    with ParameterServer(store, max_request_bytes=100) as server:
        with ParameterClient(server.url, server.token, timeout=5) as c:
            with pytest.raises(ParameterServerError, match="HTTP 413"):
                c.push(full(1), base_step=0, replica="a")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(10)
def test_closed_port_fails_fast_with_a_clear_message():
    url = f"http://127.0.0.1:{free_port()}"
    c = ParameterClient(url, "t", timeout=2, retries=2, backoff=0.05)
    for call, route in [(c.fetch, "GET .*/v1/params"), (c.status, "GET .*/v1/status"),
                        (lambda: c.push(zeros(), base_step=0, replica="a"), "POST .*/v1/update")]:
        t0 = time.monotonic()
        with pytest.raises(ParameterServerError, match=route + " failed: ConnectionRefusedError") as e:
            call()
        assert time.monotonic() - t0 < 5
        assert url in str(e.value) and "is the server running" in str(e.value)


@pytest.mark.timeout(10)
def test_stopped_server_fails_fast(store):
    server = ParameterServer(store).start()
    c = ParameterClient(server.url, server.token, timeout=2, retries=1, backoff=0.05)
    assert c.fetch()[0] == 0
    server.stop()
    t0 = time.monotonic()
    with pytest.raises(ParameterServerError, match="failed"):
        c.push(zeros(), base_step=0, replica="a")
    with pytest.raises(ParameterServerError, match="failed"):
        c.fetch()
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout(10)
def test_silent_server_times_out_instead_of_hanging():
    # A listener that accepts but never answers: the socket timeout must fire.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        c = ParameterClient(url, "t", timeout=0.3, retries=1, backoff=0.01)
        t0 = time.monotonic()
        with pytest.raises(ParameterServerError, match="timed out"):
            c.fetch()
        with pytest.raises(ParameterServerError, match=r"timed out \(after 1 attempt"):
            c.push(zeros(), base_step=0, replica="a")  # sent, so never retried
        assert time.monotonic() - t0 < 3


def test_client_validates_arguments():
    for kwargs, message in [({"url": "ftp://x"}, "http://host:port"),
                            ({"token": ""}, "token"), ({"timeout": 0}, "timeout"),
                            ({"retries": -1}, "retries")]:
        args = {"url": "http://127.0.0.1:1", "token": "t", **kwargs}
        with pytest.raises(ValueError, match=message):
            ParameterClient(args.pop("url"), args.pop("token"), **args)


def test_server_start_stop_twice_on_fresh_ports():
    store = ParameterStore(zeros(), PlainSGD())
    ports, tokens = [], []
    for _ in range(2):
        with ParameterServer(store) as server:
            assert server.url == f"http://127.0.0.1:{server.port}"
            with ParameterClient(server.url, server.token, timeout=5) as c:
                assert c.fetch()[0] == 0
            ports.append(server.port)
            tokens.append(server.token)
        server.stop()  # idempotent
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.port
    assert tokens[0] != tokens[1] and len(tokens[0]) >= 32


def test_same_server_object_restarts():
    server = ParameterServer(ParameterStore(zeros(), PlainSGD()), token="fixed")
    for _ in range(2):
        server.start()
        server.start()  # no-op while running
        with ParameterClient(server.url, "fixed", timeout=5) as c:
            assert c.status()["step"] == 0
        server.stop()
        server.stop()


def test_port_in_use_raises_oserror_not_systemexit():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        server = ParameterServer(ParameterStore(zeros(), PlainSGD()), port=s.getsockname()[1])
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            server.start()
        server.stop()


def test_fetched_arrays_are_writable_copies(client, store):
    _, params = client.fetch()
    params[0][:] = 42  # the replica may use them as its working copy
    assert np.array_equal(store.snapshot()[0], np.zeros((3, 4)))


@pytest.mark.timeout(10)
def test_kept_alive_connection_closed_by_server_is_reopened_before_a_push(raw):
    """A keep-alive server (werkzeug always closes, others may not) that drops idle
    connections: the client must notice before sending and push each update exactly once."""
    body = b'{"step": 1, "staleness": 0}'
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    server = raw([reply, reply], close_after=True)  # one request a connection, then hang up
    with ParameterClient(server.url, "t", timeout=5) as c:
        assert c.push(zeros(), base_step=0, replica="a").step == 1
        assert c._conn is not None and c._conn.sock is not None  # kept alive
        time.sleep(0.3)  # the server has hung up meanwhile
        assert c.push(zeros(), base_step=0, replica="a").step == 1
    assert [r.split(b"\r\n", 1)[0] for r in server.requests] == [b"POST /v1/update HTTP/1.1"] * 2
    assert server.connections == 2
