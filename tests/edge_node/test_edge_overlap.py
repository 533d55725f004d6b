"""A device stream's messages overlap at the edge (issue 31): while one message's frames run
through the edge's blocks, the next is read and checked, and its frames are queued for the batcher
the moment they can be — at most ``MESSAGES_IN_HAND`` messages of one stream at once, so a stream
still stops being read when the edge cannot keep up. A stream cut while messages are in hand gives
back every device slot its frames held. Messages compute side by side but reach the cloud in the
order the device sent them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import numpy as np
from harness import LocalCloud, settle

from ecd import codec, zoo
from ecd.batching import BatchingConfig
from ecd.partition import SessionConfig
from ecd.metrics import ServiceMetrics
from ecd.split import Preferences
from ecd.types import Assignment, Frame, Result, Split
from edge_node.core import MESSAGES_IN_HAND, EdgeCore

M = zoo.load_manifest("digits_cnn")
N = M.n_blocks
A = Assignment("d", "tok", "", M.model_id, M.version, Split(N - 1, N - 1), N - 1, Preferences(1.0, 0.0, 0))
TENSOR = codec.encode(np.zeros((1, *M.activation_shape(N - 1)), dtype=np.float32))


class GatedEdge(EdgeCore):
    """The real edge, whose blocks finish a message only when the test opens that message's gate."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(LocalCloud(M, A), tmp_path, max_queue=64, max_tensor_bytes=1 << 20, metrics=ServiceMetrics("edge"),
                         max_message_bytes=1 << 24)
        self.started: list[list[int]] = []  # frame ids of each message whose blocks began
        self.gates: dict[int, asyncio.Event] = {}  # first frame id of a message -> its gate

    async def prepare_many(self, frames, holder="", meter=None):
        ids = [f.frame_id for f in frames]
        self.started.append(ids)
        await self.gates.setdefault(ids[0], asyncio.Event()).wait()
        return await super().prepare_many(frames, holder, meter)

    def open(self, first_id: int) -> None:
        self.gates.setdefault(first_id, asyncio.Event()).set()


def messages(read: list[int], count: int, per_message: int = 2) -> AsyncIterator[list[Frame]]:
    async def gen() -> AsyncIterator[list[Frame]]:
        for m in range(count):
            ids = range(1 + m * per_message, 1 + (m + 1) * per_message)
            read.append(ids[0])
            yield [Frame("d", i, "tok", M.model_id, M.version, Split(N - 1, 0), TENSOR) for i in ids]

    return gen()


async def answer_all(core: EdgeCore, count: int) -> None:
    for _ in range(count):
        f = await core.link.next_frame()
        core.link.route(Result(device_id=f.device_id, frame_id=f.frame_id, split=f.split))


def test_the_next_message_is_read_and_run_while_the_last_one_computes_and_order_is_kept(tmp_path: Path) -> None:
    assert MESSAGES_IN_HAND == 2

    async def scenario() -> list[int]:
        core = GatedEdge(tmp_path)
        read: list[int] = []
        stream = core.serve_messages(messages(read, 4))
        first = asyncio.ensure_future(stream.__anext__())
        await settle()
        # messages 1 and 2 are in the edge's blocks at once; 3 is read and waits its turn
        assert core.started == [[1, 2], [3, 4]] and read == [1, 3, 5]
        core.open(3)  # the second finishes first: it waits for the first to be queued, still in hand
        await settle()
        assert core.started == [[1, 2], [3, 4]] and core.link.queue.qsize() == 0
        core.open(1)  # both go on to the cloud, in the order the device sent them; 3 and 4 take their turns
        await settle()
        assert core.started == [[1, 2], [3, 4], [5, 6], [7, 8]] and read == [1, 3, 5, 7]
        assert list(core.link.pending) == [("d", i) for i in (1, 2, 3, 4)]
        for first_id in (5, 7):
            core.open(first_id)
        await answer_all(core, 8)
        answered = [r.frame_id for r in await first]
        async for results in stream:
            answered += [r.frame_id for r in results]
        assert core.sessions == set() and core.link.pending == {} and core.quotas.streams("d") == 0
        return answered

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == list(range(1, 9))


def test_a_stream_cut_while_messages_are_in_hand_gives_back_every_device_slot(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = GatedEdge(tmp_path)
        read: list[int] = []
        stream = core.serve_messages(messages(read, 3))
        first = asyncio.ensure_future(stream.__anext__())
        await settle()
        assert len(core.started) == MESSAGES_IN_HAND and read == [1, 3, 5]
        (session,) = core.sessions
        assert session.device_slots.held == 6  # two messages in hand, one waiting its turn: 2 frames each
        first.cancel()  # the device went away
        await settle()
        assert core.sessions == set() and core._readers == set() and core.quotas.streams("d") == 0
        assert session.device_slots.held == 0
        for first_id in (1, 3, 5):  # the hand-overs were cut too: nothing of the stream goes on to the cloud
            core.open(first_id)
        await settle()
        assert core.link.pending == {} and core.link.queue.qsize() == 0 and session.device_slots.held == 0

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_reader_cancelled_again_while_its_hand_overs_wind_down_still_gives_back_every_slot(tmp_path: Path) -> None:
    """A drain cancels a stream's reader; the stream's own end cancels it once more while its
    hand-overs are still winding down: the second cancellation must not skip giving slots back."""

    async def scenario() -> None:
        core = GatedEdge(tmp_path)
        stream = core.serve_messages(messages([], 3))
        first = asyncio.ensure_future(stream.__anext__())
        await settle()
        (session,), (reader,) = core.sessions, core._readers
        assert session.device_slots.held == 6
        reader.cancel()
        await asyncio.sleep(0)  # the reader has cancelled its hand-overs and waits for them to end
        assert not reader.done()
        reader.cancel()
        await settle()
        assert reader.cancelled() and session.device_slots.held == 0
        first.cancel()
        await settle()
        assert core.sessions == set() and core.quotas.streams("d") == 0

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_models_blocks_run_with_the_nodes_onnxruntime_settings_and_batch_instances(tmp_path: Path) -> None:
    core = EdgeCore(LocalCloud(M, A), tmp_path, max_queue=4, max_tensor_bytes=1 << 20, metrics=ServiceMetrics("edge"),
                    max_message_bytes=1 << 24, batching=BatchingConfig(instances=2), session_config=SessionConfig(intra_op_threads=1))
    _, runner = asyncio.run(core.model(M.model_id, M.version))
    assert runner.config.intra_op_threads == 1 and core._batchers[(M.model_id, M.version)].config.instances == 2
