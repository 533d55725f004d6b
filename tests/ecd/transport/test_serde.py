"""The seam: every runtime record survives protobuf and back unchanged, and errors map to the
gRPC status their class names."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecd import codec
from ecd.errors import (
    AuthenticationError,
    IntegrityError,
    LimitError,
    NotFoundError,
    PreconditionError,
    RequestError,
    UnavailableError,
)
from ecd.split import Preferences
from ecd.leakage import PrivacyNotMeasuredError
from ecd.transport import serde
from ecd.transport.catalog import to_status
from ecd.types import (
    Assignment,
    DeviceRegistration,
    EdgeHeartbeat,
    EdgeRegistration,
    Encoding,
    FileChunk,
    Frame,
    FrameError,
    HeadOutput,
    HeadSpec,
    PartitionRequest,
    PreferencesUpdate,
    Result,
    Split,
)
from ecd.v1 import ecd_pb2 as pb

ids = st.text(alphabet="abcdef0123456789", min_size=1, max_size=12)
u32 = st.integers(0, 2**32 - 1)
f32 = st.floats(-1e4, 1e4, width=32)  # inside float16 range
times = st.floats(0, 1e3)


@st.composite
def frames(draw) -> Frame:
    encoding = draw(st.sampled_from(list(Encoding)))
    x = np.asarray(draw(st.lists(f32, min_size=1, max_size=16)), np.float32)[None]
    pixels = np.abs(x).astype(np.uint8).reshape(1, 1, -1, 1)
    return Frame(
        device_id=draw(ids), frame_id=draw(st.integers(0, 2**64 - 1)), token=draw(ids), model_id=draw(ids),
        model_version=draw(ids), split=Split(draw(u32), draw(u32)),
        tensor=codec.encode_image(pixels) if encoding is Encoding.UINT8 else codec.encode(x, encoding),
        captured_unix_ns=draw(st.integers(0, 2**62)), device_compute_s=draw(times), edge_compute_s=draw(times),
        uplink_bytes=draw(st.integers(0, 2**40)),
    )


@settings(max_examples=60, deadline=None)
@given(frames())
def test_frame_round_trip(frame: Frame) -> None:
    msg = serde.frame_to_pb(frame)
    back = serde.frame_from_pb(pb.Frame.FromString(msg.SerializeToString()))
    assert back.wire_bytes == msg.ByteSize() > 0
    back.wire_bytes = 0
    assert back == frame


@st.composite
def results(draw) -> Result:
    refused = draw(st.booleans())
    heads = [] if refused else [
        HeadOutput(draw(ids), draw(ids), draw(st.integers(0, 100)), draw(st.lists(f32, max_size=5)))
        for _ in range(draw(st.integers(0, 3)))
    ]
    return Result(
        device_id=draw(ids), frame_id=draw(st.integers(0, 2**64 - 1)), split=Split(draw(u32), draw(u32)), heads=heads,
        error=FrameError(draw(st.sampled_from([c.name for c in grpc.StatusCode if c is not grpc.StatusCode.OK])), draw(st.text()))
        if refused else None,
        device_compute_s=draw(times), edge_compute_s=draw(times), cloud_compute_s=draw(times),
        uplink_bytes=draw(st.integers(0, 2**40)), edge_to_cloud_bytes=draw(st.integers(0, 2**40)),
        output=draw(st.lists(f32, max_size=10)),
    )


@settings(max_examples=60, deadline=None)
@given(results())
def test_result_round_trip(result: Result) -> None:
    assert serde.result_from_pb(pb.Result.FromString(serde.result_to_pb(result).SerializeToString())) == result


def test_control_plane_round_trips() -> None:
    prefs = Preferences(0.3, 0.7, 2)
    cases = [
        (Assignment("d1", "tok", "10.0.0.2:5000", "digits_cnn", "abc", Split(2, 5), 3, prefs),
         serde.assignment_to_pb, serde.assignment_from_pb),
        (DeviceRegistration("phone", "pi4", "wifi", prefs, "digits_cnn", 3, Encoding.INT8),
         serde.registration_to_pb, serde.registration_from_pb),
        (PreferencesUpdate("d1", "tok", prefs, 4), serde.update_to_pb, serde.update_from_pb),
        (EdgeRegistration("127.0.0.1:7", 12.5), serde.edge_registration_to_pb, serde.edge_registration_from_pb),
        (EdgeHeartbeat("e1", 3.25, 7), serde.heartbeat_to_pb, serde.heartbeat_from_pb),
        (PartitionRequest("digits_cnn", "v", 1, 4, 4096), serde.partition_request_to_pb, serde.partition_request_from_pb),
        (FileChunk("manifest.json", "ab" * 32, 10, 4, b"\x00\x01"), serde.chunk_to_pb, serde.chunk_from_pb),
        (HeadSpec("digits_cnn", "parity", ["even", "odd"], [0.5] * 20, [0.0, 1.0], "probabilities"),
         serde.head_spec_to_pb, serde.head_spec_from_pb),
    ]
    for record, to_pb, from_pb in cases:
        msg = to_pb(record)
        assert from_pb(type(msg).FromString(msg.SerializeToString())) == record, type(record).__name__


def test_unknown_wire_values_reach_the_core_as_numbers() -> None:
    """The seam does not guess: an encoding it does not know stays a number the core refuses by name."""
    msg = pb.RegisterDeviceRequest(preferences=pb.Preferences(w_energy=1, w_privacy=1), encoding=99)
    assert serde.registration_from_pb(msg).encoding == 99
    assert serde.head_spec_from_pb(pb.HeadSpec(input=pb.HeadSpec.INPUT_UNSPECIFIED)).input == "unspecified"
    with pytest.raises(RequestError, match="w_energy"):
        serde.preferences_from_pb(pb.Preferences(w_energy=float("nan"), w_privacy=1))


@pytest.mark.parametrize("exc,code", [
    (RequestError("x: bad"), grpc.StatusCode.INVALID_ARGUMENT),
    (PreconditionError("x: later"), grpc.StatusCode.FAILED_PRECONDITION),
    (PrivacyNotMeasuredError("no curve"), grpc.StatusCode.FAILED_PRECONDITION),
    (AuthenticationError("token: unknown"), grpc.StatusCode.UNAUTHENTICATED),
    (NotFoundError("edge_id: gone"), grpc.StatusCode.NOT_FOUND),
    (UnavailableError("cloud: down"), grpc.StatusCode.UNAVAILABLE),
    (LimitError("tensor: too big"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (IntegrityError("block: sha256"), grpc.StatusCode.DATA_LOSS),
])
def test_catalog_maps_each_error_to_its_status(exc: Exception, code: grpc.StatusCode) -> None:
    assert to_status(exc) == (code, str(exc))
    result = serde.result_to_pb(Result("d", 1, Split(0, 0), error=FrameError.from_exception(exc)))
    assert result.error.code == code.value[0] and result.error.message == str(exc)


def test_catalog_never_leaks_an_unexpected_error() -> None:
    code, message = to_status(KeyError("/secret/path"))
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in message
