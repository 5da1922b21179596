"""Wire format: exact round trips, and a specific ProtocolError for every kind of bad frame."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparkdownpour.transport.frames import (
    MAX_HEADER_BYTES,
    ProtocolError,
    decode_frame,
    encode_frame,
    encode_frame_parts,
    frame_checksum,
)

F32 = np.finfo(np.float32)
finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [float(F32.max), float(F32.min), float(F32.tiny), -float(F32.tiny), 0.0, -0.0, 1e-45]
)
arrays = st.lists(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
               elements=finite_f32),
    min_size=0, max_size=4,
)


def raw_frame(header, payload=b"", *, magic=b"SDPW", version=2, hlen=None, crc=None):
    """A hand-built frame with a correct checksum (unless ``crc`` is given), to reach the checks
    behind the checksum."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    crc = frame_checksum(text, payload) if crc is None else crc
    return struct.pack("<4sBII", magic, version, len(text) if hlen is None else hlen, crc) \
        + text + payload


def good_header(**over):
    h = {"kind": "update", "step": 3, "replica": "r0", "arrays": [{"shape": [2, 2], "dtype": "<f4"}]}
    h.update(over)
    return h


@settings(max_examples=100, deadline=None)
@given(arrays=arrays, kind=st.sampled_from(["params", "update"]),
       step=st.integers(0, 2**62), replica=st.text(max_size=128),
       meta=st.dictionaries(st.text(max_size=8), st.integers(-5, 5), max_size=3))
def test_round_trip_is_exact(arrays, kind, step, replica, meta):
    frame = decode_frame(encode_frame(arrays, kind=kind, step=step, replica=replica, meta=meta),
                         require_finite=True)
    assert (frame.kind, frame.step, frame.replica, frame.meta) == (kind, step, replica, meta)
    assert len(frame.arrays) == len(arrays)
    for got, want in zip(frame.arrays, arrays):
        assert got.dtype == np.float32 and got.shape == want.shape
        # Bitwise equality: -0.0 and denormals survive too.
        assert got.tobytes() == want.tobytes()


def test_encode_converts_and_aligns():
    data = encode_frame([np.arange(6, dtype=np.float64).reshape(2, 3).T], kind="params", step=0)
    frame = decode_frame(data)
    np.testing.assert_array_equal(frame.arrays[0], np.arange(6).reshape(2, 3).T)
    assert frame.arrays[0].ctypes.data % 4 == 0 and (len(data) - 24) % 8 == 0
    # encode_frame is the join of the zero-copy parts
    parts = encode_frame_parts([np.ones(3, np.float32)], kind="update", step=1, replica="x")
    assert b"".join(parts) == encode_frame([np.ones(3)], kind="update", step=1, replica="x")


def test_decode_accepts_memoryview_and_bytearray():
    data = encode_frame([np.ones((2, 2))], kind="update", step=1)
    for buf in (bytearray(data), memoryview(data)):
        assert decode_frame(buf).arrays[0].sum() == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "grads", "step": 0}, "kind must be one of"),
    ({"kind": "update", "step": -1}, "step must be a non-negative integer"),
    ({"kind": "update", "step": True}, "step must be a non-negative integer"),
    ({"kind": "update", "step": 0, "replica": "x" * 129}, "replica id is 129 characters"),
    ({"kind": "update", "step": 0, "meta": {"x": object()}}, "not JSON-serializable"),
])
def test_encode_rejects_bad_fields(kwargs, message):
    with pytest.raises(ProtocolError, match=message):
        encode_frame([np.ones(2)], **kwargs)


def test_encode_rejects_too_many_arrays_and_bad_dtypes():
    with pytest.raises(ProtocolError, match="header is .* bytes, the limit is"):
        encode_frame([np.ones(1)] * 5000, kind="update", step=0)
    with pytest.raises(TypeError, match="only real numbers"):
        encode_frame([np.array(["a"])], kind="update", step=0)
    with pytest.raises(TypeError, match="single ndarray"):
        encode_frame(np.ones(3), kind="update", step=0)


PAYLOAD = np.ones(4, np.float32).tobytes()


@pytest.mark.parametrize("data, message", [
    (b"SDP", "truncated frame: 3 bytes"),
    (raw_frame(good_header(), PAYLOAD, magic=b"PK\x03\x04"), r"bad magic b'PK\\x03\\x04'"),
    (raw_frame(good_header(), PAYLOAD, version=1), "unsupported version 1"),
    (raw_frame(good_header(), PAYLOAD, crc=12345), r"checksum mismatch \(xxh3 0x[0-9a-f]{8}, "
     r"the frame says 0x00003039\)"),
    (raw_frame(good_header(), hlen=MAX_HEADER_BYTES + 1), "header length 65537 exceeds the limit"),
    (raw_frame(good_header())[:20], "truncated header: header length says"),
    (raw_frame(b"{not json", PAYLOAD), "header is not JSON"),
    (raw_frame(b"\xff\xfe", PAYLOAD), "header is not UTF-8"),
    (raw_frame(b"[1, 2]", PAYLOAD), "header must be a JSON object, got list"),
    (raw_frame(good_header(kind="hello"), PAYLOAD), "kind must be one of"),
    (raw_frame(good_header(step="3"), PAYLOAD), "step must be a non-negative integer, got '3'"),
    (raw_frame(good_header(arrays="x"), PAYLOAD), "'arrays' must be a list"),
    (raw_frame(good_header(meta=[1]), PAYLOAD), "meta must be a JSON object"),
    (raw_frame(good_header(arrays=[{"shape": [2, 2], "dtype": "<f8"}]), PAYLOAD * 2),
     r"array 0: dtype '<f8' not accepted in 'update' frames \(only float32 '<f4', or the "
     r"compressed '<f2' and 'bf16'\)"),
    (raw_frame(good_header(arrays=[{"shape": [2, -2], "dtype": "<f4"}]), PAYLOAD),
     r"array 0: negative dimension -2 in shape \(2, -2\)"),
    (raw_frame(good_header(arrays=[{"shape": [1] * 33, "dtype": "<f4"}]), PAYLOAD),
     r"array 0: too many dims \(33"),
    (raw_frame(good_header(arrays=[{"shape": [2.5], "dtype": "<f4"}]), PAYLOAD),
     "non-integer dimension"),
    (raw_frame(good_header(), PAYLOAD[:-1]), "payload is 15 bytes but shapes need 16"),
    (raw_frame(good_header(), PAYLOAD + b"\0" * 4), "payload is 20 bytes but shapes need 16"),
    (raw_frame(good_header(arrays=[{"shape": [2**40, 2**40], "dtype": "<f4"}]), PAYLOAD),
     "but shapes need 4835703278458516698824704"),
])
def test_decode_rejects_with_specific_message(data, message):
    with pytest.raises(ProtocolError, match=message):
        decode_frame(data)


def test_decode_checks_expected_shapes():
    data = encode_frame([np.ones((2, 3)), np.ones(4)], kind="update", step=0)
    decode_frame(data, expected_shapes=[(2, 3), (4,)])
    with pytest.raises(ProtocolError, match=r"shape mismatch at array 1: got \(4,\) expected \(5,\)"):
        decode_frame(data, expected_shapes=[(2, 3), (5,)])
    with pytest.raises(ProtocolError, match="expected 1 arrays, got 2"):
        decode_frame(data, expected_shapes=[(2, 3)])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_require_finite(bad):
    arrays = [np.ones(3, np.float32), np.array([1.0, bad], np.float32)]
    data = encode_frame(arrays, kind="update", step=0)
    assert np.isnan(decode_frame(data).arrays[1][1]) == np.isnan(bad)  # allowed unless asked
    with pytest.raises(ProtocolError, match=r"non-finite value \(NaN/Inf\) in array 1"):
        decode_frame(data, require_finite=True)


def test_decoded_arrays_are_views_not_copies():
    data = bytearray(encode_frame([np.zeros(4)], kind="params", step=0))
    arr = decode_frame(data).arrays[0]
    data[-4:] = np.float32(7).tobytes()
    assert arr[-1] == 7


def test_every_single_bit_flip_and_truncation_is_refused():
    data = encode_frame([np.arange(5, dtype=np.float32)], kind="update", step=7, replica="r1",
                        meta={"epoch": 1, "partition": 0, "begin": 3, "end": 4})
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProtocolError):
            decode_frame(bytes(damaged))
    for size in range(len(data)):
        with pytest.raises(ProtocolError):
            decode_frame(data[:size])
