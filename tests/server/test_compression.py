"""Compressed pushes: each method round-trips the wire within its stated error; the server
decodes them to float32; malformed compressed frames are refused."""

import numpy as np
import pytest

from sparkdownpour.server import ParameterClient, ParameterServer, ParameterStore
from sparkdownpour.server.compression import Compressor
from sparkdownpour.transport.frames import Encoded, ProtocolError, decode_frame, encode_frame
from tests.server.conftest import PlainSGD, reseal

SHAPES = [(50, 20), (20,), ()]


def grads(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    # magnitudes over many orders, both signs, inside fp16's normal range
    return [(scale * rng.standard_normal(s) * 10.0 ** rng.uniform(-3, 3, s)).astype(np.float32)
            for s in SHAPES]


def round_trip(compressor, arrays):
    frame = encode_frame(compressor.encode(arrays), kind="update", step=0)
    return decode_frame(frame, expected_shapes=SHAPES).arrays, len(frame)


@pytest.mark.parametrize("method,bound", [("fp16", 2.0 ** -11), ("bf16", 2.0 ** -8)])
def test_half_precision_round_trips_within_its_relative_error(method, bound):
    arrays = grads(0)
    decoded, size = round_trip(Compressor(method), arrays)
    for got, want in zip(decoded, arrays):
        assert got.dtype == np.float32 and got.shape == want.shape
        # fp16's subnormals (|g| < 2**-14) keep an absolute error of 2**-25 instead
        allowed = np.maximum(bound * np.abs(want), 2.0 ** -25 if method == "fp16" else 0.0)
        assert np.all(np.abs(got - want) <= allowed)
    dense = len(encode_frame(arrays, kind="update", step=0))
    assert size < 0.6 * dense  # about half the payload


def test_fp16_clips_out_of_range_values_instead_of_sending_inf():
    arrays = [np.full((50, 20), 1e6, np.float32), np.zeros(20, np.float32), np.float32(-1e9)]
    decoded, _ = round_trip(Compressor("fp16"), arrays)
    assert decoded[0].max() == 65504 and decoded[2] == -65504


def test_topk_sends_a_fraction_and_error_feedback_loses_nothing():
    compressor = Compressor("topk", topk_ratio=0.05)
    sent = [np.zeros(s, np.float64) for s in SHAPES]
    total = [np.zeros(s, np.float64) for s in SHAPES]
    for seed in range(20):
        arrays = grads(seed)
        decoded, size = round_trip(compressor, arrays)
        assert np.count_nonzero(decoded[0]) <= 50  # 5% of 1000
        for acc, d in zip(sent, decoded):
            acc += d
        for acc, g in zip(total, arrays):
            acc += g
    assert size < 0.15 * len(encode_frame(grads(0), kind="update", step=0))
    for s, r, t in zip(sent, compressor.residual, total):
        np.testing.assert_allclose(s + r, t, rtol=1e-5, atol=1e-3)


def test_compressed_pushes_over_http_update_the_server():
    store = ParameterStore([np.zeros(s, np.float32) for s in SHAPES], PlainSGD(1.0))
    arrays = grads(1)
    with ParameterServer(store, host="127.0.0.1") as server:
        with ParameterClient(server.url, server.token, compression="bf16") as client:
            client.push(arrays, base_step=0, replica="r")
            step, params = client.fetch()
    assert step == 1 and all(p.dtype == np.float32 for p in params)
    for got, want in zip(params, arrays):
        assert np.all(np.abs(got + want) <= 2.0 ** -8 * np.abs(want))


def test_malformed_compressed_frames_are_refused():
    bad_index = Encoded((4,), "<f4", [np.array([7], "<u4"), np.ones(1, "<f4")], nnz=1)
    with pytest.raises(ProtocolError, match="out of range"):
        decode_frame(encode_frame([bad_index], kind="update", step=0))
    too_many = encode_frame([Encoded((2,), "<f4", [np.arange(3, dtype="<u4"), np.ones(3, "<f4")],
                                     nnz=3)], kind="update", step=0)
    with pytest.raises(ProtocolError, match="nnz must be an integer in 0..2"):
        decode_frame(too_many)
    with pytest.raises(ProtocolError, match="only travel in an update frame"):
        encode_frame([Encoded((2,), "<f2", [np.ones(2, "<f2")])], kind="params", step=0)
    half = encode_frame([Encoded((2,), "<f2", [np.ones(2, "<f2")])], kind="update", step=0)
    as_params = reseal(half.replace(b'"kind":"update"', b'"kind":"params"'))
    with pytest.raises(ProtocolError, match="not accepted in .params. frames"):
        decode_frame(as_params)


def test_unknown_compression_lists_the_choices():
    with pytest.raises(ValueError, match="fp16, bf16, topk.*'zip'"):
        Compressor("zip")
