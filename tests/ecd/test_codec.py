"""The tensor codec's exact behaviour: the int8 affine parameters, the values at its clipping edges,
and every check ``decode`` makes before touching a payload, with the message that names it.

``test_codec_and_proto.py`` round-trips tensors within a tolerance; a scale or zero point that is
off, or a check that lets a wrong shape through, can pass that. These pin them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ecd import codec
from ecd.errors import LimitError, RequestError
from ecd.types import Encoding, Tensor

F32 = np.float32
TINY = float(np.finfo(np.float32).tiny)


def test_int8_parameters_by_hand() -> None:
    # all positive: the range still includes 0, so lo = 0, hi = 3: scale = f32(3/255), zero point −128
    t = codec.encode(np.array([[2.0, 3.0]], dtype=F32), Encoding.INT8)
    assert t.scale == float(F32(3 / 255)) and t.zero_point == -128
    assert np.frombuffer(t.data, np.int8).tolist() == [int(np.rint(2 / t.scale)) - 128, 127]
    # all negative: hi = 0, lo = −3: zero point = round(−128 + 3/scale) = 127
    t = codec.encode(np.array([[-3.0, -2.0]], dtype=F32), Encoding.INT8)
    assert t.scale == float(F32(3 / 255)) and t.zero_point == 127
    assert np.frombuffer(t.data, np.int8).tolist() == [-128, int(np.rint(-2 / t.scale)) + 127]


def test_int8_of_a_constant_zero_tensor_has_scale_one() -> None:
    t = codec.encode(np.zeros((1, 3), dtype=F32), Encoding.INT8)
    assert (t.scale, t.zero_point) == (1.0, -128)
    assert np.frombuffer(t.data, np.int8).tolist() == [-128] * 3
    assert codec.decode(t, (3,), 1 << 20).tolist() == [[0.0, 0.0, 0.0]]


def test_int8_scale_is_floored_at_the_smallest_normal_float32() -> None:
    t = codec.encode(np.array([[0.0, 1e-37]], dtype=F32), Encoding.INT8)  # (hi − lo)/255 is subnormal
    assert t.scale == TINY


def test_int8_decodes_with_exactly_the_wire_scale() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(F32)
    t = codec.encode(x, Encoding.INT8)
    q = np.frombuffer(t.data, np.int8).reshape(2, 5)
    want = (q.astype(F32) - F32(t.zero_point)) * F32(t.scale)
    got = codec.decode(t, (5,), 1 << 20)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert np.abs(got - x).max() <= t.scale / 2 + 1e-6


@pytest.mark.parametrize(
    "values",
    [
        [0.00018924438336398453, -0.0002749295672401786, 0.0003769058675970882, 0.0011413742322474718, 0.0006840151036158204],
        [-646.519775390625, -420.67266845703125, 95.56919860839844, -1093.21826171875],
    ],
    ids=["rounds-below--128", "rounds-above-127"],
)
def test_int8_clips_values_that_round_past_the_range(values: list[float]) -> None:
    """Rounding puts one value of each of these at −129 or 128 before clipping: without the clip it
    would wrap around in int8 and decode to the other end of the range."""
    x = np.array([values], dtype=F32)
    t = codec.encode(x, Encoding.INT8)
    q = np.frombuffer(t.data, np.int8)
    assert q.min() >= -128 and q.max() <= 127
    assert np.abs(codec.decode(t, (len(values),), 1 << 20) - x).max() <= 1.5 * t.scale


def test_float64_input_is_quantised_as_its_float32_values() -> None:
    # float64 values whose range, taken before rounding to float32, gives another int8 scale
    x = np.array([[361.59505490948476, 1304.0000451301373, 947.0809631292421, -703.7352358069926]])
    for enc in Encoding.for_activations():
        a, b = codec.encode(x, enc), codec.encode(x.astype(F32), enc)
        assert (a.data, a.shape, a.scale, a.zero_point) == (b.data, b.shape, b.scale, b.zero_point), enc


def test_int8_overflow_is_refused_quietly() -> None:
    """A scale near the float32 maximum overflows to inf when dequantised: refused by name, with no
    RuntimeWarning on the way (a service logs warnings; this is a client's bad frame, not a fault)."""
    t = Tensor(Encoding.INT8, (1, 2), np.array([127, -128], np.int8).tobytes(), 3e38, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RequestError, match=r"^tensor\.data: holds NaN or infinite values"):
            codec.decode(t, (2,), 1 << 20)


def test_float_encodings_are_little_endian_bytes() -> None:
    x = np.array([[1.5, -2.0]], dtype=F32)
    assert codec.encode(x, Encoding.FLOAT32).data == np.array([1.5, -2.0], "<f4").tobytes()
    assert codec.encode(x, Encoding.FLOAT16).data == np.array([1.5, -2.0], "<f2").tobytes()
    assert codec.encode(x).encoding is Encoding.FLOAT32


def test_encode_refuses_an_unknown_encoding() -> None:
    with pytest.raises(RequestError, match="^encoding: unsupported value 'bfloat16'$"):
        codec.encode(np.zeros((1, 2), dtype=F32), "bfloat16")  # type: ignore[arg-type]


def tensor(shape: tuple[int, ...], encoding: Encoding = Encoding.FLOAT32) -> Tensor:
    return Tensor(encoding, shape, bytes(int(np.prod(shape)) * encoding.itemsize))


@pytest.mark.parametrize(
    "shape",
    [(1, 4, 3), (1, 12), (3, 4), (1, 3, 4, 1)],  # each with its own right byte count, the wrong shape
)
def test_decode_refuses_a_wrong_shape_with_the_right_byte_count(shape: tuple[int, ...]) -> None:
    with pytest.raises(RequestError, match=rf"^act\.shape: expected \[N, 3, 4\], got \[{', '.join(map(str, shape))}\]$"):
        codec.decode(tensor(shape), (3, 4), 1 << 20, field="act")


def test_decode_refuses_an_empty_batch() -> None:
    with pytest.raises(RequestError, match=r"^tensor\.shape: expected \[N, 3, 4\], got \[0, 3, 4\]$"):
        codec.decode(tensor((0, 3, 4)), (3, 4), 1 << 20)


def test_decode_takes_a_tensor_exactly_at_the_byte_limit() -> None:
    assert codec.decode(tensor((2, 3, 4)), (3, 4), 2 * 12 * 4).shape == (2, 3, 4)
    with pytest.raises(LimitError, match=r"max_tensor_bytes"):
        codec.decode(tensor((2, 3, 4)), (3, 4), 2 * 12 * 4 - 1)


def test_decode_names_the_byte_count_it_expected() -> None:
    t = Tensor(Encoding.FLOAT16, (1, 3, 4), bytes(10))
    with pytest.raises(RequestError, match=r"^tensor\.data: expected 24 bytes for shape \[1, 3, 4\] float16, got 10$"):
        codec.decode(t, (3, 4), 1 << 20)


def test_decode_refuses_an_unknown_encoding_by_name() -> None:
    t = Tensor(7, (1, 2), bytes(8))  # type: ignore[arg-type]
    with pytest.raises(RequestError, match=r"^tensor\.encoding: expected one of FLOAT32, FLOAT16, INT8_AFFINE, UINT8_IMAGE, got 7$"):
        codec.decode(t, (2,), 1 << 20)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_decode_refuses_a_bad_int8_scale(scale: float) -> None:
    t = Tensor(Encoding.INT8, (1, 2), bytes(2), scale, 0)
    with pytest.raises(RequestError, match=r"^tensor\.scale: expected a finite value > 0"):
        codec.decode(t, (2,), 1 << 20)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_decode_refuses_non_finite_floats(bad: float) -> None:
    for enc, dtype in ((Encoding.FLOAT32, "<f4"), (Encoding.FLOAT16, "<f2")):
        t = Tensor(enc, (1, 2), np.array([1.0, bad], dtype).tobytes())
        with pytest.raises(RequestError, match=r"^tensor\.data: holds NaN or infinite values"):
            codec.decode(t, (2,), 1 << 20)


def test_decode_returns_float32_of_the_payload() -> None:
    t = Tensor(Encoding.FLOAT16, (1, 2), np.array([0.5, -4.0], "<f2").tobytes())
    x = codec.decode(t, (2,), 1 << 20)
    assert x.dtype == np.float32 and x.tolist() == [[0.5, -4.0]]


# --- the raw image at split 0, and decoding at a split (issue 19: reached only by the tiers' tests) -------


def test_grey_images_gain_a_channel_and_keep_their_bytes() -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    t = codec.encode_image(images)
    assert (t.encoding, t.shape, t.data) == (Encoding.UINT8, (2, 3, 4, 1), images.tobytes())
    colour = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    assert codec.encode_image(colour).shape == (2, 3, 4, 3)  # already [N, H, W, C]
    assert codec.encode_image(colour[:, ::2]).data == np.ascontiguousarray(colour[:, ::2]).tobytes()  # a strided view


def test_encode_image_refuses_anything_but_uint8_pixels() -> None:
    with pytest.raises(RequestError, match=r"^images: expected uint8 pixels, got float32$"):
        codec.encode_image(np.zeros((1, 8, 8), np.float32))


def test_decode_at_split_0_normalises_the_raw_image_with_the_manifests_input_spec() -> None:
    from ecd import zoo

    manifest = zoo.load_manifest(zoo.DEFAULT_MODEL)
    c, h, w = manifest.input.shape
    assert c == 1  # the bundled digits are grey
    images = np.random.default_rng(0).integers(0, 256, (2, h, w), dtype=np.uint8)
    x = codec.decode_at(codec.encode_image(images), manifest, 0, max_bytes=1 << 20)
    assert x.dtype == np.float32 and x.shape == (2, 1, h, w)
    np.testing.assert_array_equal(x, manifest.input.preprocess(images))
    with pytest.raises(RequestError, match=r"^frame.encoding: UINT8_IMAGE is the raw image, for split 0 only; got split 2$"):
        codec.decode_at(codec.encode_image(images), manifest, 2, max_bytes=1 << 20, field="frame")
    with pytest.raises(LimitError, match="frame"):
        codec.decode_at(codec.encode_image(images), manifest, 0, max_bytes=10, field="frame")


def test_decode_at_a_split_takes_that_splits_activation_shape() -> None:
    from ecd import zoo

    manifest = zoo.load_manifest(zoo.DEFAULT_MODEL)
    shape = manifest.activation_shape(3)
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)  # shape: one sample's
    np.testing.assert_array_equal(codec.decode_at(codec.encode(x), manifest, 3, max_bytes=1 << 20), x)
    with pytest.raises(RequestError):
        codec.decode_at(codec.encode(x), manifest, 4, max_bytes=1 << 20)  # another split's shape
    many = np.repeat(x, 3, axis=0)
    with pytest.raises(LimitError):
        codec.decode_at(codec.encode(many), manifest, 3, max_bytes=1 << 20, max_batch=2)
    assert codec.decode_at(codec.encode(many), manifest, 3, max_bytes=1 << 20, max_batch=3).shape[0] == 3
