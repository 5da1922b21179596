"""The wire format between the master model server and its replicas.

A frame is::

    b"SDPW" | u8 version | u32 LE header length | u32 LE checksum | UTF-8 JSON header | payload

The checksum (the low 32 bits of XXH3-64, see ``frame_checksum``) covers the header and the
payload: a frame damaged or edited on the way (a flipped
bit, a truncation, a changed step in the header) is refused before any of it is parsed. TCP's
own 16-bit checksum misses a small share of real corruption, and an update corrupted into a
plausible one would silently poison the parameters for every replica.

The header is a JSON object::

    {"kind": "params" | "update" | "vectors" | "state", "step": int, "replica": str,
     "arrays": [{"shape": [..], "dtype": "<f4"}, ...], "meta": {...}}

and the payload is the arrays' raw little-endian float32 bytes, concatenated in order. An
``update`` frame may carry compressed arrays (``compression``): ``"dtype": "<f2"`` (IEEE half)
or ``"bf16"`` (the top 16 bits of float32), and/or ``"nnz": k`` for a sparse array sent as k
little-endian uint32 flat indices followed by k values. They are decoded to dense float32
before anyone sees them. ``"rows": k`` marks a row-sparse array (``optimizers.sparse.RowSparse``,
a first layer's gradient under sparse inputs): k distinct ascending uint32 row indices, then
those k rows as float32; ``decode_frame(keep_rows=True)`` hands it over as a ``RowSparse``
(the server applies it to those rows only), otherwise it is densified like the others. The header is
padded with spaces (valid JSON whitespace) so the payload starts on an 8-byte
boundary, which keeps the arrays that ``np.frombuffer`` returns aligned.

Nothing here ever unpickles: a frame from the network is parsed as JSON plus raw floats, and
every field is checked before an array is built, so a garbled or hostile frame fails with a
``ProtocolError`` that says exactly what was wrong.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import xxhash

from sparkdownpour.optimizers.sparse import RowSparse

__all__ = [
    "Encoded",
    "FRAME_CONTENT_TYPE",
    "MAGIC",
    "MAX_HEADER_BYTES",
    "VERSION",
    "Frame",
    "ProtocolError",
    "decode_frame",
    "encode_frame",
    "encode_frame_parts",
    "frame_checksum",
]

MAGIC = b"SDPW"
VERSION = 2  # 2 added the checksum; version 1 frames are refused with a clear message
FRAME_CONTENT_TYPE = "application/x-sparkdownpour-frame"
KINDS = ("params", "update", "vectors", "state")  # vectors: Sandblaster's shard programs
# (lbfgs/); state: a model's non-trainable arrays (server.model_state)
DTYPE = "<f4"
MAX_HEADER_BYTES = 64 * 1024
MAX_REPLICA_CHARS = 128
MAX_DIMS = 32  # numpy's own limit is 32 (64 in numpy 2); anything beyond is garbage
MAX_META_BYTES = 32 * 1024  # a shard program of L-BFGS with history 100 is about 15 KiB
_PREFIX = struct.Struct("<4sBII")  # magic, version, header length, checksum: 13 bytes
_ALIGN = 8
_F32 = np.dtype(DTYPE)
_U32 = np.dtype("<u4")
# Wire dtypes and their sizes; only update frames may use anything but float32.
_ITEMSIZE = {DTYPE: 4, "<f2": 2, "bf16": 2}


class Encoded(NamedTuple):
    """An array already in a compressed wire form (``compression.Compressor`` makes them):
    ``buffers`` are its payload bytes in order (indices first when ``nnz`` is set)."""

    shape: tuple[int, ...]
    dtype: str
    buffers: list[Any]
    nnz: int | None = None


def _to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bf16":  # bfloat16 is the high half of a float32
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


class ProtocolError(ValueError):
    """A frame could not be encoded or decoded; the message says exactly what was wrong."""


class Frame(NamedTuple):
    """One decoded frame. ``arrays`` are read-only views into the received bytes."""

    kind: str
    step: int
    replica: str
    arrays: list[np.ndarray]
    meta: dict[str, Any]


def _check_fields(kind: Any, step: Any, replica: Any, meta: Any) -> None:
    """Shared by encode and decode, so both sides refuse the same things."""
    if kind not in KINDS:
        raise ProtocolError(f"kind must be one of {KINDS}, got {kind!r}")
    # bool is an int subclass; a JSON true is not a step.
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ProtocolError(f"step must be a non-negative integer, got {step!r}")
    if not isinstance(replica, str):
        raise ProtocolError(f"replica must be a string, got {type(replica).__name__}")
    if len(replica) > MAX_REPLICA_CHARS:
        raise ProtocolError(
            f"replica id is {len(replica)} characters, the limit is {MAX_REPLICA_CHARS}"
        )
    if not isinstance(meta, dict):
        raise ProtocolError(f"meta must be a JSON object, got {type(meta).__name__}")


def encode_frame_parts(
    arrays: Sequence[Any],
    *,
    kind: str,
    step: int,
    replica: str = "",
    meta: dict[str, Any] | None = None,
) -> list[Any]:
    """The frame as a list of buffers: prefix+header bytes, then one byte view per array.

    The views alias the (converted) arrays, so nothing is copied: a sender can write the
    parts straight to a socket. ``encode_frame`` joins them. The arrays must not change
    until the parts are sent.
    """
    meta = {} if meta is None else meta
    _check_fields(kind, step, replica, meta)
    if isinstance(arrays, np.ndarray):
        raise TypeError("arrays must be a list of arrays, got a single ndarray; wrap it in [...]")
    converted, entries, payload = [], [], []
    for i, a in enumerate(arrays):
        if isinstance(a, RowSparse):
            if kind != "update":
                raise ProtocolError(f"array {i}: a row-sparse array may only travel in an "
                                    "update frame")
            entries.append({"shape": list(a.shape), "dtype": DTYPE, "rows": len(a.rows)})
            for part in (np.asarray(a.rows, "<u4"), np.asarray(a.values, _F32, order="C")):
                if part.size:
                    payload.append(memoryview(part.reshape(-1)).cast("B"))
            continue
        if isinstance(a, Encoded):
            if kind != "update" or a.dtype not in _ITEMSIZE:
                raise ProtocolError(f"array {i}: a compressed ({a.dtype}) array may only travel "
                                    "in an update frame")
            entries.append({"shape": list(a.shape), "dtype": a.dtype,
                            **({} if a.nnz is None else {"nnz": a.nnz})})
            views = [memoryview(np.ascontiguousarray(b).reshape(-1)).cast("B") for b in a.buffers]
            payload.extend(v for v in views if v.nbytes)
            continue
        arr = np.asarray(a)
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"array {i} has dtype {arr.dtype}; only real numbers go on the wire")
        # No copy for arrays that already are C-contiguous '<f4' (and unlike
        # ascontiguousarray, a 0-d array stays 0-d).
        converted.append(np.asarray(arr, dtype=_F32, order="C"))
        entries.append({"shape": list(converted[-1].shape), "dtype": DTYPE})
        if converted[-1].size:
            # memoryview(...).cast("B") exposes the array's buffer as bytes without a copy.
            payload.append(memoryview(converted[-1]).cast("B"))
    header = {
        "kind": kind,
        "step": step,
        "replica": replica,
        "arrays": entries,
    }
    if meta:
        try:
            meta_len = len(json.dumps(meta, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise ProtocolError(f"meta is not JSON-serializable: {e}") from e
        if meta_len > MAX_META_BYTES:
            raise ProtocolError(f"meta is {meta_len} bytes of JSON, the limit is {MAX_META_BYTES}")
        header["meta"] = meta
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces so the payload (and every float32 array) starts 8-byte aligned.
    text += b" " * (-(_PREFIX.size + len(text)) % _ALIGN)
    if len(text) > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header is {len(text)} bytes, the limit is {MAX_HEADER_BYTES} "
            f"({len(entries)} arrays is too many for one frame)"
        )
    crc = frame_checksum(text, *payload)
    return [_PREFIX.pack(MAGIC, VERSION, len(text), crc) + text, *payload]


def encode_frame(
    arrays: Sequence[Any],
    *,
    kind: str,
    step: int,
    replica: str = "",
    meta: dict[str, Any] | None = None,
) -> bytes:
    """Encode ``arrays`` (cast to little-endian float32) and the fields into one frame.

    One ``bytes.join`` over the arrays' own buffers: a float32 C-contiguous array is copied
    exactly once (into the frame), with no per-element Python.
    """
    return b"".join(encode_frame_parts(arrays, kind=kind, step=step, replica=replica, meta=meta))


def frame_checksum(*buffers: Any) -> int:
    """The frame checksum of the header and payload bytes: the low 32 bits of XXH3-64.

    XXH3 runs at about 50 GB/s here against zlib's crc32 at about 4 GB/s; with four checksums
    per push-and-fetch round trip of a 4 MB model, crc32 alone cost a third of the round trip.
    Like a CRC it is an integrity check (damage, truncation, edits), not authentication: the
    bearer token is.
    """
    digest = xxhash.xxh3_64()
    for buffer in buffers:
        digest.update(buffer)
    return digest.intdigest() & 0xFFFFFFFF


def _parse_shape(i: int, entry: Any, kind: str = "params") -> tuple[tuple[int, ...], str, int | None]:
    """An array's (shape, wire dtype, nnz or None), every field checked."""
    if not isinstance(entry, dict):
        raise ProtocolError(f"array {i} description must be an object, got {entry!r:.80}")
    dtype = entry.get("dtype")
    allowed = tuple(_ITEMSIZE) if kind == "update" else (DTYPE,)
    if dtype not in allowed:
        extra = ", or the compressed '<f2' and 'bf16'" if kind == "update" else ""
        raise ProtocolError(f"array {i}: dtype {dtype!r} not accepted in {kind!r} frames (only "
                            f"float32 {DTYPE!r}{extra})")
    shape = entry.get("shape")
    if not isinstance(shape, list):
        raise ProtocolError(f"array {i}: shape must be a list of integers, got {shape!r:.80}")
    if len(shape) > MAX_DIMS:
        raise ProtocolError(f"array {i}: too many dims ({len(shape)}, the limit is {MAX_DIMS})")
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool):
            raise ProtocolError(f"array {i}: shape {shape!r:.80} has a non-integer dimension")
        if d < 0:
            raise ProtocolError(f"array {i}: negative dimension {d} in shape {tuple(shape)}")
    nnz = entry.get("nnz")
    if nnz is not None:
        if kind != "update":
            raise ProtocolError(f"array {i}: a sparse array may only travel in an update frame")
        if not isinstance(nnz, int) or isinstance(nnz, bool) or not 0 <= nnz <= math.prod(shape):
            raise ProtocolError(f"array {i}: nnz must be an integer in 0..{math.prod(shape)}, "
                                f"got {nnz!r:.40}")
    rows = entry.get("rows")
    if rows is not None:
        if kind != "update" or nnz is not None or dtype != DTYPE or not shape:
            raise ProtocolError(f"array {i}: 'rows' needs a float32 array of at least one "
                                "dimension in an update frame, without 'nnz'")
        if not isinstance(rows, int) or isinstance(rows, bool) or not 0 <= rows <= shape[0]:
            raise ProtocolError(f"array {i}: rows must be an integer in 0..{shape[0]}, got "
                                f"{rows!r:.40}")
        return tuple(shape), "rows", rows
    return tuple(shape), dtype, nnz


def _read_header(mv: memoryview) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and the payload's offset."""
    n = len(mv)
    if n < _PREFIX.size:
        raise ProtocolError(f"truncated frame: {n} bytes, the fixed prefix alone is {_PREFIX.size}")
    magic, version, hlen, crc = _PREFIX.unpack_from(mv)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: not a sparkdownpour frame (expected {MAGIC!r})")
    if version != VERSION:
        raise ProtocolError(f"unsupported version {version} (this build reads version {VERSION})")
    if hlen > MAX_HEADER_BYTES:
        raise ProtocolError(f"header length {hlen} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if n - _PREFIX.size < hlen:
        raise ProtocolError(
            f"truncated header: header length says {hlen} bytes "
            f"but only {n - _PREFIX.size} follow the prefix"
        )
    actual = frame_checksum(mv[_PREFIX.size :])
    if actual != crc:
        raise ProtocolError(
            f"checksum mismatch (xxh3 {actual:#010x}, the frame says {crc:#010x}): "
            "the frame was damaged, truncated or edited on the way"
        )
    raw = bytes(mv[_PREFIX.size : _PREFIX.size + hlen])
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProtocolError(f"header is not UTF-8: {e}") from e
    except ValueError as e:
        raise ProtocolError(f"header is not JSON: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a JSON object, got {type(header).__name__}")
    return header, _PREFIX.size + hlen


def decode_frame(
    data: bytes | bytearray | memoryview,
    *,
    expected_shapes: Sequence[Sequence[int]] | None = None,
    require_finite: bool = False,
    keep_rows: bool = False,
) -> Frame:
    """Parse and validate one frame; arrays are zero-copy ``np.frombuffer`` views of ``data``.

    ``expected_shapes`` (one shape per array) is checked before the payload length, so a
    replica built from a different model is told which array differs. ``require_finite``
    refuses NaN/Inf, which would otherwise poison the parameters for every replica.
    ``keep_rows``: row-sparse arrays stay ``RowSparse`` instead of being densified.
    Raises ``ProtocolError`` (a ``ValueError``) naming the first problem found.
    """
    mv = memoryview(data)
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
    header, offset = _read_header(mv)
    kind, step = header.get("kind"), header.get("step")
    replica, meta = header.get("replica", ""), header.get("meta", {})
    _check_fields(kind, step, replica, {} if meta is None else meta)
    entries = header.get("arrays")
    if not isinstance(entries, list):
        raise ProtocolError(f"header field 'arrays' must be a list, got {entries!r:.80}")
    parsed = [_parse_shape(i, e, kind) for i, e in enumerate(entries)]
    shapes = [shape for shape, _, _ in parsed]

    if expected_shapes is not None:
        if len(shapes) != len(expected_shapes):
            raise ProtocolError(f"expected {len(expected_shapes)} arrays, got {len(shapes)}")
        for i, (got, want) in enumerate(zip(shapes, expected_shapes)):
            if got != tuple(want):
                raise ProtocolError(
                    f"shape mismatch at array {i}: got {got} expected {tuple(want)}"
                )

    # Python ints: a hostile shape like [2**40, 2**40] cannot overflow into a small number.
    sizes = [math.prod(s) for s in shapes]
    payload = len(mv) - offset
    need = sum(k * 4 * (1 + math.prod(shape[1:])) if dtype == "rows" else
               size * _ITEMSIZE[dtype] if k is None else k * (4 + _ITEMSIZE[dtype])
               for size, (shape, dtype, k) in zip(sizes, parsed))
    if payload != need:
        raise ProtocolError(f"payload is {payload} bytes but shapes need {need}")

    arrays = []
    for i, (size, (shape, dtype, nnz)) in enumerate(zip(sizes, parsed)):
        if dtype == "rows":
            arr, offset = _rows(mv, offset, i, shape, nnz)
            if require_finite and not np.isfinite(arr.values).all():
                raise ProtocolError(f"non-finite value (NaN/Inf) in array {i} (shape {shape})")
            arrays.append(arr if keep_rows else arr.to_dense())
            continue
        if dtype == DTYPE and nnz is None:  # the common case: a zero-copy view
            arr = np.frombuffer(mv, dtype=_F32, count=size, offset=offset).reshape(shape)
            offset += size * _F32.itemsize
        else:
            arr, offset = _decompress(mv, offset, i, shape, size, dtype, nnz)
        if require_finite and not np.isfinite(arr).all():
            raise ProtocolError(f"non-finite value (NaN/Inf) in array {i} (shape {shape})")
        arrays.append(arr)
    return Frame(kind, step, replica, arrays, dict(meta or {}))


def _rows(mv: memoryview, offset: int, i: int, shape: tuple, k: int
          ) -> tuple[RowSparse, int]:
    """A row-sparse array (indices range-checked: distinct, ascending, inside the shape)."""
    rows = np.frombuffer(mv, dtype=_U32, count=k, offset=offset)
    offset += 4 * k
    if k and (int(rows[-1]) >= shape[0] or (k > 1 and not (np.diff(rows.astype(np.int64)) > 0)
                                            .all())):
        raise ProtocolError(f"array {i}: row indices must be distinct, ascending and below "
                            f"{shape[0]} for shape {shape}")
    count = k * math.prod(shape[1:])
    values = np.frombuffer(mv, dtype=_F32, count=count, offset=offset).reshape(k, *shape[1:])
    return RowSparse(shape, rows, values), offset + 4 * count


def _decompress(mv: memoryview, offset: int, i: int, shape: tuple, size: int, dtype: str,
                nnz: int | None) -> tuple[np.ndarray, int]:
    """A compressed array as a new dense float32 array, and the offset after it."""
    raw_dtype = np.dtype("<f2") if dtype == "<f2" else np.dtype("<u2") if dtype == "bf16" else _F32
    if nnz is None:
        raw = np.frombuffer(mv, dtype=raw_dtype, count=size, offset=offset)
        return _to_float32(raw, dtype).reshape(shape), offset + size * raw_dtype.itemsize
    indices = np.frombuffer(mv, dtype=_U32, count=nnz, offset=offset)
    offset += nnz * 4
    if nnz and int(indices.max()) >= size:
        raise ProtocolError(f"array {i}: sparse index {int(indices.max())} is out of range for "
                            f"shape {shape}")
    values = np.frombuffer(mv, dtype=raw_dtype, count=nnz, offset=offset)
    dense = np.zeros(size, np.float32)
    dense[indices] = _to_float32(values, dtype)
    return dense.reshape(shape), offset + nnz * raw_dtype.itemsize

