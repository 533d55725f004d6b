"""Where a frame is refused, that a full edge → cloud queue really stops the sender, and that a long
stream is answered frame for frame.

The cloud repeats the edge's token and floor checks with the same status and message, so a test
that only reads the error cannot tell which tier refused. These tests read the cloud's own frame
counters: a frame the edge must refuse never reaches the cloud, and the edge never runs its blocks
for it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import AsyncIterator

import grpc
import numpy as np
import pytest
from harness import LocalCloud, Tiers, frame_for, settle, start_tiers, stop_tiers

from cloud_server.config import CloudConfig
from ecd import codec, zoo
from ecd.manifest import load_heldout
from ecd.metrics import ServiceMetrics
from ecd.split import Preferences
from ecd.types import Assignment, Frame, Result, Split
from ecd.v1 import ecd_pb2 as pb
from edge_node.core import MESSAGES_IN_HAND, EdgeCore
from edge_node.service import EdgeConfig

M = zoo.load_manifest("digits_cnn")
X = M.input.preprocess(load_heldout(M).images[:4])
UNAUTH = grpc.StatusCode.UNAUTHENTICATED.value[0]
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def frames_counted(metrics: ServiceMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("ecd_frames_total", {"service": metrics.service, "outcome": outcome}) or 0.0


def edge_runs(metrics: ServiceMetrics) -> float:
    """How many frames the edge ran its blocks for."""
    return metrics.registry.get_sample_value("ecd_stage_seconds_count", {"service": "edge", "stage": "edge_compute"}) or 0.0


def stream(tiers: Tiers, frames: list[pb.Frame]) -> dict[int, pb.Result]:
    results = list(tiers.edge_stub.Stream(iter(frames), timeout=60))
    assert sorted(r.frame_id for r in results) == sorted(f.frame_id for f in frames)  # each answered once
    return {r.frame_id: r for r in results}


def test_the_edge_refuses_a_bad_token_and_the_cloud_never_sees_it(tiers: Tiers) -> None:
    a = tiers.register(split=2)
    good = frame_for(a, M, X[:1], 1)
    stolen = frame_for(a, M, X[1:2], 2)
    stolen.token = "not-" + a.token  # after a good frame: the edge has this device's assignment cached
    other = tiers.register(split=2, name="other")
    unknown = frame_for(other, M, X[2:3], 1)
    unknown.device_id = "nobody"  # no assignment cached for it at all
    by_id = stream(tiers, [good, stolen, frame_for(a, M, X[3:4], 3)])
    assert not by_id[1].HasField("error") and not by_id[3].HasField("error")
    assert by_id[2].error.code == UNAUTH and "token" in by_id[2].error.message
    assert (by_id[1].uplink_bytes > 0) and by_id[2].uplink_bytes == 0  # never forwarded
    lone = stream(tiers, [unknown])[1]
    assert lone.error.code == UNAUTH and "token" in lone.error.message
    cloud, edge = tiers.cloud.metrics, tiers.edge.metrics
    assert (frames_counted(cloud, "ok"), frames_counted(cloud, "error")) == (2, 0)  # the cloud saw the good ones only
    assert (frames_counted(edge, "ok"), frames_counted(edge, "error")) == (2, 2)
    assert edge_runs(edge) == 2


def test_the_edge_refuses_a_frame_below_the_floor_without_running_it(tiers: Tiers) -> None:
    a = tiers.register(split=2, min_split=2)
    low = frame_for(a, M, X[:1], 2)
    # a valid split-1 activation: only the floor (min_split 2) forbids it
    low.split_device = 1
    low.tensor.CopyFrom(frame_for(tiers.register(split=1, name="helper"), M, X[:1], 1).tensor)
    by_id = stream(tiers, [frame_for(a, M, X[:1], 1), low, frame_for(a, M, X[1:2], 3)])
    assert by_id[2].error.code == PRECONDITION and "min_split" in by_id[2].error.message
    assert not by_id[1].HasField("error") and not by_id[3].HasField("error")
    cloud, edge = tiers.cloud.metrics, tiers.edge.metrics
    assert (frames_counted(cloud, "ok"), frames_counted(cloud, "error")) == (2, 0)
    assert edge_runs(edge) == 2  # blocks [split, edge) ran for the two good frames only


def test_the_edge_refuses_a_wrong_model_version_before_the_cloud(tiers: Tiers) -> None:
    a = tiers.register(split=2)
    bad = frame_for(a, M, X[:1], 1)
    bad.model_version = "0" * 16
    wrong_model = frame_for(a, M, X[:1], 2)
    wrong_model.model_id = "lenet9000"
    by_id = stream(tiers, [bad, wrong_model, frame_for(a, M, X[:1], 3)])
    assert by_id[1].error.code == PRECONDITION and "model_version" in by_id[1].error.message
    assert by_id[2].error.code == PRECONDITION and "model_id" in by_id[2].error.message
    assert frames_counted(tiers.cloud.metrics, "error") == 0 and frames_counted(tiers.cloud.metrics, "ok") == 1


def test_a_long_stream_is_answered_frame_for_frame(tiers: Tiers) -> None:
    """600 frames, one device: exactly 600 answers, ids 1..600 once each, every one ok, and both
    tiers counted exactly 600."""
    a = tiers.register(split=3)
    activation = frame_for(a, M, X[:1], 1).tensor
    frames = []
    for i in range(1, 601):
        f = pb.Frame(device_id=a.device_id, frame_id=i, token=a.token, model_id=a.model_id,
                     model_version=a.model_version, split_device=a.split_device)
        f.tensor.CopyFrom(activation)
        frames.append(f)
    results = list(tiers.edge_stub.Stream(iter(frames), timeout=300))
    assert len(results) == 600
    assert sorted(r.frame_id for r in results) == list(range(1, 601))
    assert all(not r.HasField("error") for r in results)
    labels = {next(h.index for h in r.heads if h.head == "class") for r in results}
    assert len(labels) == 1  # the same input, the same answer
    assert frames_counted(tiers.cloud.metrics, "ok") == 600 and frames_counted(tiers.edge.metrics, "ok") == 600
    assert tiers.edge.core.link.pending == {} and tiers.edge.core.link.queue.qsize() == 0


# --- backpressure, deterministically, on the core ------------------------------------------------


def test_a_full_queue_stops_reading_the_device_stream(tmp_path: Path) -> None:
    """With nobody draining the link (the cloud stalls), the edge reads max_queue frames, then one
    more for each hand-over it may have running (the first blocks in put(), the next waits for it:
    the stream's order is kept) and one that waits its turn, then stops; it reads one more for each
    frame the cloud takes; every frame is answered once, in order."""
    n_blocks = M.n_blocks
    a = Assignment("d", "tok", "", M.model_id, M.version, Split(n_blocks - 1, n_blocks - 1), n_blocks - 1, Preferences(1.0, 0.0, 0))
    tensor = codec.encode(np.zeros((1, *M.activation_shape(n_blocks - 1)), dtype=np.float32))

    async def scenario() -> None:
        core = EdgeCore(LocalCloud(M, a), tmp_path, max_queue=3, max_tensor_bytes=1 << 20,
                        metrics=ServiceMetrics("edge"), max_message_bytes=1 << 24)
        read = []

        async def frames() -> AsyncIterator[Frame]:
            for i in range(1, 21):
                read.append(i)
                yield Frame("d", i, "tok", M.model_id, M.version, Split(n_blocks - 1, 0), tensor)

        results = core.serve_device(frames())
        first = asyncio.ensure_future(results.__anext__())
        await settle()
        blocked = 3 + MESSAGES_IN_HAND  # three queued, one per hand-over in hand
        assert core.link.queue.full() and core.link.queue.qsize() == 3
        assert len(read) == blocked + 1  # and one read, waiting for a hand-over's turn: the stream is not read on
        assert len(core.link.pending) == 3 + 1 and not first.done()  # the one in put(); the next waits for it to be queued
        for expected_read in range(blocked + 2, 21):
            f = await core.link.next_frame()  # the cloud takes one
            await settle()
            assert len(read) == expected_read and core.link.queue.qsize() == 3  # exactly one more read
            core.link.route(Result(device_id=f.device_id, frame_id=f.frame_id, split=f.split))
        for _ in range(blocked + 1):  # the frames queued, waiting in put() and for their turn
            f = await core.link.next_frame()
            core.link.route(Result(device_id=f.device_id, frame_id=f.frame_id, split=f.split))
            await settle()
        assert core.link.queue.qsize() == 0 and core.link.pending == {}
        answered = [(await first).frame_id] + [(await results.__anext__()).frame_id for _ in range(19)]
        assert answered == list(range(1, 21))
        with pytest.raises(StopAsyncIteration):
            await results.__anext__()

    asyncio.run(scenario())


# --- backpressure over gRPC: a stalled cloud --------------------------------------------------------


def test_a_stalled_cloud_fills_the_edge_queue_and_slows_the_sender(tmp_path: Path) -> None:
    """The cloud stops answering; the device keeps sending large frames (a batch of 16 split-1
    activations, 1 MiB each: more in all than the transport buffers between edge and cloud hold).
    The edge's queue fills to its bound and no further, the device's stream stops being read, and
    once the cloud resumes every frame is answered in order, none lost."""
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(workers=1), edge_cfg=EdgeConfig(max_queue=2))
    stalled, resume = threading.Event(), threading.Event()
    try:
        t.cloud.core.devices.edge_boundary = 1  # the edge runs nothing: the 1 MiB activations cross both hops
        process = t.cloud.core.process_many

        def stalling(frames: list[Frame], relayed_by: str | None = None) -> list[Result]:
            stalled.set()
            if not resume.wait(120):
                raise TimeoutError("the test never resumed the cloud")
            return process(frames, relayed_by)

        t.cloud.core.process_many = stalling
        a = t.register(split=1)
        batch = M.input.preprocess(load_heldout(M).images[:16])
        first = frame_for(a, M, batch, 1)
        n = 40
        frames = []
        for i in range(1, n + 1):
            f = pb.Frame()
            f.CopyFrom(first)
            f.frame_id = i
            frames.append(f)
        out: list = []
        sender = threading.Thread(target=lambda: out.extend(t.edge_stub.Stream(iter(frames), timeout=180)))
        sender.start()
        link, core = t.edge.core.link, t.edge.core
        assert stalled.wait(60)
        tick = threading.Event()  # never set: its wait() paces the polling below
        highest = 0
        for _ in range(6000):  # wait, on a condition, for the queue to fill (at most about 60 s)
            highest = max(highest, link.queue.qsize())
            if link.queue.full():
                break
            tick.wait(0.01)
        assert link.queue.full() and highest <= 2, highest
        for _ in range(20):  # while the cloud stalls the queue stays within its bound
            tick.wait(0.01)
            assert link.queue.qsize() <= 2
        assert core.frames_seen < n, core.frames_seen  # and the edge has stopped reading the device stream
        resume.set()
        sender.join(180)
        assert not sender.is_alive()
        assert [r.frame_id for r in out] == list(range(1, n + 1))
        assert all(not r.HasField("error") for r in out)
    finally:
        resume.set()
        stop_tiers(t)
