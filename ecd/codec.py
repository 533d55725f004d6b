"""Tensor encoding on the wire: float32, float16, or int8 affine (scale / zero point).

``decode`` checks encoding, shape and byte count against what the receiver expects *before*
touching the payload, and raises :class:`~ecd.transport.catalog.StatusError` carrying the gRPC status and a message naming
the field — the receiver turns it into a per-frame error result.
"""

from __future__ import annotations

import math
import grpc
import numpy as np

from ecd.errors import EcdError
from ecd.transport.catalog import StatusError
from ecd.v1 import ecd_pb2 as pb

ENCODINGS = {"float32": pb.FLOAT32, "float16": pb.FLOAT16, "int8": pb.INT8_AFFINE}
ENCODING_NAMES = {v: k for k, v in ENCODINGS.items()}
_ITEMSIZE = {pb.FLOAT32: 4, pb.FLOAT16: 2, pb.INT8_AFFINE: 1}
_DTYPE = {pb.FLOAT32: np.dtype("<f4"), pb.FLOAT16: np.dtype("<f2"), pb.INT8_AFFINE: np.dtype("i1")}


def encoding_value(name: str) -> int:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise EcdError(f"encoding: expected one of {', '.join(ENCODINGS)}, got {name!r}") from None


def encode(x: np.ndarray, encoding: int = pb.FLOAT32) -> pb.Tensor:
    x = np.ascontiguousarray(x, dtype=np.float32)
    t = pb.Tensor(encoding=encoding, shape=list(x.shape))
    if encoding == pb.FLOAT32:
        t.data = x.astype("<f4", copy=False).tobytes()
    elif encoding == pb.FLOAT16:
        t.data = x.astype("<f2").tobytes()
    elif encoding == pb.INT8_AFFINE:
        lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
        scale = (hi - lo) / 255.0 if hi > lo else 1.0
        zero_point = int(round(-128 - lo / scale))
        q = np.clip(np.rint(x / scale) + zero_point, -128, 127).astype(np.int8)
        t.data, t.scale, t.zero_point = q.tobytes(), scale, zero_point
    else:
        raise EcdError(f"encoding: unsupported value {encoding}")
    return t


def decode(t: pb.Tensor, expected_shape: tuple[int, ...], max_bytes: int, field: str = "tensor") -> np.ndarray:
    """The float32 batch in ``t``, after checking it against ``[N, *expected_shape]``."""
    if t.encoding not in _ITEMSIZE:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}.encoding: expected one of FLOAT32, FLOAT16, INT8_AFFINE, got {t.encoding}",
        )
    shape = tuple(t.shape)
    want = ("N", *expected_shape)
    if len(shape) != len(want) or shape[1:] != tuple(expected_shape) or shape[0] < 1:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}.shape: expected [{', '.join(map(str, want))}], got {list(shape)}",
        )
    itemsize = _ITEMSIZE[t.encoding]
    n_bytes = math.prod(shape) * itemsize
    if n_bytes > max_bytes:
        raise StatusError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{field}: {n_bytes} bytes for shape {list(shape)} exceed the limit of {max_bytes} bytes (max_tensor_bytes)",
        )
    if len(t.data) != n_bytes:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}.data: expected {n_bytes} bytes for shape {list(shape)} "
            f"{ENCODING_NAMES[t.encoding]}, got {len(t.data)}",
        )
    raw = np.frombuffer(t.data, dtype=_DTYPE[t.encoding]).reshape(shape)
    if t.encoding == pb.INT8_AFFINE:
        if not (math.isfinite(t.scale) and t.scale > 0):
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}.scale: expected a finite value > 0, got {t.scale}")
        return ((raw.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)).astype(np.float32)
    x = raw.astype(np.float32)
    if not np.isfinite(x).all():
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}.data: holds NaN or infinite values")
    return x
