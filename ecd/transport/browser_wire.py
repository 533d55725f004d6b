"""pb <-> record for browser devices (issue 33): their enrolment, relayed by the edge node to the
cloud, and the binary WebSocket messages of a page's session, which are the same ``ecd.v1.Frame``
and ``ecd.v1.Result`` messages a gRPC device stream carries, one per WebSocket message."""

from __future__ import annotations

from dataclasses import replace

from google.protobuf.message import DecodeError

from ecd.errors import RequestError
from ecd.transport.serde import frame_from_pb, registration_from_pb, registration_to_pb, result_to_pb
from ecd.types import Enrolment, Frame, Result
from ecd.v1 import ecd_pb2 as pb


def enrolment_to_pb(e: Enrolment) -> pb.EnrolDeviceRequest:
    return pb.EnrolDeviceRequest(code=e.code, public_key=e.public_key, registration=registration_to_pb(e.registration),
                                 pinned_split=e.registration.split_device is not None)


def enrolment_from_pb(msg: pb.EnrolDeviceRequest) -> Enrolment:
    """``registration.split_device``: the split the page pins, or 0 and ``decide_split``: the cloud's choice."""
    reg = registration_from_pb(msg.registration)
    return Enrolment(msg.code, msg.public_key, reg if msg.pinned_split else replace(reg, split_device=None))


def frame_from_bytes(data: bytes) -> Frame:
    """A page's frame, as the serialized ``ecd.v1.Frame`` it sent; RequestError naming ``frame``
    for bytes that are not one."""
    msg = pb.Frame()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise RequestError(f"frame: {len(data)} bytes that are not a serialized ecd.v1.Frame") from None
    return frame_from_pb(msg)


def result_to_bytes(r: Result) -> bytes:
    return result_to_pb(r).SerializeToString()
