"""Stopping an edge node with a frame in flight (edge_node.service.RunningEdge.stop), over a real
cloud and edge on loopback, the cloud holding the frame until the test releases it: a stop with the
defaults (what SIGTERM does) tells the cloud the node leaves and still has the frame answered before
the device's stream ends; a stop's grace bounds that wait. The mutation gate found no test noticing
these broken (a stop that kept the node registered, one that cancelled the cloud link instead of the
heartbeat and lost the frame, one that waited 5 s whatever its grace)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import pytest
from harness import Tiers, frame_for, start_tiers, stop_tiers, wait_until

from ecd import zoo
from ecd.manifest import load_heldout

M = zoo.load_manifest("digits_cnn")
X = M.input.preprocess(load_heldout(M).images[:1])


class Held:
    """Tiers whose cloud answers a frame only once ``release`` is set, and a device streaming one
    frame in a thread (its results in ``got``, the status that ended its stream in ``ended``)."""

    def __init__(self, t: Tiers) -> None:
        self.t = t
        self.entered, self.release = threading.Event(), threading.Event()
        self.got: list = []
        self.ended: list[grpc.StatusCode] = []
        process = t.cloud.core.process_many

        def held(frames, relayed_by):
            self.entered.set()
            self.release.wait(30)
            return process(frames, relayed_by)

        t.cloud.core.process_many = held
        self.sender = threading.Thread(target=self._device, name="test-device", daemon=True)
        self.sender.start()
        assert self.entered.wait(30), "the frame never reached the cloud"

    def _device(self) -> None:
        a = self.t.register(split=2)
        try:
            self.got.extend(self.t.edge_stub.Stream(iter([frame_for(a, M, X, 1)]), timeout=60))
        except grpc.RpcError as e:
            self.ended.append(e.code())

    def last_seen(self, edge_id: str) -> list[float]:
        return [e.last_seen_unix for e in self.t.cloud.registry.edges() if e.edge_id == edge_id]


@pytest.fixture
def held(tmp_path: Path):
    t = start_tiers(tmp_path)
    h = None
    try:
        h = Held(t)
        yield h
    finally:
        if h is not None:
            h.release.set()
            h.sender.join(60)
        stop_tiers(t)


def test_a_stop_with_the_defaults_leaves_the_cloud_and_answers_the_frame_in_flight(held: Held) -> None:
    t, edge_id = held.t, held.t.edge.edge_id
    stopping = asyncio.run_coroutine_threadsafe(t.edge.stop(), t.loop.loop)  # grace and leave: the defaults
    # the defaults: the node leaves (the cloud no longer counts it alive) ...
    wait_until(lambda: held.last_seen(edge_id) == [0.0], "the node's deregistration", timeout_s=10)
    held.release.set()
    stopping.result(60)
    held.sender.join(60)
    # ... and the frame it had taken is answered once, then the stream ends for a resend elsewhere
    assert [(r.frame_id, r.HasField("error")) for r in held.got] == [(1, False)]
    assert held.ended == [grpc.StatusCode.UNAVAILABLE]
    assert held.last_seen(edge_id) == [0.0]  # still gone: no late heartbeat brought it back


def test_a_stops_grace_bounds_the_wait_for_the_frames_in_flight(held: Held) -> None:
    t = held.t
    t0 = time.monotonic()
    t.loop.run(t.edge.stop(0), timeout=30)
    took = time.monotonic() - t0
    held.sender.join(30)
    assert held.got == [] and held.ended == [grpc.StatusCode.UNAVAILABLE]  # the device resends it elsewhere
    assert took < 4.0, f"a stop with no grace took {took:.1f} s"  # not the 5 s a stop without a grace waits
    assert took >= 0.5  # the stream still open gets the server's 0.5 s before it is cut
