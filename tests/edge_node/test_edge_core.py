"""The edge core without a network: its per-device assignment cache and its drain (issue 19: the
mutation gate found both unchecked by the edge's own tests)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import numpy as np
import pytest
from harness import LocalCloud, settle

from ecd import codec, zoo
from ecd.batching import BatchingConfig
from ecd.errors import LimitError, RequestError, UnavailableError
from ecd.manifest import load_heldout
from ecd.metrics import ServiceMetrics
from ecd.partition import BlockRunner
from ecd.split import Preferences
from ecd.types import (
    Assignment,
    Encoding,
    FileChunk,
    Frame,
    PartitionRequest,
    Result,
    Split,
)
from edge_node.core import EdgeCore
from edge_node.link import CloudLink, DeviceSession

M = zoo.load_manifest("digits_cnn")
N = M.n_blocks


class CountingCloud(LocalCloud):
    """Counts the assignments asked of the cloud (each answered with the one assignment it holds)."""

    def __init__(self, assignment: Assignment) -> None:
        super().__init__(M, assignment)
        self.asked: list[tuple[str, str]] = []

    async def get_assignment(self, device_id: str, token: str, holder: str = "") -> Assignment:
        self.asked.append((device_id, token))
        return self.assignment


def assignment(split_device: int = N - 1, token: str = "tok") -> Assignment:
    return Assignment("d", token, "", M.model_id, M.version, Split(split_device, N - 1), N - 1, Preferences(1.0, 0.0, 0))


def core_for(cloud: LocalCloud, tmp_path: Path) -> EdgeCore:
    return EdgeCore(cloud, tmp_path, max_queue=4, max_tensor_bytes=1 << 20, metrics=ServiceMetrics("edge"), max_message_bytes=1 << 24)


def test_an_assignment_is_asked_of_the_cloud_once_until_token_split_or_revocation_changes(tmp_path: Path) -> None:
    cloud = CountingCloud(assignment())
    core = core_for(cloud, tmp_path)

    async def scenario() -> None:
        for _ in range(3):
            assert (await core.assignment("d", "tok", N - 1)).token == "tok"
        assert cloud.asked == [("d", "tok")]  # cached per device
        await core.assignment("e", "tok", N - 1)
        assert cloud.asked[-1] == ("e", "tok")  # another device has its own entry
        await core.assignment("d", "other", N - 1)
        assert cloud.asked[-1] == ("d", "other")  # a different token is checked with the cloud
        cloud.assignment = assignment(token="other")
        await core.assignment("d", "other", N - 1)
        n = len(cloud.asked)
        await core.assignment("d", "other", N - 1)
        assert len(cloud.asked) == n  # cached again
        cloud.assignment = replace(assignment(token="other"), split=Split(N - 2, N - 1))
        await core.assignment("d", "other", N - 2)
        assert len(cloud.asked) == n + 1  # the device moved its split: the cached assignment is stale
        core.forget(["d"])  # its token was revoked
        await core.assignment("d", "other", N - 2)
        assert len(cloud.asked) == n + 2
        core.forget(["nobody"])  # a device never seen: nothing to drop, no error
        await core.assignment("e", "tok", N - 1)
        assert len(cloud.asked) == n + 2  # e's entry survived both

    asyncio.run(scenario())


def stuck_frames(count: int) -> AsyncIterator[Frame]:
    tensor = codec.encode(np.zeros((1, *M.activation_shape(N - 1)), dtype=np.float32))

    async def frames() -> AsyncIterator[Frame]:
        for i in range(1, count + 1):
            yield Frame("d", i, "tok", M.model_id, M.version, Split(N - 1, 0), tensor)

    return frames()


def test_drain_with_no_stream_open_returns_at_once_and_refuses_new_streams(tmp_path: Path) -> None:
    core = core_for(LocalCloud(M, assignment()), tmp_path)

    async def scenario() -> None:
        assert await asyncio.wait_for(core.drain(60.0), 10) == 0  # nothing to wait for: not the 60 s
        assert core.draining
        with pytest.raises(UnavailableError, match=r"^edge: this edge node is shutting down; ask the cloud for your assignment$"):
            await core.serve_device(stuck_frames(1)).__anext__()

    asyncio.run(scenario())


def test_drain_waits_for_the_frames_taken_and_says_how_many_streams_are_still_open(tmp_path: Path) -> None:
    """Two frames wait on a cloud that does not answer: the drain waits its whole time and reports
    the stream open; once the cloud answers, the stream hands both back and ends, and the next drain
    finds nothing open."""
    core = core_for(LocalCloud(M, assignment()), tmp_path)

    async def scenario() -> None:
        results = core.serve_device(stuck_frames(2))
        first = asyncio.ensure_future(results.__anext__())
        await settle()
        assert len(core.link.pending) == 2 and not first.done()
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await core.drain(0.3) == 1
        assert loop.time() - start >= 0.3  # it waited the time it was given
        for _ in range(2):  # the cloud answers
            f = await core.link.next_frame()
            core.link.route(Result(device_id=f.device_id, frame_id=f.frame_id, split=f.split))
        assert (await first).frame_id == 1 and (await results.__anext__()).frame_id == 2
        with pytest.raises(UnavailableError, match=r"^edge: this edge node is shutting down; ask the cloud for your assignment "
                                                   r"and resend$"):  # the stream ends: the device moves on
            await results.__anext__()
        assert await asyncio.wait_for(core.drain(60.0), 10) == 0

    asyncio.run(scenario())


class RecordingCloud(LocalCloud):
    """Records the partition requests the edge makes (the bundled files still answer them)."""

    def __init__(self, assignment: Assignment) -> None:
        super().__init__(M, assignment)
        self.requests: list[tuple] = []

    async def fetch_partition(self, request: PartitionRequest) -> AsyncIterator[FileChunk]:
        self.requests.append((request.model_id, request.model_version, request.start, request.stop))
        async for chunk in super().fetch_partition(request):
            await asyncio.sleep(0)  # as a network would: other frames' tasks run meanwhile
            yield chunk


def test_a_model_is_fetched_once_head_first_however_many_frames_ask_for_it(tmp_path: Path) -> None:
    cloud = RecordingCloud(assignment())
    core = core_for(cloud, tmp_path)

    async def scenario() -> None:
        got = await asyncio.gather(*(core.model(M.model_id, M.version) for _ in range(3)))
        assert len({id(g[0]) for g in got}) == 1  # one manifest, one runner for all
        assert got[0][0].n_blocks == N and (tmp_path / M.model_id / M.version).is_dir()
        await core.model(M.model_id, M.version)

    asyncio.run(scenario())
    # the manifest alone (no blocks) first, to learn how many blocks there are; then every block
    assert cloud.requests == [(M.model_id, M.version, 0, 0), (M.model_id, M.version, 0, N)]


# --- prepare: what the edge forwards ---------------------------------------------------------------


def frame(split_device: int, tensor, frame_id: int = 1) -> Frame:
    return Frame("d", frame_id, "tok", M.model_id, M.version, Split(split_device, 0), tensor)


def images(n: int) -> np.ndarray:
    return load_heldout(M).images[:n]


def test_the_edge_runs_its_blocks_and_forwards_in_the_devices_encoding(tmp_path: Path) -> None:
    a = replace(assignment(), split=Split(1, 2), encoding=Encoding.FLOAT32)
    cloud = CountingCloud(a)
    core = core_for(cloud, tmp_path)
    x1 = BlockRunner(M).run(M.input.preprocess(images(2)), 0, 1)

    async def scenario() -> None:
        out = []
        for i, enc in enumerate((Encoding.FLOAT16, Encoding.INT8, Encoding.FLOAT32), start=1):
            t0 = time.perf_counter()
            out.append(await core.prepare(frame(1, codec.encode(x1, enc), i)))
            assert 0 < out[-1].edge_compute_s <= time.perf_counter() - t0  # the blocks' own time
        assert [f.tensor.encoding for f in out] == [Encoding.FLOAT16, Encoding.INT8, Encoding.FLOAT32]
        assert all(f.split == Split(1, 2) for f in out)
        expected = BlockRunner(M).run(x1, 1, 2)
        np.testing.assert_allclose(codec.decode(out[2].tensor, M.activation_shape(2), 1 << 24), expected, rtol=1e-5, atol=1e-5)
        assert cloud.asked == [("d", "tok")]  # three frames, one look-up: the split matches the cached one

    asyncio.run(scenario())


@pytest.mark.parametrize(("registered", "forwarded"), [(Encoding.INT8, Encoding.INT8), (Encoding.FLOAT16, Encoding.FLOAT16),
                                                       (Encoding.UINT8, Encoding.FLOAT32)])
def test_past_a_raw_image_the_edge_forwards_in_the_encoding_the_device_registered(tmp_path: Path, registered: Encoding,
                                                                                   forwarded: Encoding) -> None:
    core = core_for(LocalCloud(M, replace(assignment(), split=Split(0, 2), encoding=registered)), tmp_path)
    out = asyncio.run(core.prepare(frame(0, codec.encode_image(images(2)))))
    assert out.tensor.encoding is forwarded and out.tensor.shape[0] == 2


def test_the_edge_refuses_a_batch_over_its_own_limit(tmp_path: Path) -> None:
    core = EdgeCore(LocalCloud(M, replace(assignment(), split=Split(0, 2))), tmp_path, max_queue=4, max_tensor_bytes=1 << 24,
                    metrics=ServiceMetrics("edge"), max_message_bytes=1 << 24, max_batch=2)
    assert asyncio.run(core.prepare(frame(0, codec.encode_image(images(2))))).tensor.shape[0] == 2
    with pytest.raises(LimitError, match=r"a batch of 3 exceeds the limit of 2 \(max_batch\)"):
        asyncio.run(core.prepare(frame(0, codec.encode_image(images(3)))))


# --- serve_device: every frame counted, stamped, answered once ------------------------------------------


def sample(core: EdgeCore, name: str, **labels: str) -> float:
    return core.metrics.registry.get_sample_value(name, {"service": "edge", **labels}) or 0.0


def test_a_stream_is_counted_stamped_and_leaves_nothing_behind(tmp_path: Path) -> None:
    core = core_for(LocalCloud(M, assignment()), tmp_path)
    core.edge_id = "edge-7"
    tensor = codec.encode(np.zeros((1, *M.activation_shape(N - 1)), dtype=np.float32))
    sent = [replace(frame(N - 1, tensor, i), wire_bytes=1000 + i) for i in (1, 2, 3)]  # as the transport measured them
    sent[1] = replace(sent[1], model_version="v-other")  # refused at the edge: not the registered version

    async def frames() -> AsyncIterator[Frame]:
        for f in sent:
            yield f

    async def scenario() -> list[Result]:
        results = core.serve_device(frames())
        out = [await results.__anext__()]  # the refusal comes back at once
        for _ in range(2):  # the cloud answers the two forwarded
            f = await core.link.next_frame()
            core.link.route(Result(device_id=f.device_id, frame_id=f.frame_id, split=f.split))
        out += [r async for r in results]
        return out

    out = asyncio.run(scenario())
    assert sorted(r.frame_id for r in out) == [1, 2, 3] and {r.edge_id for r in out} == {"edge-7"}
    assert [r.frame_id for r in out if not r.ok] == [2] and "model_version" in out[0].error.message
    assert core.frames_seen == 3
    assert sample(core, "ecd_hop_bytes_total", hop="device_to_edge") == sum(f.wire_bytes for f in sent) > 0
    assert (sample(core, "ecd_frames_total", outcome="ok"), sample(core, "ecd_frames_total", outcome="error")) == (2, 1)
    assert sample(core, "ecd_frame_errors_total", code="FAILED_PRECONDITION") == 1
    assert core.sessions == set() and core._readers == set() and core.link.pending == {}


def test_a_fault_in_the_edges_blocks_answers_each_frame_with_an_error_and_the_stream_ends(tmp_path: Path) -> None:
    """An unexpected error while the edge runs a message's frames (a bug, not a refusal) must not
    strand them: each gets an INTERNAL error result, the device slots come back, the stream ends."""
    core = core_for(LocalCloud(M, assignment()), tmp_path)
    tensor = codec.encode(np.zeros((1, *M.activation_shape(N - 1)), dtype=np.float32))

    async def broken(frames, holder="", meter=None):
        raise TypeError("a bug in the edge")

    core.prepare_many = broken

    async def frames() -> AsyncIterator[Frame]:
        for i in (1, 2, 3):
            yield frame(N - 1, tensor, i)

    async def scenario() -> list[Result]:
        return [r async for r in core.serve_device(frames())]

    out = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert sorted(r.frame_id for r in out) == [1, 2, 3]
    assert {r.error.status for r in out} == {"INTERNAL"} and all("a bug" not in r.error.message for r in out)
    assert core.sessions == set() and core._readers == set() and core.quotas.streams("d") == 0


def test_a_frame_resent_on_a_new_stream_is_handed_over_not_refused(tmp_path: Path) -> None:
    """The device lost its stream with frame 1 pending at the cloud and resends it on a new one:
    the answer goes to the new stream, once."""
    core = core_for(LocalCloud(M, assignment()), tmp_path)

    async def scenario() -> Result:
        first = core.serve_device(stuck_frames(1))
        waiting = asyncio.ensure_future(first.__anext__())
        await settle()
        assert list(core.link.pending) == [("d", 1)]
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await first.aclose()  # the stream is gone, its frame still pending
        second = core.serve_device(stuck_frames(1))
        answer = asyncio.ensure_future(second.__anext__())
        await settle()
        f = await core.link.next_frame()
        core.link.route(Result(device_id=f.device_id, frame_id=f.frame_id, split=f.split))
        got = await answer
        with pytest.raises(StopAsyncIteration):  # its one frame answered, the new stream ends
            await asyncio.wait_for(second.__anext__(), 10)
        return got

    got = asyncio.run(scenario())
    assert got.ok and got.frame_id == 1


# --- the edge → cloud link ----------------------------------------------------------------------------


def session() -> DeviceSession:
    return DeviceSession(asyncio.Queue(), asyncio.Semaphore(8))


def test_a_frame_id_answered_may_come_again_and_is_sent_again(tmp_path: Path) -> None:
    """Once frame 1 is answered, a later frame 1 (a device that restarted its numbering) is new work."""
    link = CloudLink(4, ServiceMetrics("edge"))
    f = frame(N - 1, codec.encode(np.zeros((1, *M.activation_shape(N - 1)), dtype=np.float32)))

    async def scenario() -> None:
        s = session()
        for _ in range(2):
            assert await link.submit(f, s)
            assert link.metrics.registry.get_sample_value("ecd_queue_depth", {"service": "edge"}) == 1
            sent = await asyncio.wait_for(link.next_frame(), 10)
            assert sent.frame_id == 1 and link.route(Result(device_id="d", frame_id=1, split=sent.split))
        assert link.pending == {} and link.written == set()

    asyncio.run(scenario())


def test_a_drain_while_a_frame_waits_for_room_lets_the_stream_end(tmp_path: Path) -> None:
    """The queue is full and frame 3 waits for room when the node drains: frame 3 is given back
    untaken (the device resends it elsewhere), the two taken are answered, and the stream ends."""
    core = EdgeCore(LocalCloud(M, assignment()), tmp_path, max_queue=1, max_tensor_bytes=1 << 20,
                    metrics=ServiceMetrics("edge"), max_message_bytes=1 << 24)

    async def scenario() -> list[int]:
        results = core.serve_device(stuck_frames(3))
        first = asyncio.ensure_future(results.__anext__())
        await settle()
        f1 = await core.link.next_frame()  # frame 1 taken by the cloud, frame 2 queued, frame 3 waits
        await settle()
        assert sorted(k[1] for k in core.link.pending) == [1, 2, 3]
        draining = asyncio.ensure_future(core.drain(60.0))
        await settle()
        assert sorted(k[1] for k in core.link.pending) == [1, 2]  # frame 3 is no longer the edge's
        core.link.route(Result(device_id="d", frame_id=f1.frame_id, split=f1.split))
        f2 = await core.link.next_frame()
        core.link.route(Result(device_id="d", frame_id=f2.frame_id, split=f2.split))
        answered = [(await asyncio.wait_for(first, 10)).frame_id, (await asyncio.wait_for(results.__anext__(), 10)).frame_id]
        with pytest.raises(UnavailableError):  # ends: nothing of it is in flight any more
            await asyncio.wait_for(results.__anext__(), 10)
        assert await asyncio.wait_for(draining, 10) == 0
        return answered

    assert asyncio.run(scenario()) == [1, 2]


def test_a_new_core_has_seen_nothing_and_batches_as_configured(tmp_path: Path) -> None:
    batching = BatchingConfig(max_frames=3, max_delay_s=0.0)
    core = EdgeCore(LocalCloud(M, assignment()), tmp_path, max_queue=4, max_tensor_bytes=1 << 20,
                    metrics=ServiceMetrics("edge"), max_message_bytes=1 << 24, batching=batching)
    assert (core.edge_id, core.frames_seen, core.draining, core.sessions) == ("", 0, False, set())
    asyncio.run(core.model(M.model_id, M.version))
    assert core._batchers[(M.model_id, M.version)].config is batching


class RefusingCloud(LocalCloud):
    """Serves only the bundled model: any other id or version is refused as the cloud refuses it."""

    async def fetch_partition(self, request):
        if (request.model_id, request.model_version) != (M.model_id, M.version):
            raise UnavailableError(f"model: cannot fetch {request.model_id}@{request.model_version} from the cloud (FAILED_PRECONDITION)")
        async for chunk in super().fetch_partition(request):
            yield chunk


@pytest.mark.parametrize("model_id, version", [("..", "x"), ("digits_cnn", ".."), ("a/b", "v"), ("m", "v" * 65), ("", "v")])
def test_a_model_name_that_is_not_one_folder_is_refused_by_name_and_nothing_is_created(tmp_path: Path, model_id: str, version: str) -> None:
    """The device page's /api/models/{model_id}/{version}/... reaches here without a token: its names
    become folders under the node's model dir, so each must be one plain folder name."""
    core = core_for(RefusingCloud(M, assignment()), tmp_path / "models")
    with pytest.raises(RequestError, match=r"^model_(id|version): not a model this node can fetch"):
        asyncio.run(core.model(model_id, version))
    assert list(tmp_path.rglob("*")) == []  # not even the node's model folder


def test_a_model_the_cloud_refuses_leaves_no_folder_and_no_lock_behind(tmp_path: Path) -> None:
    core = core_for(RefusingCloud(M, assignment()), tmp_path / "models")
    for i in range(20):  # names asked for by anyone on the page's port: none may stay with the node
        with pytest.raises(UnavailableError):
            asyncio.run(core.model(M.model_id, f"nope{i}"))
    assert core._locks == {} and not (tmp_path / "models").exists()
    manifest, _ = asyncio.run(core.model(M.model_id, M.version))  # the served one still loads
    assert manifest.version == M.version and (tmp_path / "models" / M.model_id / M.version / "manifest.json").is_file()
