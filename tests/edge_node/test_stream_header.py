"""The edge's binding check (compact frames, protocol revision 2): a device stream's first frame
binds who sends, with which token, for which model, from which split, in which encoding
(``ecd.types.StreamHeader``); a later frame that sets one of these to another value is refused
alone, naming the field, and the stream goes on. Over a real edge node and cloud on loopback
ports, one pair for the module."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Tiers, compact, frame_for, start_tiers, stop_tiers

from ecd import zoo
from ecd.manifest import load_heldout
from ecd.v1 import ecd_pb2 as pb

M = zoo.load_manifest("digits_cnn")
X = M.input.preprocess(load_heldout(M).images[:4])
INVALID = 3  # INVALID_ARGUMENT


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    t = start_tiers(Path(tmp_path_factory.mktemp("header")))
    yield t
    stop_tiers(t)


@pytest.fixture(scope="module")
def device(pair: Tiers) -> pb.Assignment:
    return pair.register(split=3)


def answers(pair: Tiers, frames: list[pb.Frame]) -> list[pb.Result]:
    results = sorted(pair.edge_stub.Stream(iter(frames), timeout=60), key=lambda r: r.frame_id)
    assert [r.frame_id for r in results] == [f.frame_id for f in frames]  # each frame answered once
    return results


def stream_of(a: pb.Assignment, n: int = 3) -> list[pb.Frame]:
    return compact([frame_for(a, M, X[i : i + 1], i + 1) for i in range(n)])


def test_compact_frames_are_served_with_the_bound_fields(pair: Tiers, device: pb.Assignment) -> None:
    frames = stream_of(device)
    assert frames[1].device_id == "" and frames[1].token == "" and frames[1].tensor.encoding == pb.ENCODING_UNSPECIFIED
    results = answers(pair, frames)
    assert all(not r.HasField("error") for r in results)
    assert {r.device_id for r in results} == {device.device_id}


def test_a_later_frame_repeating_the_bound_values_is_served(pair: Tiers, device: pb.Assignment) -> None:
    frames = stream_of(device)
    frames[1].CopyFrom(frame_for(device, M, X[1:2], 2))  # complete: every bound field set to its bound value
    assert all(not r.HasField("error") for r in answers(pair, frames))


CHANGES = {
    "device_id": (lambda f, a: setattr(f, "device_id", "someone-else"), "device_id: differs from the stream's first frame: bound to"),
    "token": (lambda f, a: setattr(f, "token", "not-" + a.token), "token: differs from the stream's first frame; open a new stream"),
    "model_id": (lambda f, a: setattr(f, "model_id", "other_model"), "model_id: differs from the stream's first frame: bound to"),
    "model_version": (lambda f, a: setattr(f, "model_version", "0" * 16), "model_version: differs from the stream's first frame"),
    "split_device": (lambda f, a: setattr(f, "split_device", a.split_device + 1), "split_device: differs from the stream's first frame"),
    "encoding": (lambda f, a: setattr(f.tensor, "encoding", pb.FLOAT16), "tensor.encoding: differs from the stream's first frame"),
}


@pytest.mark.parametrize("field", list(CHANGES))
def test_a_later_frame_changing_a_bound_field_is_refused_alone(pair: Tiers, device: pb.Assignment, field: str) -> None:
    change, message = CHANGES[field]
    frames = stream_of(device)
    change(frames[1], device)
    results = answers(pair, frames)
    assert results[1].error.code == INVALID and results[1].error.message.startswith(message), results[1].error.message
    assert results[1].device_id == device.device_id if field != "device_id" else results[1].device_id == "someone-else"
    assert not results[0].HasField("error") and not results[2].HasField("error")  # the stream goes on
    if field == "token":
        assert device.token not in results[1].error.message  # the bound token is never shown


def test_a_compact_frame_before_any_header_is_refused(pair: Tiers, device: pb.Assignment) -> None:
    """A stream whose first frame leaves the bound fields unset has nothing to bind them to: the
    frame is refused (no device), not served as some device's."""
    frames = stream_of(device)
    (r,) = answers(pair, [frames[1]])
    assert r.error.code == 16 and r.error.message == "token: unknown device token for device_id ''" and not r.output


def test_complete_frames_without_a_header_are_still_served(pair: Tiers, device: pb.Assignment) -> None:
    """Revision 1 (``protocol_revision`` 0): every frame stands alone, and may even change split."""
    frames = [frame_for(device, M, X[i : i + 1], i + 1) for i in range(3)]
    assert all(f.protocol_revision == 0 for f in frames)
    assert all(not r.HasField("error") for r in answers(pair, frames))


def test_an_unknown_protocol_revision_is_refused_by_name(pair: Tiers, device: pb.Assignment) -> None:
    first = frame_for(device, M, X[:1], 1)
    first.protocol_revision = 4
    (r,) = answers(pair, [first])
    assert r.error.code == 9 and r.error.message.startswith("protocol_revision: this node speaks revisions 1..3 of ecd.v1, got 4")
