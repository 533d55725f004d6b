"""Tensor encoding on the wire: float32, float16, int8 affine (scale / zero point), or at split 0
the raw uint8 image.

``decode`` checks encoding, shape and byte count against what the receiver expects *before*
touching the payload, and raises an error naming the field (:class:`~ecd.errors.RequestError`, or
:class:`~ecd.errors.LimitError` over ``max_bytes``) — the receiver turns it into a per-frame error
result.
The float32 bytes a batch decodes to count against ``max_bytes`` too, and the batch size against
``max_batch``: a small int8 payload must not be able to stand for gigabytes of activations.
"""

from __future__ import annotations

import math

import numpy as np

from ecd.errors import LimitError, RequestError
from ecd.types import Encoding, Tensor

MAX_BATCH = 64  # images one frame may carry; the agent sends one

_DTYPE = {Encoding.FLOAT32: np.dtype("<f4"), Encoding.FLOAT16: np.dtype("<f2"), Encoding.INT8: np.dtype("i1"),
          Encoding.UINT8: np.dtype("u1")}


def encode_image(images: np.ndarray) -> Tensor:
    """Raw uint8 images ``[N, H, W]`` (grey) or ``[N, H, W, C]`` as sent at split 0: exactly as
    captured, a quarter of their normalised float32 (the receiver normalises, :func:`decode_at`)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise RequestError(f"images: expected uint8 pixels, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    return Tensor(Encoding.UINT8, tuple(int(d) for d in images.shape), np.ascontiguousarray(images).tobytes())


def decode_at(t: Tensor, manifest, split: int, max_bytes: int, field: str = "tensor", max_batch: int = MAX_BATCH) -> np.ndarray:
    """The float32 activation at ``split`` of ``manifest``'s model carried by ``t``: a UINT8 image
    (split 0 only) is normalised with the manifest's input spec, anything else decoded as is."""
    if t.encoding is Encoding.UINT8:
        if split != 0:
            raise RequestError(f"{field}.encoding: UINT8_IMAGE is the raw image, for split 0 only; got split {split}")
        c, h, w = manifest.input.shape
        return manifest.input.preprocess(decode(t, (h, w, c), max_bytes, field, max_batch))
    return decode(t, manifest.activation_shape(split), max_bytes, field, max_batch)


def encode(x: np.ndarray, encoding: Encoding = Encoding.FLOAT32) -> Tensor:
    x = np.ascontiguousarray(x, dtype=np.float32)
    shape = tuple(int(d) for d in x.shape)
    if encoding is Encoding.FLOAT32:
        return Tensor(encoding, shape, x.astype("<f4", copy=False).tobytes())
    if encoding is Encoding.FLOAT16:
        return Tensor(encoding, shape, x.astype("<f2").tobytes())
    if encoding is Encoding.INT8:
        lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
        # the wire carries the scale as float32: quantise with exactly the scale the receiver reads
        scale = max(float(np.float32((hi - lo) / 255.0)), float(np.finfo(np.float32).tiny)) if hi > lo else 1.0
        zero_point = int(round(-128 - lo / scale))
        q = np.clip(np.rint(x / scale) + zero_point, -128, 127).astype(np.int8)
        return Tensor(encoding, shape, q.tobytes(), scale, zero_point)
    raise RequestError(f"encoding: unsupported value {encoding!r}")


def decode(t: Tensor, expected_shape: tuple[int, ...], max_bytes: int, field: str = "tensor",
           max_batch: int = MAX_BATCH) -> np.ndarray:
    """The float32 batch in ``t``, after checking it against ``[N, *expected_shape]`` (a UINT8
    image comes back as its uint8 pixels, for :func:`decode_at` to normalise).

    Every limit is checked on the header, before a byte of the payload is touched: the batch size
    (a few KiB of int8 can stand for thousands of images, each of which the next blocks expand many
    times over), the wire bytes, and the bytes the batch takes once decoded to float32."""
    if not isinstance(t.encoding, Encoding):
        raise RequestError(f"{field}.encoding: expected one of FLOAT32, FLOAT16, INT8_AFFINE, UINT8_IMAGE, got {t.encoding}")
    shape = tuple(t.shape)
    want = ("N", *expected_shape)
    if len(shape) != len(want) or shape[1:] != tuple(expected_shape) or shape[0] < 1:
        raise RequestError(f"{field}.shape: expected [{', '.join(map(str, want))}], got {list(shape)}")
    if shape[0] > max_batch:
        raise LimitError(f"{field}.shape[0]: a batch of {shape[0]} exceeds the limit of {max_batch} (max_batch)")
    n_bytes = math.prod(shape) * t.encoding.itemsize
    decoded_bytes = math.prod(shape) * 4
    if max(n_bytes, decoded_bytes) > max_bytes:
        raise LimitError(
            f"{field}: {decoded_bytes} bytes as float32 for shape {list(shape)} exceed the limit of {max_bytes} bytes (max_tensor_bytes)"
        )
    if len(t.data) != n_bytes:
        raise RequestError(
            f"{field}.data: expected {n_bytes} bytes for shape {list(shape)} {t.encoding.value}, got {len(t.data)}"
        )
    raw = np.frombuffer(t.data, dtype=_DTYPE[t.encoding]).reshape(shape)
    if t.encoding is Encoding.UINT8:
        return raw
    if t.encoding is Encoding.INT8:
        if not (math.isfinite(t.scale) and t.scale > 0):
            raise RequestError(f"{field}.scale: expected a finite value > 0, got {t.scale}")
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            x = ((raw.astype(np.float32) - np.float32(t.zero_point)) * np.float32(t.scale)).astype(np.float32)
    else:
        x = raw.astype(np.float32)
    if not np.isfinite(x).all():
        raise RequestError(f"{field}.data: holds NaN or infinite values (after dequantising, for INT8_AFFINE)")
    return x
