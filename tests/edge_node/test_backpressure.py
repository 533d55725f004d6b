"""A slow cloud slows the senders; no frame is dropped; answers are routed once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cloud_server.service import CloudConfig
from ecd import zoo
from ecd.manifest import load_heldout
from ecd.metrics import ServiceMetrics
from ecd.types import Encoding, Frame, Result, Split, Tensor
from edge_node.core import CloudLink, DeviceSession
from edge_node.service import EdgeConfig
from harness import frame_for, start_tiers, stop_tiers


def test_slow_cloud_loses_no_frames(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(workers=1), edge_cfg=EdgeConfig(max_queue=2))
    try:
        process = t.cloud.core.process

        def slow(frame: Frame) -> Result:
            time.sleep(0.02)
            return process(frame)

        t.cloud.core.process = slow
        m = zoo.load_manifest("digits_cnn")
        x = m.input.preprocess(load_heldout(m).images[:1])
        a = t.register(split=1)
        frames = [frame_for(a, m, x, i) for i in range(1, 61)]
        results = list(t.edge_stub.Stream(iter(frames), timeout=120))
        assert [r.frame_id for r in results] == list(range(1, 61))
        assert all(not r.HasField("error") for r in results)
    finally:
        stop_tiers(t)


def test_duplicate_answers_are_routed_once() -> None:
    async def scenario() -> list:
        link = CloudLink(max_queue=4, metrics=ServiceMetrics("edge"))
        session = DeviceSession(asyncio.Queue())
        frame = Frame("d", 7, "token", "digits_cnn", "v", Split(1, 5), Tensor(Encoding.FLOAT32, (1,), b"\0" * 4))
        assert await link.submit(frame, session)
        assert not await link.submit(frame, session)  # a resent copy while in flight
        answer = Result(device_id="d", frame_id=7, split=Split(1, 5))
        assert link.route(answer)
        assert not link.route(answer)  # the cloud answered the resent copy too
        session.reading_done = True
        session.maybe_finish()
        out = []
        while not session.out.empty():
            out.append(session.out.get_nowait())
        return out

    out = asyncio.run(scenario())
    assert len([o for o in out if isinstance(o, Result)]) == 1
