"""The runtime's own records (ecd.types): what they accept, refuse and fill in, without a network.
The stream header's binding (compact frames) is checked field by field here; the edge's use of it
over gRPC in tests/edge_node/test_stream_header.py."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from ecd.errors import PreconditionError, RequestError
from ecd.types import (
    KNOWN_REVISIONS,
    ONE_FRAME_REVISION,
    PROTOCOL_REVISION,
    Encoding,
    Frame,
    FrameError,
    HeadOutput,
    Position,
    Result,
    Split,
    StreamHeader,
    Tensor,
)

# --- Encoding ----------------------------------------------------------------------------------------


def test_encodings_name_their_item_size() -> None:
    assert {e: e.itemsize for e in Encoding} == {Encoding.FLOAT32: 4, Encoding.FLOAT16: 2, Encoding.INT8: 1, Encoding.UINT8: 1}


def test_a_user_chooses_among_the_activation_encodings_only() -> None:
    assert Encoding.for_activations() == (Encoding.FLOAT32, Encoding.FLOAT16, Encoding.INT8)


def test_an_encoding_is_parsed_by_its_name_and_the_error_names_the_field() -> None:
    assert [Encoding.parse(e.value) for e in Encoding] == list(Encoding)
    with pytest.raises(RequestError) as e:
        Encoding.parse("FLOAT32")
    assert str(e.value) == "encoding: expected one of float32, float16, int8, uint8, got 'FLOAT32'"
    with pytest.raises(RequestError, match=r"^--encoding: expected one of"):
        Encoding.parse("bf16", "--encoding")


# --- Position ----------------------------------------------------------------------------------------


def test_a_position_is_parsed_from_lat_lon_degrees() -> None:
    assert Position.parse("40.7,-74.0") == Position(40.7, -74.0)
    assert Position.parse(" 90 , 180 ") == Position(90.0, 180.0)
    assert Position.parse("-90,-180") == Position(-90.0, -180.0)
    assert Position.parse("") is None and Position.parse("   ") is None  # unknown


@pytest.mark.parametrize("text", ["40.7", "1,2,3", "north,west", "40.7;-74"])
def test_text_that_is_no_position_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(RequestError) as e:
        Position.parse(text, "--position")
    assert str(e.value) == f"--position: expected LAT,LON in degrees, got {text!r}"
    with pytest.raises(RequestError, match=r"^position: expected LAT,LON"):
        Position.parse(text)


@pytest.mark.parametrize(("lat", "lon", "message"), [
    (90.5, 0.0, "p.lat: expected degrees in [-90, 90], got 90.5"),
    (-90.5, 0.0, "p.lat: expected degrees in [-90, 90], got -90.5"),
    (float("nan"), 0.0, "p.lat: expected degrees in [-90, 90], got nan"),
    (0.0, 180.5, "p.lon: expected degrees in [-180, 180], got 180.5"),
    (0.0, -180.5, "p.lon: expected degrees in [-180, 180], got -180.5"),
    (0.0, float("inf"), "p.lon: expected degrees in [-180, 180], got inf"),
])
def test_a_position_off_the_globe_is_refused_naming_the_coordinate(lat: float, lon: float, message: str) -> None:
    with pytest.raises(RequestError) as e:
        Position(lat, lon).check("p")
    assert str(e.value) == message
    with pytest.raises(RequestError, match=r"^position\.l(at|on): "):
        Position(lat, lon).check()
    with pytest.raises(RequestError, match=r"^where\.l(at|on): "):
        Position.parse(f"{lat},{lon}", "where")


def test_a_position_on_the_edges_of_the_globe_is_one() -> None:
    for lat, lon in ((90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)):
        p = Position(lat, lon)
        assert p.check() is p


# --- frames and results ------------------------------------------------------------------------------


def frame(device_id: str = "d", token: str = "s3cret", model_id: str = "m", model_version: str = "v1", split: Split = Split(2, 0),
          encoding: Encoding | int = Encoding.FLOAT32, revision: int = 0, frame_id: int = 1) -> Frame:
    return Frame(device_id, frame_id, token, model_id, model_version, split, Tensor(encoding, (1, 4), b"\0" * 16, 0.5, 3),
                 protocol_revision=revision)


def unset(frame_id: int, split_edge: int = 0) -> Frame:
    """A later frame of a compact stream: the bound fields left unset."""
    return frame("", "", "", "", Split(0, split_edge), 0, frame_id=frame_id)


def test_the_first_frame_binds_the_stream() -> None:
    h = StreamHeader.of(frame(revision=2))
    assert h == StreamHeader("d", "s3cret", "m", "v1", 2, Encoding.FLOAT32, True)
    with pytest.raises(FrozenInstanceError):
        h.token = "other"  # type: ignore[misc]


@pytest.mark.parametrize("revision", [0, 1])
def test_a_revision_1_stream_binds_nothing(revision: int) -> None:
    h = StreamHeader.of(frame(revision=revision))
    assert not h.compact
    later = frame("e", "other", "m2", "v2", Split(3, 1), Encoding.INT8, frame_id=2)
    assert h.complete(later) is later and later.device_id == "e" and later.split == Split(3, 1)  # stands alone
    bare = unset(3)
    assert h.complete(bare).device_id == ""  # not filled in either


def test_revisions_known_and_unknown() -> None:
    assert PROTOCOL_REVISION == 3 and KNOWN_REVISIONS == (0, 1, 2, 3)
    assert StreamHeader.of(frame(revision=PROTOCOL_REVISION)).compact
    assert StreamHeader.of(frame(revision=ONE_FRAME_REVISION)).compact
    for revision in (4, -1, 9):
        with pytest.raises(PreconditionError) as e:
            StreamHeader.of(frame(revision=revision))
        assert str(e.value) == f"protocol_revision: this node speaks revisions 1..3 of ecd.v1, got {revision}"


def test_a_later_frame_is_completed_with_the_bound_fields() -> None:
    h = StreamHeader.of(frame(revision=2))
    later = unset(7, split_edge=5)
    later.tensor = Tensor(0, (1, 4), b"\1" * 16, 0.25, 7)
    done = h.complete(later)
    assert done is later
    assert (done.device_id, done.token, done.model_id, done.model_version) == ("d", "s3cret", "m", "v1")
    assert done.split == Split(2, 5)  # the edge's half is the frame's own
    assert done.frame_id == 7
    assert done.tensor == Tensor(Encoding.FLOAT32, (1, 4), b"\1" * 16, 0.25, 7)


def test_a_later_frame_repeating_the_bound_values_is_taken() -> None:
    h = StreamHeader.of(frame(revision=2))
    again = frame(frame_id=2, split=Split(2, 4))
    tensor = again.tensor
    done = h.complete(again)
    assert (done.device_id, done.token, done.split) == ("d", "s3cret", Split(2, 4)) and done.tensor is tensor


@pytest.mark.parametrize(("field", "changed", "message"), [
    ("device_id", {"device_id": "e"}, "device_id: differs from the stream's first frame: bound to 'd', got 'e'; open a new stream to change it"),
    ("token", {"token": "stolen"}, "token: differs from the stream's first frame; open a new stream to change it"),
    ("model_id", {"model_id": "m2"}, "model_id: differs from the stream's first frame: bound to 'm', got 'm2'; open a new stream to change it"),
    ("model_version", {"model_version": "v2"},
     "model_version: differs from the stream's first frame: bound to 'v1', got 'v2'; open a new stream to change it"),
    ("split_device", {"split": Split(3, 0)}, "split_device: differs from the stream's first frame: bound to 2, got 3; open a new stream to change it"),
    ("encoding", {"encoding": Encoding.INT8},
     "tensor.encoding: differs from the stream's first frame (Encoding.FLOAT32); open a new stream to change it"),
])
def test_a_later_frame_changing_a_bound_field_is_refused_naming_it(field: str, changed: dict, message: str) -> None:
    h = StreamHeader.of(frame(revision=2))
    fields = {"device_id": "", "token": "", "model_id": "", "model_version": "", "split": Split(0, 0), "encoding": 0} | changed
    later = frame(fields["device_id"], fields["token"], fields["model_id"], fields["model_version"], fields["split"],
                  fields["encoding"], frame_id=4)
    with pytest.raises(RequestError) as e:
        h.complete(later)
    assert str(e.value) == message
    assert "s3cret" not in str(e.value) and "stolen" not in str(e.value)  # tokens are never shown
    # the error result still names the stream's device, and the frame keeps its own id
    assert later.device_id == ("e" if field == "device_id" else "d") and later.frame_id == 4
    assert later.token == fields["token"]  # the bound token is not copied into a refused frame


def test_the_bound_fields_are_checked_in_order() -> None:
    h = StreamHeader.of(frame(revision=2))
    with pytest.raises(RequestError, match="^token: "):
        h.complete(frame("", "x", "m2", "", Split(0, 0), Encoding.INT8))


def test_a_frame_error_carries_the_status_of_the_exception() -> None:
    assert FrameError.from_exception(RequestError("x: bad")) == FrameError("INVALID_ARGUMENT", "x: bad")
    assert FrameError.from_exception(PreconditionError("y: later")) == FrameError("FAILED_PRECONDITION", "y: later")
    internal = FrameError.from_exception(ValueError("secret path /etc/x"))
    assert internal.status == "INTERNAL" and "secret" not in internal.message


def test_a_result_is_ok_without_an_error_and_finds_its_heads() -> None:
    heads = [HeadOutput("class", "7", 7, [0.9]), HeadOutput("parity", "odd", 1, [0.1, 0.9])]
    r = Result("d", 3, Split(2, 4), heads=heads)
    assert r.ok and r.head("parity") is heads[1] and r.head("class") is heads[0] and r.head("none") is None
    refused = Result.refused(frame(frame_id=9, split=Split(2, 4)), FrameError("INVALID_ARGUMENT", "x"))
    assert not refused.ok
    assert (refused.device_id, refused.frame_id, refused.split, refused.heads) == ("d", 9, Split(2, 4), [])
    assert refused.error == FrameError("INVALID_ARGUMENT", "x")
