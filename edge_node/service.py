"""The edge node's gRPC face and its life cycle: register with the cloud, heartbeat, serve devices,
and carry the core's frames to the cloud on one stream.

Thin: every message is converted by :mod:`ecd.transport.serde` and handed to
:class:`~edge_node.core.EdgeCore`, which knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ecd.transport import tls as tls_
from ecd.addresses import advertised_endpoint, split_addresses
from ecd.batching import BatchingConfig
from ecd.config import MiB, option
from ecd.errors import AuthenticationError, ConfigError, EcdError, PeerError, RequestError, UnavailableError
from ecd.limits import check_message_frames, frame_receive_cap
from ecd.packing import DEFAULT_MAX_BYTES, Packing
from ecd.partition import SessionConfig
from ecd.metrics import ServiceMetrics, metrics_tls, start_metrics
from ecd.transport import browser_wire, serde
from ecd.transport.auth import certificate_name
from ecd.transport.catalog import to_status
from ecd.transport.targets import client_target
from ecd.transport.rpc import RunningServer, TransportConfig, cancel_all, grpc_options, start_server
from ecd.types import Assignment, EdgeRegistration, Enrolment, PartitionRequest, Position, PreferencesUpdate
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.core import EdgeCore
from edge_node.link import ONE_PER_MESSAGE, CloudLink
from edge_node.fair import DeviceQuotas, Meter

log = logging.getLogger("ecd.edge")


@dataclass(frozen=True)
class EdgeConfig:
    cloud: str = option("127.0.0.1:50051", "cloud server host:port, or several replicas as host:port,host:port (the first "
                        "that answers is used, the next when it fails)")
    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(0, "gRPC port devices stream to (0 = any free port)", command=50061)
    advertise: str = option("", "HOST or HOST:PORT devices should dial (default: host and the bound port; with host 0.0.0.0, "
                            "this machine's address on the route to the cloud); 0.0.0.0 or :: is refused")
    metrics_port: int = option(0, "Prometheus port (0 = any free port, -1 = off)", command=9101)
    metrics_tls: bool = option(False, "serve /metrics over TLS with this holder's certificate, only to scrapers presenting a "
                               "certificate of the same CA (needs tls_dir)")
    capacity: float = option(100.0, "frames per second this node can sustain (operator's estimate)")
    model_dir: str = option("", "where fetched partitions are kept (default: a temporary folder)")
    max_queue: int = option(64, "frames waiting for the cloud before device streams are slowed")
    max_tensor_bytes: int = option(16 * MiB, "largest tensor accepted in a frame, bytes (its float32 size counts)")
    max_batch: int = option(64, "most images one frame may carry")
    batch_max_frames: int = option(32, "dynamic batching: most images run as one batch (frames of every device stream needing the same blocks)")
    batch_max_delay_ms: float = option(0.0, "dynamic batching: how long a batch waits for more frames (0 = it runs at once; frames that arrive meanwhile form the next batch)")
    batch_instances: int = option(1, "dynamic batching: batches of the same blocks running at once (with intra_op_threads 1, one per "
                                  "core keeps every core busy at a cost in one frame's latency)")
    intra_op_threads: int = option(0, "onnxruntime threads inside one run of the blocks (0 = one per core)")
    max_stream_frames: int = option(64, "frames one device stream may have outstanding (results not yet read)")
    max_device_streams: int = option(2, "streams one device may have open at once on this node (one more is refused; 2: an "
                                     "agent's old stream may linger while it opens the next)")
    max_device_frames: int = option(16, "frames one device may have in this node's pipeline across its streams, then its "
                                    "streams wait (16: twice an agent's default max_in_flight)")
    max_message_bytes: int = option(64 * MiB, "gRPC max message size, bytes")
    message_frames: int = option(32, "most frames in one message to the cloud (the frames queued for it are sent together; "
                                 "1 = one frame per message)")
    message_bytes: int = option(DEFAULT_MAX_BYTES, "most tensor bytes in one message to the cloud (a larger frame goes alone)")
    heartbeat_s: float = option(1.0, "seconds between heartbeats to the cloud (its edge_timeout_s should be a few of these)")
    grace_s: float = option(5.0, "seconds in-flight calls get on SIGTERM")
    position: str = option("", "where this node stands, LAT,LON in degrees (placement uses it; empty = unknown)")
    activation_cost: float = option(0.0, "placement's cost of keeping this node active (0 = the cloud's default)")
    tls_dir: str = option("", "folder written by `ecd certs init`: ca.pem and this holder's NAME.pem/NAME.key (empty = plaintext, refused without --insecure)")
    tls_name: str = option("edge-1", "which certificate in tls_dir is this holder's (NAME.pem, NAME.key)")
    insecure: bool = option(False, "plaintext on purpose: without tls_dir the service refuses to start unless this is set; anyone on "
                            "the network can then read and forge its traffic (a warning is logged where it listens beyond loopback)",
                            was=("allow_plaintext",))
    reflection: bool = option(True, "serve gRPC server reflection (turn off in production)")
    health_port: int = option(-1, "a plaintext port on host serving only gRPC health, for probes that cannot present a client certificate (-1 = off, 0 = any free port)")
    browser_port: int = option(-1, "HTTPS port of the device page, for phones that stream from their browser (needs tls_dir: "
                               "served with this node's certificate; -1 = off, 0 = any free port)")
    max_browser_sessions: int = option(256, "device page: connections at once (each streaming phone holds one); one more is refused (503)")


class GrpcCloudClient:
    """The edge's :class:`~edge_node.core.CloudClient` over gRPC; refusals become runtime errors."""

    def __init__(self, stub: pb_grpc.CloudServerStub):
        self.stub = stub

    async def get_assignment(self, device_id: str, token: str, holder: str = "") -> Assignment:
        try:
            reply = await self.stub.GetAssignment(pb.GetAssignmentRequest(device_id=device_id, token=token, holder=holder))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise AuthenticationError(e.details()) from None
            raise UnavailableError(f"cloud: cannot check the device's assignment ({e.code().name})") from None
        return serde.assignment_from_pb(reply)

    async def update_preferences(self, request: PreferencesUpdate) -> Assignment:
        """A browser device's new weights and split, relayed once its session proved its key."""
        try:
            return serde.assignment_from_pb(await self.stub.UpdatePreferences(serde.update_to_pb(request), timeout=30))
        except grpc.aio.AioRpcError as e:
            raise PeerError(e.code().name, f"cloud: {e.details()}") from None

    async def enrol_device(self, request: Enrolment) -> Assignment:
        """A browser device's enrolment, relayed; the cloud's refusal keeps its status (the page shows it)."""
        try:
            return serde.assignment_from_pb(await self.stub.EnrolDevice(browser_wire.enrolment_to_pb(request), timeout=30))
        except grpc.aio.AioRpcError as e:
            raise PeerError(e.code().name, f"cloud: {e.details()}") from None

    async def fetch_partition(self, request: PartitionRequest):
        try:
            async for chunk in self.stub.FetchPartition(serde.partition_request_to_pb(request)):
                yield serde.chunk_from_pb(chunk)
        except grpc.aio.AioRpcError as e:
            raise UnavailableError(
                f"model: cannot fetch {request.model_id}@{request.model_version} from the cloud ({e.code().name}: {e.details()})"
            ) from None


class EdgeServicer(pb_grpc.EdgeNodeServicer):
    """Device streams, each handler writing its results (``context.write``, not yielding them to gRPC's
    loop) so that all its steps are metered: what a stream costs the edge weighs its device's share."""

    def __init__(self, core: EdgeCore):
        self.core = core

    async def Stream(self, request_iterator, context):
        async def messages():
            async for msg in request_iterator:
                yield [serde.frame_from_pb(msg)]

        await self._serve(messages(), lambda results: [serde.result_to_pb(r) for r in results], context)

    async def StreamBatches(self, request_iterator, context):
        async def messages():
            async for msg in request_iterator:
                check_message_frames(len(msg.frames))  # before any frame is built
                yield [serde.frame_from_pb(f) for f in msg.frames]

        await self._serve(messages(), lambda results: [pb.ResultBatch(results=[serde.result_to_pb(r) for r in results])], context)

    async def _serve(self, messages, replies, context) -> None:
        meter = Meter(self.core.quotas.clock)

        async def serve() -> None:  # the device's certificate on this stream: its token must have been issued to it
            async with contextlib.aclosing(self.core.serve_messages(messages, certificate_name("device") or "", meter)) as ready:
                async for results in ready:  # closed however this ends (a cancelled call too): its stream leaves at once
                    for reply in replies(results):
                        await context.write(reply)

        try:
            await meter.run(serve())
        except EcdError as e:  # draining: the device resends elsewhere
            await context.abort(*to_status(e))


async def run_cloud_link(link: CloudLink, stub: pb_grpc.CloudServerStub, metrics: ServiceMetrics, packing: Packing = ONE_PER_MESSAGE) -> None:
    """Carry the link's frames to the cloud on one stream — several per message (revision 3's
    StreamBatches) when ``packing`` is on; on a break, reconnect with backoff and jitter, and write
    every unanswered frame first on the new stream. A cloud that does not serve StreamBatches
    (revision 2) gets one frame per message.

    A stop must end it however the stream is faring: grpc (1.85) catches a cancellation that comes
    while it starts a call that has already failed and raises the call's UNAVAILABLE instead, so the
    task's own cancelling count, not the exception seen, says whether it was stopped (an edge whose
    cloud had gone once hung on SIGTERM: tests/edge_node/test_cloud_link_stop.py)."""
    backoff_s = 0.2
    batches = packing.on
    while True:
        call = stub.StreamBatches() if batches else stub.Stream()
        per_message = packing if batches else ONE_PER_MESSAGE

        async def write() -> None:
            resend = link.unanswered()
            if resend:
                log.warning("[EdgeNode.CloudLink] resending %d unanswered frames", len(resend))
            for frames in per_message.chunks(resend, lambda f: len(f.tensor.data)):
                await send(frames)
            while True:
                await send(await link.next_frames(per_message))

        async def send(frames) -> None:
            msg = pb.FrameBatch(frames=[serde.frame_to_pb(f) for f in frames]) if batches else serde.frame_to_pb(frames[0])
            await call.write(msg)
            metrics.hop_bytes.labels("edge", "edge_to_cloud").inc(msg.ByteSize())

        writer = asyncio.create_task(write())
        try:
            async for msg in call:
                for result in msg.results if batches else (msg,):
                    if link.route(serde.result_from_pb(result)):
                        backoff_s = 0.2
        except grpc.aio.AioRpcError as e:
            if batches and e.code() == grpc.StatusCode.UNIMPLEMENTED:
                log.warning("[EdgeNode.CloudLink] the cloud does not take several frames per message (ecd.v1 revision < 3): "
                            "sending one per message")
                batches = False
                backoff_s = 0.0
            else:
                log.warning("[EdgeNode.CloudLink] cloud stream broke (%s); %d frames unanswered", e.code().name, len(link.pending))
        except Exception as e:  # noqa: BLE001 — whatever broke this stream, the link must go on with a new one
            log.warning("[EdgeNode.CloudLink] cloud stream failed (%s); %d frames unanswered", type(e).__name__, len(link.pending))
        finally:
            writer.cancel()
            # the writer may have failed with the call already (a write on a broken stream raises
            # cygrpc's ExecuteBatchError, not AioRpcError): that must not end the link — it did,
            # and the edge never reconnected to a restarted cloud. asyncio.wait neither raises the
            # writer's error nor swallows this task's own cancellation (suppressing CancelledError
            # here did: a stop that came while the writer wound down was lost, and SIGTERM hung)
            await asyncio.wait({writer})
            if not writer.cancelled():
                writer.exception()
        if asyncio.current_task().cancelling():  # stopped, whatever grpc raised for it
            raise asyncio.CancelledError
        await asyncio.sleep(backoff_s * random.uniform(0.5, 1.0))
        backoff_s = min(max(backoff_s, 0.1) * 2, 2.0)  # a restarted cloud is found within ~2 s


@dataclass
class RunningEdge:
    server: RunningServer
    core: EdgeCore
    edge_id: str
    endpoint: str
    metrics: ServiceMetrics
    metrics_port: int
    channel: grpc.aio.Channel
    tasks: list[asyncio.Task] = field(default_factory=list)
    tmpdir: tempfile.TemporaryDirectory | None = None
    stopped: bool = False
    browser: Any = None  # ecd.web.WebServer serving the device page (edge_node.browser), or None

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float | None = None, leave: bool = True) -> None:
        """Stop serving, losing no frame: tell the cloud this node leaves (placement moves its
        devices away), stop taking frames, let the cloud answer every frame taken (up to ``grace``
        seconds), end the device streams with UNAVAILABLE so devices resend the rest elsewhere.
        Stopping a stopped node does nothing."""
        if self.stopped:
            return
        self.stopped = True
        if leave:
            self.tasks[-1].cancel()  # the heartbeat: a late one must not bring the node back to life
            await _leave(pb_grpc.CloudServerStub(self.channel), self.edge_id)
        if self.browser is not None:
            await self.browser.aclose()
        left = await self.core.drain(grace if grace is not None else 5.0)
        if left:
            log.warning("[EdgeNode] %d device streams still open after the grace period", left)
        await self.server.stop(0.5)
        await cancel_all(self.tasks)
        await self.channel.close()
        if self.tmpdir:
            self.tmpdir.cleanup()


async def _leave(stub: pb_grpc.CloudServerStub, edge_id: str) -> None:
    """Tell the cloud this node leaves (placement moves its devices away), waiting at most 2 s: a
    cloud that cannot hear it declares the node gone by its heartbeats anyway."""
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.TimeoutError):
        await stub.DeregisterEdge(pb.DeregisterEdgeRequest(edge_id=edge_id), timeout=2.0)


async def _heartbeat(stub: pb_grpc.CloudServerStub, registration: EdgeRegistration, running: RunningEdge, every_s: float) -> None:
    """Tell the cloud this node is alive (and how loaded) every ``every_s``. A cloud that no longer
    knows the node (its database was lost or the node was declared gone) gets a new registration."""
    core = running.core
    last = core.frames_seen
    while True:
        await asyncio.sleep(every_s)
        load = (core.frames_seen - last) / every_s
        last = core.frames_seen
        try:
            ack = await stub.Heartbeat(pb.EdgeHeartbeat(edge_id=running.edge_id, load=load, queue_depth=core.link.queue.qsize()),
                                       timeout=max(every_s, 1.0))
            core.forget(ack.revoked)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("[EdgeNode.Heartbeat] %s", e.code().name)
                continue
            try:
                reply = await stub.RegisterEdge(serde.edge_registration_to_pb(registration), timeout=max(every_s, 1.0))
            except grpc.aio.AioRpcError as e2:
                log.warning("[EdgeNode.Heartbeat] the cloud forgot this node; registering again failed (%s)", e2.code().name)
                continue
            log.warning("[EdgeNode.Heartbeat] the cloud forgot %s; registered again as %s", running.edge_id, reply.edge_id)
            running.edge_id = core.edge_id = reply.edge_id


async def _register(stub: pb_grpc.CloudServerStub, registration: EdgeRegistration):
    """Register with the cloud. While it cannot take the registration now (``UNAVAILABLE``: a replica
    starting, its registry's disk full) the node waits and retries with backoff, said once."""
    backoff_s, said = 0.5, False
    while True:
        try:
            return await stub.RegisterEdge(serde.edge_registration_to_pb(registration), timeout=30)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            if not said:
                log.warning("[EdgeNode] the cloud cannot register this node now (%s); retrying until it can", e.details())
                said = True
        await asyncio.sleep(backoff_s * random.uniform(0.5, 1.0))
        backoff_s = min(backoff_s * 2, 5.0)


def _browser_page(cfg: EdgeConfig, core: EdgeCore) -> Any:
    """The device page's HTTPS server, serving, or None when ``browser_port`` < 0."""
    if cfg.browser_port < 0:
        return None
    from ecd.web import WebServer
    from edge_node.browser import browser_app

    tls = (str(Path(cfg.tls_dir) / f"{cfg.tls_name}.pem"), str(Path(cfg.tls_dir) / f"{cfg.tls_name}.key"))
    page = WebServer(browser_app(core), cfg.host, cfg.browser_port, tls=tls, option_name="browser_port",
                     max_connections=cfg.max_browser_sessions, ws="wsproto")
    page.serve()
    log.info("[EdgeNode] device page on %s", page.url)
    return page


async def start_edge(cfg: EdgeConfig) -> RunningEdge:
    try:
        position = Position.parse(cfg.position, "position")  # a bad option fails before anything starts
    except RequestError as e:
        raise ConfigError(str(e)) from None
    if cfg.advertise:  # a bad one fails before anything listens
        advertised_endpoint(cfg.advertise, cfg.host, 1)
    if cfg.browser_port >= 0 and not cfg.tls_dir:  # a page's key and token must not cross the network in the clear
        raise ConfigError("browser_port: the device page is served over HTTPS with this node's certificate; give --tls-dir")
    if cfg.browser_port >= 0:
        from edge_node.browser import check_extra

        check_extra()
    for name in ("max_device_streams", "max_device_frames"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: expected at least 1, got {getattr(cfg, name)}")
    batching = BatchingConfig(cfg.batch_max_frames, cfg.batch_max_delay_ms / 1e3, cfg.batch_instances)
    batching.check()
    session_config = SessionConfig(intra_op_threads=cfg.intra_op_threads)
    session_config.check()
    quotas = DeviceQuotas(cfg.max_device_streams, cfg.max_device_frames)
    # the frames queued for the cloud go together: taking them never waits, so there is no linger budget here
    packing = Packing(linger_s=0.0, max_frames=cfg.message_frames, max_bytes=min(cfg.message_bytes, cfg.max_tensor_bytes)).check()
    transport = TransportConfig(max_message_bytes=cfg.max_message_bytes)
    # devices may send no more than the largest frame the edge would take: a bigger (or inflating) message
    # is refused by gRPC with RESOURCE_EXHAUSTED before it is buffered
    device_port = dataclasses.replace(transport, max_receive_bytes=frame_receive_cap(cfg.max_tensor_bytes))
    credentials = tls_.load(cfg.tls_dir, cfg.tls_name)
    target = client_target(cfg.cloud, credentials, cfg.insecure, "cloud")
    async with contextlib.AsyncExitStack() as undo:  # a start that fails, or is cancelled, leaves nothing behind
        channel = tls_.aio_channel(target, credentials, "cloud", grpc_options(transport))
        undo.push_async_callback(channel.close)
        stub = pb_grpc.CloudServerStub(channel)
        tmp = None if cfg.model_dir else tempfile.TemporaryDirectory(prefix="ecd-edge-")
        if tmp is not None:
            undo.callback(tmp.cleanup)
        model_dir = Path(cfg.model_dir or tmp.name)
        metrics = ServiceMetrics("edge")
        metrics_port = start_metrics(metrics.registry, cfg.host, cfg.metrics_port, *metrics_tls(cfg)) if cfg.metrics_port >= 0 else -1
        core = EdgeCore(GrpcCloudClient(stub), model_dir, cfg.max_queue, cfg.max_tensor_bytes, metrics, cfg.max_message_bytes,
                        cfg.max_batch, cfg.max_stream_frames, batching, quotas, session_config)
        server = await start_server(
            lambda s: pb_grpc.add_EdgeNodeServicer_to_server(EdgeServicer(core), s),
            [pb.DESCRIPTOR.services_by_name["EdgeNode"].full_name],
            cfg.host, cfg.port, device_port, tls=credentials, allow_plaintext=cfg.insecure, reflection_on=cfg.reflection,
            health_port=cfg.health_port,
        )
        undo.push_async_callback(server.stop, None)
        endpoint = advertised_endpoint(cfg.advertise, cfg.host, server.port, split_addresses(cfg.cloud, "cloud")[0])
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        except asyncio.TimeoutError:
            raise ConnectionError(f"cloud: no cloud server answers at {cfg.cloud} (--cloud)") from None
        registration = EdgeRegistration(endpoint, cfg.capacity, position, cfg.activation_cost)
        reply = await _register(stub, registration)
        undo.push_async_callback(_leave, stub, reply.edge_id)  # a node without the page it was asked for must not stay registered
        core.edge_id = reply.edge_id
        running = RunningEdge(server, core, reply.edge_id, endpoint, metrics, metrics_port, channel, tmpdir=tmp)
        running.browser = _browser_page(cfg, core)
        running.tasks.append(asyncio.create_task(run_cloud_link(core.link, stub, metrics, packing)))
        running.tasks.append(asyncio.create_task(_heartbeat(stub, registration, running, cfg.heartbeat_s)))
        undo.pop_all()  # started: from here its stop undoes it
    log.info("[EdgeNode] %s serving on %s (pid %d), cloud %s", reply.edge_id, endpoint, os.getpid(), cfg.cloud)
    return running
