"""The client's own HTTP/1.1 reading (transport.http_wire), against raw sockets on 127.0.0.1
that answer exactly the bytes a test gives, well-formed or not."""

import pytest

from sparkdownpour.errors import ParameterServerError
from sparkdownpour.transport.client import HttpClient
from sparkdownpour.transport.http_wire import MAX_HEADERS, MAX_LINE, MAX_UNSIZED_BODY

pytestmark = pytest.mark.timeout(20)


def ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_one_send_request_and_headers_read_as_http_says(raw):
    reply = (b"HTTP/1.1 100 Continue\r\n\r\n"  # an interim answer is skipped
             b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Sdp-Step: 7\r\n"
             b"x-sdp-step: 8\r\nX-Folded: first\r\n second\r\nContent-Length: 11\r\n\r\n"
             b'{"step": 1}')
    server = raw([reply, ok(b"{}")])
    with HttpClient(server.url, "secret", timeout=5) as client:
        resp, data = client.request("POST", "/v1/x", [b"ab", b"cd"], idempotent=False)
        assert data == b'{"step": 1}' and isinstance(data, bytearray)  # writable
        assert resp.status == 200 and resp.reason == "OK"
        assert resp.getheader("x-sdp-step") == "7, 8"  # repeated: joined, any case
        assert resp.getheader("X-FOLDED") == "first second"
        assert resp.getheader("Missing", "default") == "default" and not resp.will_close
        client.request("GET", "/v1/y", idempotent=True)  # the same connection
    assert server.connections == 1
    first, second = server.requests
    assert first.startswith(b"POST /v1/x HTTP/1.1\r\n") and first.endswith(b"\r\n\r\nabcd")
    assert b"\r\nAuthorization: Bearer secret\r\n" in first
    assert b"\r\nContent-Length: 4\r\n" in first and b"\r\nHost: 127.0.0.1:" in first
    assert second.startswith(b"GET /v1/y HTTP/1.1\r\n") and b"Content-Length" not in second


def test_a_body_without_length_ends_with_the_connection(raw):
    server = raw([b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end",
                  ok(b"again")], close_after=True)
    with HttpClient(server.url, "t", timeout=5) as client:
        resp, data = client.request("GET", "/a", idempotent=True)
        assert data == b"to the end" and resp.will_close and client._conn is None
        assert client.request("GET", "/b", idempotent=True)[1] == b"again"  # reopened
    assert server.connections == 2


@pytest.mark.parametrize("reply, message", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     "unsupported Transfer-Encoding 'chunked'"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "BadStatusLine"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "BadStatusLine"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line 'no colon here'"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", "bad Content-Length -3"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length 'ten'"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n",
     f"more than {MAX_HEADERS} headers"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * MAX_LINE + b"\r\n\r\n", "LineTooLong"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "IncompleteRead"),
    # a length no answer brings is not allocated up front: the short answer is found out
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\nshort", "IncompleteRead"),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (MAX_UNSIZED_BODY + 1),
     f"without Content-Length longer than {MAX_UNSIZED_BODY} bytes"),
    (b"", "RemoteDisconnected"),
])
def test_a_malformed_answer_is_a_clear_error(raw, reply, message):
    server = raw([reply], close_after=True)
    with HttpClient(server.url, "t", timeout=5, retries=0) as client:
        with pytest.raises(ParameterServerError, match=message) as e:
            client.request("POST", "/v1/update", [b"x"], idempotent=False)
        assert f"POST {server.url}/v1/update failed" in str(e.value)
        assert client._conn is None  # never reused after a broken answer


def test_a_route_that_would_end_the_request_line_is_refused():
    client = HttpClient("http://127.0.0.1:9", "t", timeout=1)
    for route in ("/v1/params HTTP/1.1\r\nX-Injected: 1", "/a b", "/a\nb"):
        with pytest.raises(ValueError, match="spaces or control characters"):
            client.request("GET", route, idempotent=True)


def test_a_token_that_cannot_be_a_header_value_is_refused_up_front():
    with pytest.raises(ValueError, match="token must be Latin-1 text"):
        HttpClient("http://127.0.0.1:9", "price-in-€", timeout=1)
