"""The cloud's frame workers (cloud_server.service) and what a drain or a stop does with the frames
in flight, over real gRPC on loopback: one edge stream's frames are computed ``workers`` at once on
the cloud's own pool and answered in order; a drain waits for a frame being computed up to its
timeout and no longer than the stream; a stop past its grace leaves the frame in the worker and
drops the ones queued behind it."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from harness import Tiers, cloud_frames, start_tiers, stop_tiers, wait_until

from cloud_server.config import CloudConfig


def before_each_message(t: Tiers, each: Callable[[list], object]) -> None:
    """``each(frames)`` runs in the cloud's worker before it computes a message's frames."""
    real = t.cloud.core.process_many

    def wrapped(frames, relayed_by=None):
        each(frames)
        return real(frames, relayed_by)

    t.cloud.core.process_many = wrapped


def blocking(t: Tiers) -> tuple[threading.Event, threading.Event]:
    """The cloud's frame work held until ``release`` is set (``started``: one has begun)."""
    started, release = threading.Event(), threading.Event()
    before_each_message(t, lambda _: (started.set(), release.wait(20)))
    return started, release


def test_a_drain_waits_for_a_frame_in_flight_up_to_its_timeout_and_no_longer_than_the_stream(tmp_path: Path) -> None:
    """``drain(timeout)`` returns the streams still open: one whose frame is being computed holds it
    for the whole timeout, and once that frame is answered the drain returns at once. (The edge node
    is stopped first: its link, drained, would open again.)"""
    t = start_tiers(tmp_path)
    servicer = t.cloud.servicer
    frames = cloud_frames(t, 1)
    t.loop.run(t.edge.stop(0))
    wait_until(lambda: servicer.streams == 0, "the edge's link to end")
    started, release = blocking(t)
    call = t.cloud_stub.Stream(iter(frames), timeout=60)
    try:
        assert started.wait(30)
        loop = t.loop.loop

        async def timed(timeout_s: float, release_at_once: bool) -> tuple[int, float]:
            t0 = loop.time()
            drained = asyncio.create_task(servicer.drain(timeout_s))
            await asyncio.sleep(0)  # the drain has looked at the streams once and waits
            if release_at_once:
                release.set()
            return await drained, loop.time() - t0

        still_open, waited = t.loop.run(timed(0.3, False))
        assert still_open == 1 and waited >= 0.3  # the frame in flight: the whole timeout
        still_open, waited = t.loop.run(timed(20, True))
        assert still_open == 0 and waited < 1.0  # answered: the drain ends with the stream, not at its timeout
        assert [r.frame_id for r in call] == [1] and call.code() == grpc.StatusCode.OK
    finally:
        release.set()
        call.cancel()
        t.cloud_channel.close()
        t.edge_channel.close()
        t.loop.run(t.cloud.stop(0))
        t.loop.close()


def test_an_edge_streams_frames_are_computed_on_the_clouds_workers_and_answered_in_order(tmp_path: Path) -> None:
    """``workers`` frames of one stream at once, on the cloud's own pool (its threads named
    ``cloud-infer``): the first two are held until both run together, and no third thread is used."""
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(workers=2))
    together = threading.Barrier(2, timeout=20)
    order = itertools.count()
    threads: list[str] = []

    def recorded(_: list) -> None:
        threads.append(threading.current_thread().name)
        if next(order) < 2:
            together.wait()

    before_each_message(t, recorded)
    try:
        results = list(t.cloud_stub.Stream(iter(cloud_frames(t, 5)), timeout=60))
        assert [r.frame_id for r in results] == [1, 2, 3, 4, 5] and not any(r.HasField("error") for r in results)
        assert sorted(set(threads)) == ["cloud-infer_0", "cloud-infer_1"]
    finally:
        stop_tiers(t)


def test_a_stop_does_not_wait_for_the_frame_being_computed_and_never_starts_the_queued_ones(tmp_path: Path) -> None:
    """Past its grace a stop leaves the frame in the worker to finish on its own and drops the
    frames queued behind it (the edges resend them to the next cloud)."""
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(workers=1))
    frames = cloud_frames(t, 2)
    started, release = blocking(t)
    calls: list[int] = []
    before_each_message(t, lambda frames: calls.append(len(frames)))
    call = t.cloud_stub.Stream(iter(frames), timeout=60)
    pool = t.cloud.servicer.pool
    try:
        assert started.wait(30)
        wait_until(lambda: pool._work_queue.qsize() == 1, "the second frame to wait for the worker")
        t0 = time.monotonic()
        t.loop.run(t.cloud.stop(0))
        assert time.monotonic() - t0 < 10  # not the 20 s the held frame takes
    finally:
        release.set()
        call.cancel()
        t.cloud_channel.close()
        t.edge_channel.close()
        t.loop.run(t.edge.stop(0))
        t.loop.close()
    pool.shutdown(wait=True)  # the worker is done: whatever it was to run has run
    assert calls == [1]
