"""Stopping the edge's cloud link while it winds down a broken stream: the stop must not be lost.
It was: the link awaited its writer with CancelledError suppressed, so a cancellation that came
while the writer was ending was swallowed, the link reconnected, and an edge whose cloud had gone
ignored SIGTERM (seen in tests/integration/test_sigterm_states.py under load)."""

from __future__ import annotations

import asyncio
import socket

import grpc
import numpy as np
import pytest

from ecd import codec
from ecd.metrics import ServiceMetrics
from ecd.packing import Packing
from ecd.types import Encoding, Frame, Split
from edge_node.link import CloudLink, DeviceSession
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import run_cloud_link


class BrokenCall:
    """A cloud stream that breaks at once, while its writer is busy and slow to cancel."""

    def __init__(self, writer_cancelled: asyncio.Event):
        self.writer_cancelled = writer_cancelled

    async def write(self, msg) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.writer_cancelled.set()
            await asyncio.sleep(0.2)  # winding down takes a moment
            raise

    def __aiter__(self):
        return self

    async def __anext__(self):
        await asyncio.sleep(0.01)  # the writer is in write() by now
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "cloud gone")


class Stub:
    def __init__(self):
        self.calls = 0
        self.writer_cancelled = asyncio.Event()

    def Stream(self):
        self.calls += 1
        return BrokenCall(self.writer_cancelled)


def test_a_stop_while_the_writer_winds_down_ends_the_link() -> None:
    async def go() -> int:
        metrics = ServiceMetrics("edge")
        link = CloudLink(4, metrics)
        frame = Frame("d", 1, "tok", "m", "v", Split(2, 0), codec.encode(np.zeros((1, 4), np.float32), Encoding.FLOAT32))
        await link.submit(frame, DeviceSession(asyncio.Queue(), asyncio.Semaphore(4)))
        stub = Stub()
        task = asyncio.create_task(run_cloud_link(link, stub, metrics))
        await asyncio.wait_for(stub.writer_cancelled.wait(), timeout=5)
        task.cancel()  # SIGTERM's stop, while the link awaits its writer
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        return stub.calls

    assert asyncio.run(go()) == 1  # no second stream: the stop was not swallowed


def test_a_stop_while_a_call_to_a_cloud_that_is_gone_starts_ends_the_link() -> None:
    """A real channel to a port nobody listens on (the cloud stopped first, as at a test's end):
    the link retries, and a stop landing at any step of a retry ends it. grpc takes a cancellation
    that comes while it starts a call that has already failed and raises UNAVAILABLE instead; the
    link caught that as a broken stream and retried for ever, so the edge's stop never ended."""
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()

    async def go() -> list[int]:
        metrics = ServiceMetrics("edge")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.CloudServerStub(channel)
        lost = []
        try:
            for steps in range(40):  # the stop lands `steps` loop steps into a run: every phase of a retry
                task = asyncio.create_task(run_cloud_link(CloudLink(4, metrics), stub, metrics, Packing(linger_s=0.0, max_frames=32)))
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=3)
                if not done:
                    lost.append(steps)
                    task.cancel()
                    await asyncio.wait({task}, timeout=5)
        finally:
            await channel.close()
        return lost

    assert asyncio.run(asyncio.wait_for(go(), 120)) == []
