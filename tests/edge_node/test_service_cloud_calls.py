"""The edge node's calls to its cloud (edge_node.service): registering while the cloud cannot take
it yet, the heartbeat, the cloud link's reconnections, the assignment asked with its holder, a
browser device's relayed calls, and the deregistration's deadline.

Against a scripted cloud: a real gRPC server on a loopback port chosen by the OS, whose answers the
test sets call by call (which a real cloud cannot be made to give on cue: UNAVAILABLE three times,
NOT_FOUND to a heartbeat, a stream that breaks). The waits between retries are recorded, not slept
(``asyncio.sleep`` called from the module, ``random.uniform`` fixed), so the backoff is checked
exactly and no test waits for it. The mutation gate found every one of these behaviours unpinned.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from pathlib import Path

import grpc
import pytest
from scripted_cloud import ScriptedCloud, linked, serve, until

from ecd.codec import encode
from ecd.errors import PeerError
from ecd.metrics import ServiceMetrics
from ecd.packing import Packing
from ecd.split import Preferences
from ecd.types import (
    DeviceRegistration,
    EdgeRegistration,
    Encoding,
    Enrolment,
    Frame,
    Position,
    PreferencesUpdate,
    Split,
)
from ecd.v1 import ecd_pb2 as pb
from edge_node import service
from edge_node.core import EdgeCore
from edge_node.service import _heartbeat, _register

REGISTRATION = EdgeRegistration("127.0.0.1:7000", 12.5, Position(1.0, 2.0), 3.0)
JITTER = 0.75  # what random.uniform returns here


@pytest.fixture
def waits(monkeypatch) -> list:
    """The waits edge_node.service asks for, recorded and not slept; each uniform() draw's bounds too."""
    recorded: list = []
    real_sleep = asyncio.sleep

    async def sleep(delay, *args):
        if sys._getframe(1).f_globals.get("__name__") == service.__name__:
            recorded.append(delay)
            delay = 0
        return await real_sleep(delay, *args)

    def uniform(a, b):
        recorded.append(("uniform", a, b))
        return JITTER

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(random, "uniform", uniform)
    return recorded


def test_registering_retries_while_the_cloud_is_unavailable_with_backoff_said_once(waits, caplog) -> None:
    cloud = ScriptedCloud()
    cloud.register_codes = [grpc.StatusCode.UNAVAILABLE] * 6

    async def main():
        server, stub, channel = await serve(cloud)
        try:
            return await _register(stub, REGISTRATION)
        finally:
            await channel.close()
            await server.stop(0)

    with caplog.at_level(logging.WARNING, logger="ecd.edge"):
        reply = asyncio.run(main())
    assert reply.edge_id == "edge-7"  # the seventh try was taken
    sent, _ = cloud.registrations[-1]
    assert (sent.endpoint, sent.capacity, sent.activation_cost) == ("127.0.0.1:7000", 12.5, 3.0)
    assert all(25 < r <= 30.5 for _, r in cloud.registrations), [r for _, r in cloud.registrations]  # each try has a 30 s deadline
    # 0.5 s, doubling, at most 5 s; each drawn in [50 %, 100 %] of it
    assert waits == [x for b in (0.5, 1.0, 2.0, 4.0, 5.0, 5.0) for x in (("uniform", 0.5, 1.0), b * JITTER)]
    said = [r.getMessage() for r in caplog.records if "cannot register this node now" in r.getMessage()]
    assert said == ["[EdgeNode] the cloud cannot register this node now (scripted refusal); retrying until it can"]


def test_registering_gives_up_at_once_on_any_other_refusal(waits) -> None:
    cloud = ScriptedCloud()
    cloud.register_codes = [grpc.StatusCode.PERMISSION_DENIED]

    async def main():
        server, stub, channel = await serve(cloud)
        try:
            await _register(stub, REGISTRATION)
        finally:
            await channel.close()
            await server.stop(0)

    with pytest.raises(grpc.aio.AioRpcError) as e:
        asyncio.run(main())
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(cloud.registrations) == 1 and waits == []


class Running:
    """What the heartbeat reads of the running node: its id and its core."""

    def __init__(self, core: EdgeCore, edge_id: str) -> None:
        self.core, self.edge_id = core, edge_id


def test_the_heartbeat_reports_load_and_queue_forgets_revoked_devices_and_registers_again(waits, tmp_path: Path) -> None:
    cloud = ScriptedCloud()
    # 1: ok; 2: revokes dev-1; 3: UNAVAILABLE (goes on); 4: NOT_FOUND, registering again fails;
    # 5: NOT_FOUND, registered again as edge-2; 6: from edge-2
    cloud.heartbeat_script = [[], ["dev-1"], grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND, []]
    cloud.register_codes = [grpc.StatusCode.UNAVAILABLE]
    seen: list[tuple[str, float, int]] = []
    cached: list[set] = []  # the devices whose assignment the core holds, as each beat arrives
    running = Running(None, "edge-0")

    def on_heartbeat() -> None:
        hb, _ = cloud.heartbeats[-1]
        seen.append((hb.edge_id, hb.load, hb.queue_depth))
        cached.append(set(running.core._assignments))
        running.core.frames_seen += 3 * len(seen)  # frames taken before the next beat

    cloud.on_heartbeat = on_heartbeat

    async def main():
        server, stub, channel = await serve(cloud)
        core = running.core = EdgeCore(None, tmp_path, 8, 1024, ServiceMetrics("edge"), 1024)
        core.edge_id, core.frames_seen = "edge-0", 4
        core._assignments = {"dev-1": ("t1", None), "dev-2": ("t2", None)}
        await core.link.queue.put("dev-1", "a")
        await core.link.queue.put("dev-2", "b")
        beat = asyncio.create_task(_heartbeat(stub, REGISTRATION, running, 0.5))
        try:
            await until(cloud, lambda: len(cloud.heartbeats) >= 6, "six heartbeats")
        finally:
            beat.cancel()
            await channel.close()
            await server.stop(0)

    asyncio.run(main())
    # load: frames taken since the last beat, per second (every 0.5 s)
    assert seen == [("edge-0", 0.0, 2), ("edge-0", 6.0, 2), ("edge-0", 12.0, 2), ("edge-0", 18.0, 2), ("edge-0", 24.0, 2),
                    ("edge-2", 30.0, 2)]
    assert cached[1] == {"dev-1", "dev-2"} and cached[2] == {"dev-2"}  # the revoked device's assignment went with the second ack
    assert all(r is not None and 0.5 < r <= 1.5 for _, r in cloud.heartbeats)  # at least 1 s to answer
    assert [r.endpoint for r, _ in cloud.registrations] == ["127.0.0.1:7000"] * 2  # after each NOT_FOUND, not after UNAVAILABLE
    assert all(r is not None and 0.5 < r <= 1.5 for _, r in cloud.registrations)
    assert (running.edge_id, running.core.edge_id) == ("edge-2", "edge-2")
    assert [w for w in waits if not isinstance(w, tuple)] == [0.5] * 6


def frame(frame_id: int) -> Frame:
    import numpy as np

    return Frame("dev", frame_id, "tok", "m", "v1", Split(1, 2), encode(np.zeros((1, 2), np.float32), Encoding.FLOAT32))


def test_the_cloud_link_reconnects_with_backoff_and_resends_what_is_unanswered(waits) -> None:
    cloud = ScriptedCloud()
    # five streams break after reading the two frames (no answer); the sixth answers them, then breaks;
    # the seventh has nothing to resend
    cloud.stream_script = [(2, "break")] * 5 + [(2, "answer")]
    metrics = ServiceMetrics("edge")

    async def main():
        async with linked(cloud, [frame(1), frame(2)], metrics) as (link, session):
            await until(cloud, lambda: len(cloud.streams) >= 7, "the seventh cloud stream")
            return [session.out.get_nowait().frame_id for _ in range(session.out.qsize())], dict(link.pending)

    answered, pending = asyncio.run(main())
    assert [[f.frame_id for f in s] for s in cloud.streams] == [[1, 2]] * 6 + [[]]  # resent first on every new stream
    assert answered == [1, 2] and pending == {}  # each answered once
    # 0.2 s, doubling, at most 2 s; back to 0.2 s once the cloud answered
    assert [w for w in waits if not isinstance(w, tuple)] == [b * JITTER for b in (0.2, 0.4, 0.8, 1.6, 2.0, 0.2)]
    assert {w for w in waits if isinstance(w, tuple)} == {("uniform", 0.5, 1.0)}
    sent = sum(f.ByteSize() for s in cloud.streams for f in s)
    assert metrics.registry.get_sample_value("ecd_hop_bytes_total", {"service": "edge", "hop": "edge_to_cloud"}) == sent


def test_a_cloud_of_revision_2_is_redialled_at_once_with_one_frame_per_message_then_backs_off_from_0_2_s(waits) -> None:
    """The refusal of StreamBatches is no failure of the cloud: the one-frame stream follows without
    a wait; a break after it waits the first backoff step, 0.2 s."""
    cloud = ScriptedCloud()
    cloud.serves_batches = False
    cloud.stream_script = [(2, "break"), (2, "hold")]  # the first one-frame stream reads both frames and breaks

    async def main():
        async with linked(cloud, [frame(1), frame(2)], ServiceMetrics("edge"), Packing(0.0, max_frames=8)):
            await until(cloud, lambda: len(cloud.streams) >= 2 and len(cloud.streams[1]) == 2, "both frames resent")

    asyncio.run(main())
    assert cloud.messages == [] and [[f.frame_id for f in s] for s in cloud.streams] == [[1, 2], [1, 2]]
    assert [w for w in waits if not isinstance(w, tuple)] == [0.0, 0.2 * JITTER]


class RelayCloud(ScriptedCloud):
    """Answers a browser device's relayed calls: the first of each refused with ``code``, the next
    answered; the time each had left recorded."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__()
        self.code, self.relayed = code, []

    async def _answer(self, name: str, context, device_id: str):
        self.relayed.append((name, context.time_remaining()))
        if sum(n == name for n, _ in self.relayed) == 1:
            await context.abort(self.code, f"{name} refused")
        return pb.Assignment(device_id=device_id, split_device=3, preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5))

    async def UpdatePreferences(self, request, context):
        return await self._answer("update", context, request.device_id)

    async def EnrolDevice(self, request, context):
        return await self._answer("enrol", context, "dev-" + request.code)


def test_a_browser_devices_relayed_calls_keep_the_clouds_refusal_and_have_30_s() -> None:
    """The page shows the cloud's status and words (edge_node.browser); each call gets 30 s."""
    cloud = RelayCloud(grpc.StatusCode.FAILED_PRECONDITION)
    registration = DeviceRegistration("phone", "phone", "wifi", Preferences(0.5, 0.5), "m", None, Encoding.FLOAT16)
    calls = (lambda c: c.update_preferences(PreferencesUpdate("dev-1", "tok", Preferences(0.2, 0.8), 3)),
             lambda c: c.enrol_device(Enrolment("ABC", b"key", registration)))

    async def main():
        server, stub, channel = await serve(cloud)
        client, got = service.GrpcCloudClient(stub), []
        try:
            for call in calls:
                with pytest.raises(PeerError) as e:
                    await call(client)
                got.append((e.value.status, str(e.value), (await call(client)).split.device))
        finally:
            await channel.close()
            await server.stop(0)
        return got

    assert asyncio.run(main()) == [("FAILED_PRECONDITION", "cloud: update refused", 3), ("FAILED_PRECONDITION", "cloud: enrol refused", 3)]
    assert [n for n, _ in cloud.relayed] == ["update"] * 2 + ["enrol"] * 2
    assert all(r is not None and 25 < r <= 30.5 for _, r in cloud.relayed), cloud.relayed


def test_the_edge_asks_for_a_devices_assignment_naming_the_holder_it_was_given_or_none() -> None:
    """The cloud binds a token to the certificate the edge names (``holder``); none named is sent empty,
    which the cloud reads as "not bound" (cloud_server.service.GetAssignment)."""
    asked: list[tuple[str, str, str]] = []

    class Assigning(ScriptedCloud):
        async def GetAssignment(self, request, context):
            asked.append((request.device_id, request.token, request.holder))
            return pb.Assignment(device_id=request.device_id, token=request.token, preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5))

    async def main():
        server, stub, channel = await serve(Assigning())
        client = service.GrpcCloudClient(stub)
        try:
            return [(await client.get_assignment("dev-1", "tok")).token, (await client.get_assignment("dev-2", "t2", "device-2")).token]
        finally:
            await channel.close()
            await server.stop(0)

    assert asyncio.run(main()) == ["tok", "t2"]
    assert asked == [("dev-1", "tok", ""), ("dev-2", "t2", "device-2")]
