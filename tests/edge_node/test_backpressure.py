"""A slow cloud slows the senders; no frame is dropped; answers are routed once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloud_server.config import CloudConfig
from ecd import zoo
from ecd.manifest import load_heldout
from ecd.errors import RequestError
from ecd.metrics import ServiceMetrics
from ecd.types import Encoding, Frame, Result, Split, Tensor
from edge_node.link import CloudLink, DeviceSession
from edge_node.service import EdgeConfig
from harness import frame_for, start_tiers, stop_tiers


def test_slow_cloud_loses_no_frames(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(workers=1), edge_cfg=EdgeConfig(max_queue=2))
    try:
        process = t.cloud.core.process_many

        def slow(frames: list[Frame], relayed_by: str | None = None) -> list[Result]:
            time.sleep(0.02)
            return process(frames, relayed_by)

        t.cloud.core.process_many = slow
        m = zoo.load_manifest("digits_cnn")
        x = m.input.preprocess(load_heldout(m).images[:1])
        a = t.register(split=1)
        frames = [frame_for(a, m, x, i) for i in range(1, 61)]
        results = list(t.edge_stub.Stream(iter(frames), timeout=120))
        assert [r.frame_id for r in results] == list(range(1, 61))
        assert all(not r.HasField("error") for r in results)
    finally:
        stop_tiers(t)


def _frame(frame_id: int) -> Frame:
    return Frame("d", frame_id, "token", "digits_cnn", "v", Split(1, 5), Tensor(Encoding.FLOAT32, (1,), b"\0" * 4))


def _session() -> DeviceSession:
    return DeviceSession(asyncio.Queue(), asyncio.Semaphore(8))


def _results(session: DeviceSession) -> list[Result]:
    out = []
    while not session.out.empty():
        item = session.out.get_nowait()
        if isinstance(item, Result):
            out.append(item)
    return out


def test_a_frame_id_in_flight_twice_on_one_stream_is_refused_and_answers_are_routed_once() -> None:
    async def scenario() -> list:
        link = CloudLink(max_queue=4, metrics=ServiceMetrics("edge"))
        session = _session()
        assert await link.submit(_frame(7), session)
        with pytest.raises(RequestError, match="frame_id: frame 7 .* already in flight"):
            await link.submit(_frame(7), session)
        assert link.queue.qsize() == 1  # the copy was not queued
        answer = Result(device_id="d", frame_id=7, split=Split(1, 5))
        assert link.route(answer)
        assert not link.route(answer)  # the cloud answered a resent copy too
        session.reading_done = True
        session.maybe_finish()
        return _results(session)

    assert [r.frame_id for r in asyncio.run(scenario())] == [7]


def test_a_frame_resent_on_a_new_stream_is_handed_over_not_sent_twice() -> None:
    async def scenario() -> tuple[list, list, int]:
        link = CloudLink(max_queue=4, metrics=ServiceMetrics("edge"))
        old, new = _session(), _session()
        assert await link.submit(_frame(3), old)
        old.closed = True  # the device's stream broke; it resends frame 3 on a new one
        assert not await link.submit(_frame(3), new)
        assert link.route(Result(device_id="d", frame_id=3, split=Split(1, 5)))
        return _results(old), _results(new), link.queue.qsize()

    to_old, to_new, queued = asyncio.run(scenario())
    assert (to_old, [r.frame_id for r in to_new], queued) == ([], [3], 1)


def test_after_a_broken_cloud_stream_every_pending_frame_is_resent_whatever_the_queue_holds() -> None:
    """More frames pending than the queue holds: resending them must not wait for queue room
    (which only the writer could make — the wedge a cloud restart under load used to cause)."""

    async def scenario() -> tuple[list[int], list[int], int]:
        link = CloudLink(max_queue=2, metrics=ServiceMetrics("edge"))
        session = DeviceSession(asyncio.Queue(), asyncio.Semaphore(100))
        submitters = [asyncio.create_task(link.submit(_frame(i), session)) for i in range(1, 11)]
        await asyncio.sleep(0)
        first = [(await link.next_frame()).frame_id for _ in range(2)]  # written on the old stream
        # the stream breaks: every pending frame is written first on the new one ...
        resent = [f.frame_id for f in link.unanswered()]
        # ... and the queued copies are skipped, while the senders waiting for room go on
        following = asyncio.create_task(link.next_frame())
        await asyncio.gather(*submitters)
        await link.submit(_frame(11), session)
        return first, resent, (await following).frame_id

    first, resent, following = asyncio.run(scenario())
    assert (first, resent, following) == ([1, 2], list(range(1, 11)), 11)
