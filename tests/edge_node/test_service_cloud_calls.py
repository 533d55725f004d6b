"""The edge node's calls to its cloud (edge_node.service): registering while the cloud cannot take
it yet, the heartbeat, the cloud link's reconnections, and the deregistration's deadline.

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
import socket
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from ecd import certs
from ecd.codec import encode
from ecd.config import MiB
from ecd.errors import ConfigError
from ecd.metrics import ServiceMetrics
from ecd.transport.rpc import cancel_all
from ecd.transport import serde
from ecd.types import EdgeRegistration, Encoding, Frame, Position, Split
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node import service
from edge_node.core import CloudLink, DeviceSession, EdgeCore
from edge_node.service import EdgeConfig, _heartbeat, _register, run_cloud_link, start_edge

REGISTRATION = EdgeRegistration("127.0.0.1:7000", 12.5, Position(1.0, 2.0), 3.0)
JITTER = 0.75  # what random.uniform returns here


class ScriptedCloud(pb_grpc.CloudServerServicer):
    """Each call takes the next answer of its script: a status code to abort with, else an answer."""

    def __init__(self) -> None:
        self.register_codes: list[grpc.StatusCode] = []
        self.registrations: list[tuple[pb.RegisterEdgeRequest, float | None]] = []
        self.heartbeat_script: list = []  # a status code, or the revoked device ids to answer
        self.heartbeats: list[tuple[pb.EdgeHeartbeat, float | None]] = []
        self.deregistrations: list[float | None] = []
        self.streams: list[list[pb.Frame]] = []  # the frames each cloud stream received
        self.stream_script: list = []  # per stream: how many frames to read, then "break" or "answer"
        self.calls = asyncio.Event()  # set at every call (and every frame a stream reads)
        self.on_heartbeat = lambda: None  # run as each heartbeat arrives, before it is answered
        self.port = 0

    async def RegisterEdge(self, request, context):
        self.registrations.append((request, context.time_remaining()))
        self.calls.set()
        if self.register_codes:
            await context.abort(self.register_codes.pop(0), "scripted refusal")
        return pb.RegisterEdgeResponse(edge_id=f"edge-{len(self.registrations)}")

    async def Heartbeat(self, request, context):
        self.heartbeats.append((request, context.time_remaining()))
        self.on_heartbeat()
        self.calls.set()
        answer = self.heartbeat_script.pop(0) if self.heartbeat_script else []
        if isinstance(answer, grpc.StatusCode):
            await context.abort(answer, "scripted refusal")
        return pb.HeartbeatAck(revoked=answer)

    async def DeregisterEdge(self, request, context):
        self.deregistrations.append(context.time_remaining())
        self.calls.set()
        await asyncio.Event().wait()  # never answers

    async def Stream(self, request_iterator, context):
        got: list[pb.Frame] = []
        self.streams.append(got)
        self.calls.set()
        read, then = self.stream_script.pop(0) if self.stream_script else (0, "hold")
        while len(got) < read:
            got.append(await anext(request_iterator))
            self.calls.set()
        if then == "answer":
            for f in got:
                yield pb.Result(device_id=f.device_id, frame_id=f.frame_id)
        elif then == "hold":
            await asyncio.Event().wait()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted break")


async def serve(cloud: ScriptedCloud) -> tuple[grpc.aio.Server, pb_grpc.CloudServerStub, grpc.aio.Channel]:
    server = grpc.aio.server()
    pb_grpc.add_CloudServerServicer_to_server(cloud, server)
    cloud.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{cloud.port}")
    return server, pb_grpc.CloudServerStub(channel), channel


async def edge_on(cloud: ScriptedCloud, tmp_path: Path):
    """The scripted cloud's server, and an edge node started against it."""
    server, _, channel = await serve(cloud)
    await channel.close()
    return server, await start_edge(EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1, model_dir=str(tmp_path)))


async def until(cloud: ScriptedCloud, condition, what: str, timeout_s: float = 10.0) -> None:
    """Wait for the scripted cloud's calls until ``condition()`` holds."""
    async def wait() -> None:
        while not condition():
            cloud.calls.clear()
            await cloud.calls.wait()

    try:
        await asyncio.wait_for(wait(), timeout_s)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; streams {[[f.frame_id for f in s] for s in cloud.streams]}") from None


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
    sent, remaining = cloud.registrations[-1]
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
        core.link.queue.put_nowait("a")
        core.link.queue.put_nowait("b")
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
        server, stub, channel = await serve(cloud)
        link = CloudLink(8, metrics)
        session = DeviceSession(asyncio.Queue(), asyncio.Semaphore(8))
        await link.submit(frame(1), session)
        await link.submit(frame(2), session)
        task = asyncio.create_task(run_cloud_link(link, stub, metrics))
        try:
            await until(cloud, lambda: len(cloud.streams) >= 7, "the seventh cloud stream")
            return [session.out.get_nowait().frame_id for _ in range(session.out.qsize())], dict(link.pending)
        finally:
            task.cancel()
            await channel.close()
            await server.stop(0)

    answered, pending = asyncio.run(main())
    assert [[f.frame_id for f in s] for s in cloud.streams] == [[1, 2]] * 6 + [[]]  # resent first on every new stream
    assert answered == [1, 2] and pending == {}  # each answered once
    # 0.2 s, doubling, at most 2 s; back to 0.2 s once the cloud answered
    assert [w for w in waits if not isinstance(w, tuple)] == [b * JITTER for b in (0.2, 0.4, 0.8, 1.6, 2.0, 0.2)]
    assert {w for w in waits if isinstance(w, tuple)} == {("uniform", 0.5, 1.0)}
    sent = sum(f.ByteSize() for s in cloud.streams for f in s)
    assert metrics.registry.get_sample_value("ecd_hop_bytes_total", {"service": "edge", "hop": "edge_to_cloud"}) == sent


def test_a_leaving_node_waits_at_most_2_s_for_its_deregistration(tmp_path: Path) -> None:
    cloud = ScriptedCloud()

    async def main():
        server, edge = await edge_on(cloud, tmp_path)
        try:
            await asyncio.wait_for(edge.stop(0, leave=True), 10)  # the cloud never answers the deregistration
        finally:
            await server.stop(0)

    asyncio.run(main())
    (remaining,) = cloud.deregistrations
    assert remaining is not None and 1.0 < remaining <= 2.5


def test_a_stop_cancelled_while_it_deregisters_ends_cancelled(tmp_path: Path) -> None:
    cloud = ScriptedCloud()

    async def main():
        server, edge = await edge_on(cloud, tmp_path)
        try:
            stopping = asyncio.create_task(edge.stop(0, leave=True))
            await until(cloud, lambda: cloud.deregistrations, "the deregistration")
            stopping.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stopping
        finally:
            await edge.server.stop(0)
            await cancel_all(edge.tasks)
            await edge.channel.close()
            await server.stop(0)

    asyncio.run(main())


def test_a_node_whose_cloud_never_answers_gives_up_after_30_s_naming_the_option(short_waits, monkeypatch, tmp_path: Path) -> None:
    """A cloud address that accepts connections and never speaks gRPC: the node waits 30 s (shortened
    here: the wait asked for is recorded), then says which option to fix and serves nothing."""
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen()
    cloud = f"127.0.0.1:{mute.getsockname()[1]}"
    started: list = []
    real_start_server = service.start_server

    async def start_server(*args, **kwargs):
        started.append(await real_start_server(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(service, "start_server", start_server)
    try:
        with pytest.raises(ConnectionError) as e:
            asyncio.run(start_edge(EdgeConfig(cloud=cloud, metrics_port=-1, model_dir=str(tmp_path))))
    finally:
        mute.close()
    assert str(e.value) == f"cloud: no cloud server answers at {cloud} (--cloud)"
    assert short_waits == [30]
    (s,) = started
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:  # the node's own port serves nothing
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(ch).result(timeout=0.5)


@pytest.fixture
def short_waits(monkeypatch) -> list:
    """The node's wait for its cloud, recorded and cut to 0.2 s (the cloud addresses here never answer)."""
    asked: list = []
    real_wait_for = asyncio.wait_for

    async def wait_for(aw, timeout):
        if sys._getframe(1).f_globals.get("__name__") == service.__name__:
            asked.append(timeout)
            timeout = 0.2
        return await real_wait_for(aw, timeout)

    monkeypatch.setattr(asyncio, "wait_for", wait_for)
    return asked


def test_a_cloud_beyond_loopback_needs_tls_or_allow_plaintext_and_the_refusal_names_the_option(short_waits, tmp_path: Path) -> None:
    far = "192.0.2.1:50051"  # TEST-NET-1: never answers
    base = EdgeConfig(cloud=far, metrics_port=-1, model_dir=str(tmp_path / "m"))
    with pytest.raises(ConfigError) as e:
        asyncio.run(start_edge(base))
    assert str(e.value).startswith("cloud: ") and "192.0.2.1" in str(e.value)
    with pytest.raises(ConnectionError):  # forced: dialled (and it never answers)
        asyncio.run(start_edge(replace(base, allow_plaintext=True)))
    folder = tmp_path / "certs"
    certs.init(folder, certs.default_holders(edges=1, devices=0))
    with pytest.raises(ConnectionError):  # under TLS: dialled
        asyncio.run(start_edge(replace(base, tls_dir=str(folder), tls_name="edge-1")))


def test_the_link_to_the_cloud_takes_messages_up_to_max_message_bytes(tmp_path: Path) -> None:
    """gRPC's own default would refuse a reply over 4 MiB from the cloud."""
    class BigAnswers(ScriptedCloud):
        async def GetAssignment(self, request, context):
            return pb.Assignment(device_id=request.device_id, model_id="m" * (5 * MiB))

    cloud = BigAnswers()

    async def main():
        server, edge = await edge_on(cloud, tmp_path)
        try:
            reply = await pb_grpc.CloudServerStub(edge.channel).GetAssignment(pb.GetAssignmentRequest(device_id="d"), timeout=10)
            return len(reply.model_id)
        finally:
            await edge.stop(0, leave=False)
            await server.stop(0)

    assert asyncio.run(main()) == 5 * MiB


def test_serving_beyond_loopback_in_plaintext_must_be_forced(tmp_path: Path) -> None:
    cloud = ScriptedCloud()

    async def main():
        server, _, channel = await serve(cloud)
        await channel.close()
        base = EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", host="0.0.0.0", metrics_port=-1, model_dir=str(tmp_path))
        try:
            with pytest.raises(ConfigError) as e:
                await start_edge(base)
            assert str(e.value).startswith("host: ")
            edge = await start_edge(replace(base, allow_plaintext=True))  # forced
            await edge.stop(0, leave=False)
        finally:
            await server.stop(0)
        return edge

    edge = asyncio.run(main())
    assert edge.endpoint == f"0.0.0.0:{edge.port}" and [r.endpoint for r, _ in cloud.registrations] == [edge.endpoint]
