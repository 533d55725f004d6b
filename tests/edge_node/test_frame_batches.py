"""Several frames per message (ecd.v1 revision 3, ``FrameBatch``) through the edge node: each frame
keeps its own checks, error and answer; a message larger than the device's quota still flows; the
edge packs what is queued for the cloud up to its caps, resends unanswered frames in messages after
a broken cloud stream and answers each frame once; a cloud of revision 2 gets one frame per message.

Real tiers (cloud and edge on loopback ports chosen by the OS) where the behaviour is end to end; a
scripted cloud where the cloud must break or answer twice on cue."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from harness import frame_for, start_tiers, stop_tiers
from scripted_cloud import ScriptedCloud, linked, until

from ecd import zoo
from ecd.codec import encode
from ecd.limits import MAX_FRAMES_PER_MESSAGE
from ecd.manifest import load_heldout
from ecd.metrics import ServiceMetrics
from ecd.packing import Packing
from ecd.partition import Partition
from ecd.types import PROTOCOL_REVISION, Encoding, Frame, Split
from ecd.v1 import ecd_pb2 as pb
from edge_node.link import CloudLink, DeviceSession
from edge_node.service import EdgeConfig

M = zoo.load_manifest("digits_cnn")
X = M.input.preprocess(load_heldout(M).images[:8])
REFERENCE = Partition(M, 0, M.n_blocks).run(X)


def batch_of(a: pb.Assignment, ids: range, bad: tuple[int, ...] = ()) -> pb.FrameBatch:
    """One device's message: frames ``ids`` (images cycled), the first stating revision 3; the
    frames in ``bad`` malformed (a tensor shape the codec refuses by name)."""
    frames = []
    for i in ids:
        f = frame_for(a, M, X[i % len(X) : i % len(X) + 1], i)
        if i in bad:
            f.tensor.shape[1] += 1
        frames.append(f)
    frames[0].protocol_revision = PROTOCOL_REVISION
    return pb.FrameBatch(frames=frames)


def results_of(replies) -> dict[int, pb.Result]:
    out: dict[int, pb.Result] = {}
    for reply in replies:
        for r in reply.results:
            assert r.frame_id not in out, f"frame {r.frame_id} answered twice"
            out[r.frame_id] = r
    return out


def test_an_error_in_one_frame_of_a_message_answers_that_frame_alone(tmp_path: Path) -> None:
    t = start_tiers(tmp_path)
    cloud_messages: list[int] = []
    process = t.cloud.core.process_many

    def spy(frames, relayed_by=None):
        cloud_messages.append(len(frames))
        return process(frames, relayed_by)

    t.cloud.core.process_many = spy
    try:
        a = t.register(split=2)
        got = results_of(t.edge_stub.StreamBatches(iter([batch_of(a, range(1, 7), bad=(3,))]), timeout=60))
        assert sorted(got) == [1, 2, 3, 4, 5, 6]
        assert got[3].error.code == 3 and got[3].error.message.startswith("tensor.shape: expected")
        for i in (1, 2, 4, 5, 6):
            assert not got[i].HasField("error"), got[i].error.message
            assert np.abs(np.asarray(got[i].output) - REFERENCE[i % len(X)]).max() <= 1e-4
        assert sum(cloud_messages) == 5  # the bad frame never left the edge; the others did, once each
        assert t.edge.core.link.pending == {}
    finally:
        stop_tiers(t)


def test_a_message_larger_than_the_devices_quota_still_flows(tmp_path: Path) -> None:
    """40 frames in one message against a quota of 4 frames in the node: the edge sends on the
    frames it has read before it waits for room (room that only they can make)."""
    t = start_tiers(tmp_path, edge_cfg=replace(EdgeConfig(), max_device_frames=4, max_stream_frames=8))
    try:
        a = t.register(split=2)
        got = results_of(t.edge_stub.StreamBatches(iter([batch_of(a, range(1, 41))]), timeout=120))
        assert sorted(got) == list(range(1, 41)) and not any(r.HasField("error") for r in got.values())
    finally:
        stop_tiers(t)


def frame(frame_id: int, values: int = 2) -> Frame:
    return Frame("dev", frame_id, "tok", "m", "v1", Split(1, 2), encode(np.zeros((1, values), np.float32), Encoding.FLOAT32))


def test_the_edge_packs_what_is_queued_up_to_its_caps() -> None:
    async def main() -> list[list[int]]:
        link = CloudLink(16, ServiceMetrics("edge"))
        session = DeviceSession(asyncio.Queue(), asyncio.Semaphore(16))
        for i in range(1, 8):
            await link.submit(frame(i, values=4 if i == 5 else 2), session)  # frame 5: 16 tensor bytes, the others 8
        packing = Packing(linger_s=0.0, max_frames=3, max_bytes=24)
        return [[f.frame_id for f in await link.next_frames(packing)] for _ in range(3)]

    # three frames at most (the first message has room for a fourth's bytes); frame 6 would bring the
    # second message to 32 bytes, so it starts the third
    assert asyncio.run(main()) == [[1, 2, 3], [4, 5], [6, 7]]


def test_a_batch_resent_after_a_broken_cloud_stream_is_answered_once_per_frame() -> None:
    cloud = ScriptedCloud()
    # the first stream reads the five frames and breaks unanswered; the second reads them again (resent
    # first, in messages) and answers every one twice; the third has nothing to resend
    cloud.stream_script = [(5, "break"), (5, "answer twice")]
    metrics = ServiceMetrics("edge")

    async def main():
        async with linked(cloud, [frame(i) for i in range(1, 6)], metrics, Packing(0.0, max_frames=2)) as (link, session):
            await until(cloud, lambda: len(cloud.streams) >= 3, "the third cloud stream")
            return [session.out.get_nowait().frame_id for _ in range(session.out.qsize())], dict(link.pending)

    answered, pending = asyncio.run(main())
    assert [[f.frame_id for f in s] for s in cloud.streams] == [[1, 2, 3, 4, 5]] * 2 + [[]]
    assert cloud.messages[:2] == [[2, 2, 1]] * 2  # several frames per message, at the cap, also when resent
    assert answered == [1, 2, 3, 4, 5] and pending == {}  # each answered once, the duplicates dropped
    sent = sum(pb.FrameBatch(frames=s[i : i + 2]).ByteSize() for s in cloud.streams[:2] for i in (0, 2, 4))
    assert metrics.registry.get_sample_value("ecd_hop_bytes_total", {"service": "edge", "hop": "edge_to_cloud"}) == sent


def test_a_cloud_of_revision_2_gets_one_frame_per_message(caplog) -> None:
    cloud = ScriptedCloud()
    cloud.serves_batches = False
    cloud.stream_script = [(3, "answer")]

    async def main():
        async with linked(cloud, [frame(i) for i in range(1, 4)], ServiceMetrics("edge"), Packing(0.0, max_frames=8)) as (_, session):
            await until(cloud, lambda: session.out.qsize() == 3 and len(cloud.streams) >= 2, "three answers, and the next stream")
            return [session.out.get_nowait().frame_id for _ in range(3)]

    with caplog.at_level(logging.WARNING, "ecd.edge"):
        assert asyncio.run(main()) == [1, 2, 3]
    assert cloud.messages == []  # nothing went as a batch: the one-frame Stream carried them, and the next stream too
    assert [[f.frame_id for f in s] for s in cloud.streams][:2] == [[1, 2, 3], []]
    assert "the cloud does not take several frames per message (ecd.v1 revision < 3): sending one per message" in caplog.text


@pytest.mark.parametrize("items, caps, want", [
    ([8, 8, 8, 8], (3, 100), [[8, 8, 8], [8]]),
    ([8, 30, 8], (8, 24), [[8], [30], [8]]),  # a frame above the byte cap goes alone
    ([], (3, 100), []),
])
def test_packing_cuts_resent_frames_at_the_caps(items, caps, want) -> None:
    frames, size = caps
    assert list(Packing(0.0, frames, size).chunks(items, lambda n: n)) == want


def test_a_message_of_too_many_frames_is_refused_by_name_before_any_is_read_and_the_node_serves_on(tmp_path: Path) -> None:
    t = start_tiers(tmp_path)
    try:
        a = t.register(split=2)
        empty = pb.FrameBatch(frames=[pb.Frame(frame_id=i) for i in range(1, MAX_FRAMES_PER_MESSAGE + 2)])
        for stub in (t.edge_stub, t.cloud_stub):  # the edge takes it from devices, the cloud from edges
            with pytest.raises(grpc.RpcError) as e:
                list(stub.StreamBatches(iter([empty]), timeout=30))
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert e.value.details() == f"frames: a message carries at most {MAX_FRAMES_PER_MESSAGE} frames, got {MAX_FRAMES_PER_MESSAGE + 1}"
        got = results_of(t.edge_stub.StreamBatches(iter([batch_of(a, range(1, 4))]), timeout=60))
        assert sorted(got) == [1, 2, 3] and not any(r.HasField("error") for r in got.values())
    finally:
        stop_tiers(t)
