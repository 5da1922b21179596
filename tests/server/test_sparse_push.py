"""Row-sparse pushes on the wire: pickle-free frames, range-checked, applied to their rows."""

import struct

import numpy as np
import pytest

from sparkdownpour.optimizers import SGD
from sparkdownpour.optimizers.sparse import RowSparse, row_sparse
from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from sparkdownpour.transport.frames import ProtocolError, decode_frame, encode_frame
from tests.server.conftest import reseal

SHAPES = [(1000, 2), (2,)]


def kernel_grad(rows=(3, 70, 999)):
    g = np.zeros(SHAPES[0], np.float32)
    g[list(rows)] = np.arange(2 * len(rows), dtype=np.float32).reshape(-1, 2) + 1
    return g


def test_row_sparse_frames_round_trip_and_cost_their_rows():
    sparse = row_sparse(kernel_grad())
    frame = encode_frame([sparse, np.ones(2)], kind="update", step=4)
    dense_frame = encode_frame([kernel_grad(), np.ones(2)], kind="update", step=4)
    assert len(frame) < len(dense_frame) // 40  # 3 rows: 36 bytes of payload, not 8008
    kept = decode_frame(frame, expected_shapes=SHAPES, keep_rows=True).arrays[0]
    assert isinstance(kept, RowSparse) and kept.rows.tolist() == [3, 70, 999]
    np.testing.assert_array_equal(decode_frame(frame).arrays[0], kernel_grad())  # densified
    with pytest.raises(ProtocolError, match="only travel in an update"):
        encode_frame([sparse], kind="params", step=0)


def tampered(rows):
    """A frame whose row indices were edited (and the checksum recomputed)."""
    frame = bytearray(encode_frame([row_sparse(kernel_grad())], kind="update", step=0))
    header_len = struct.unpack_from("<I", frame, 5)[0]
    offset = 13 + header_len
    frame[offset:offset + 12] = np.asarray(rows, "<u4").tobytes()
    return reseal(bytes(frame))


@pytest.mark.parametrize("rows", [(3, 70, 1000), (70, 3, 999), (3, 3, 999)])
def test_out_of_range_or_unordered_rows_are_refused(rows):
    with pytest.raises(ProtocolError, match="distinct, ascending and below 1000"):
        decode_frame(tampered(rows), keep_rows=True)


def test_a_frame_whose_rows_do_not_fit_the_payload_is_refused():
    frame = encode_frame([row_sparse(kernel_grad())], kind="update", step=0)
    header_len = struct.unpack_from("<I", frame, 5)[0]
    header = frame[13:13 + header_len].decode().replace('"rows":3', '"rows":4')
    edited = frame[:13] + header.encode() + frame[13 + header_len:]
    with pytest.raises(ProtocolError, match="payload is"):
        decode_frame(reseal(edited))


def test_store_applies_a_sparse_push_exactly_as_the_dense_one():
    params = [np.linspace(-1, 1, 2000, dtype=np.float32).reshape(SHAPES[0]),
              np.ones(2, np.float32)]
    dense, sparse = ParameterStore(params, SGD(0.3)), ParameterStore(params, SGD(0.3))
    dense.push([kernel_grad(), np.ones(2)], replica="r", base_step=0)
    sparse.push([row_sparse(kernel_grad()), np.ones(2)], replica="r", base_step=0)
    for a, b in zip(dense.snapshot(), sparse.snapshot()):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    with pytest.raises(ValueError, match="row-sparse array 0: row index out of range"):
        sparse.push([RowSparse(SHAPES[0], [1000], np.ones((1, 2))), np.ones(2)],
                    replica="r", base_step=0)
    with pytest.raises(ValueError, match="non-finite"):
        sparse.push([RowSparse(SHAPES[0], [1], [[np.nan, 0]]), np.ones(2)], replica="r",
                    base_step=0)
    assert sparse.status()["updates_rejected"] == 2


def test_a_sparse_push_over_http_is_applied_to_its_rows():
    params = [np.zeros(SHAPES[0], np.float32), np.zeros(2, np.float32)]
    store = ParameterStore(params, SGD(1.0))
    with ParameterServer(store) as server:
        client = ParameterClient(server.url, server.token)
        outcome = client.push([row_sparse(kernel_grad()), np.zeros(2)], base_step=0,
                              replica="r", return_params=True)
        assert outcome.applied
        np.testing.assert_array_equal(outcome.params[0], -kernel_grad())
        assert store.status()["bytes_in"] < 200
        client.close()
