"""A scripted cloud for the edge node's service tests: a real gRPC server on a loopback port chosen
by the OS, whose answers each test sets call by call (which a real cloud cannot be made to give on
cue: UNAVAILABLE three times, NOT_FOUND to a heartbeat, a stream that breaks)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc

from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from ecd.metrics import ServiceMetrics
from edge_node.link import ONE_PER_MESSAGE, CloudLink, DeviceSession
from edge_node import service
from edge_node.service import EdgeConfig, run_cloud_link, start_edge


class ScriptedCloud(pb_grpc.CloudServerServicer):
    """Each call takes the next answer of its script: a status code to abort with, else an answer."""

    def __init__(self) -> None:
        self.register_codes: list[grpc.StatusCode] = []
        self.registrations: list[tuple[pb.RegisterEdgeRequest, float | None]] = []
        self.heartbeat_script: list = []  # a status code, or the revoked device ids to answer
        self.heartbeats: list[tuple[pb.EdgeHeartbeat, float | None]] = []
        self.deregistrations: list[float | None] = []
        self.streams: list[list[pb.Frame]] = []  # the frames each cloud stream received
        self.messages: list[list[int]] = []  # frames per message on each StreamBatches call
        self.serves_batches = True  # False: a cloud of ecd.v1 revision 2 (StreamBatches UNIMPLEMENTED)
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


    async def StreamBatches(self, request_iterator, context):
        """Revision 3, on the same script (frames counted, not messages); "answer twice" answers
        every frame read twice (a duplicate answer, as after a failover)."""
        if not self.serves_batches:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        got: list[pb.Frame] = []
        self.streams.append(got)
        self.messages.append([])
        self.calls.set()
        read, then = self.stream_script.pop(0) if self.stream_script else (0, "hold")
        while len(got) < read:
            batch = await anext(request_iterator)
            got.extend(batch.frames)
            self.messages[-1].append(len(batch.frames))
            self.calls.set()
        if then in ("answer", "answer twice"):
            for _ in range(2 if then == "answer twice" else 1):
                yield pb.ResultBatch(results=[pb.Result(device_id=f.device_id, frame_id=f.frame_id) for f in got])
        elif then == "hold":
            await asyncio.Event().wait()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted break")


def servers_started(monkeypatch) -> list:
    """Every gRPC server ``start_edge`` starts from now on, kept (a start that fails after listening
    must leave none serving; a test stops what it left)."""
    started: list = []
    real_start_server = service.start_server

    async def start_server(*args, **kwargs):
        started.append(await real_start_server(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(service, "start_server", start_server)
    return started


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
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; streams {[[f.frame_id for f in s] for s in cloud.streams]}") from None


@contextlib.asynccontextmanager
async def linked(cloud: ScriptedCloud, frames, metrics: ServiceMetrics, packing=ONE_PER_MESSAGE):
    """The scripted cloud's server and an edge's cloud link to it carrying ``frames`` (submitted
    from one device session): yields the link and the session; the link and the server end after."""
    server, stub, channel = await serve(cloud)
    link = CloudLink(8, metrics)
    session = DeviceSession(asyncio.Queue(), asyncio.Semaphore(8))
    for f in frames:
        await link.submit(f, session)
    task = asyncio.create_task(run_cloud_link(link, stub, metrics, packing))
    try:
        yield link, session
    finally:
        task.cancel()
        await channel.close()
        await server.stop(0)
