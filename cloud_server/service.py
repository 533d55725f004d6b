"""The cloud server's gRPC face: a thin servicer over :class:`~cloud_server.core.CloudCore`, and
``start_cloud``. Messages are converted by :mod:`ecd.transport.serde`; errors by the catalog."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import grpc

from cloud_server.core import CloudCore, load_models
from cloud_server.registry import Registry
from ecd.config import MiB, option
from ecd.metrics import ServiceMetrics, start_metrics
from ecd.transport import serde
from ecd.transport.catalog import to_status
from ecd.transport.rpc import RunningServer, TransportConfig, start_server
from ecd.types import Result
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

log = logging.getLogger("ecd.cloud")


@dataclass(frozen=True)
class CloudConfig:
    host: str = option("127.0.0.1", "address to listen on")
    port: int = option(0, "gRPC port (0 = any free port)")
    metrics_port: int = option(0, "Prometheus port (0 = any free port, -1 = off)")
    db: str = option("ecd-cloud.sqlite3", "SQLite file of the registry (devices, edges, heads)")
    models: tuple = option(("digits_cnn",), "models to serve: zoo names or model folders")
    edge_boundary: int = option(-1, "blocks the edge runs up to by default (-1 = all but the last block)")
    max_tensor_bytes: int = option(16 * MiB, "largest tensor accepted in a frame, bytes")
    edge_timeout_s: float = option(15.0, "an edge node silent this long gets no new devices, seconds")
    workers: int = option(4, "frames of one edge stream processed concurrently (results stay in order)")
    max_message_bytes: int = option(64 * MiB, "gRPC max message size, bytes")
    grace_s: float = option(5.0, "seconds in-flight calls get on SIGTERM")


class CloudServicer(pb_grpc.CloudServerServicer):
    def __init__(self, core: CloudCore, metrics: ServiceMetrics, workers: int):
        self.core = core
        self.metrics = metrics
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloud-infer")

    async def _unary(self, context: grpc.aio.ServicerContext, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``; any error aborts the call with the catalog's status and message."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 — the catalog classifies
            code, message = to_status(e)
            await context.abort(code, message)

    async def Stream(self, request_iterator: AsyncIterator[pb.Frame], context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Result]:
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[Awaitable[Result] | None] = asyncio.Queue(maxsize=self.workers)

        def process(msg: pb.Frame) -> Result:
            return self.core.process(serde.frame_from_pb(msg))

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    await pending.put(loop.run_in_executor(self.pool, process, msg))
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while (job := await pending.get()) is not None:
                result = await job
                self.metrics.frame(result.ok, None if result.ok else result.error.status)
                if result.ok:
                    self.metrics.stage_seconds.labels("cloud", "cloud_compute").observe(result.cloud_compute_s)
                    self.metrics.hop_bytes.labels("cloud", "edge_to_cloud").inc(result.edge_to_cloud_bytes)
                yield serde.result_to_pb(result)
        finally:
            reader.cancel()

    async def RegisterDevice(self, request, context):
        a = await self._unary(context, lambda r: self.core.register_device(serde.registration_from_pb(r)), request)
        return serde.assignment_to_pb(a)

    async def UpdatePreferences(self, request, context):
        a = await self._unary(context, lambda r: self.core.update_preferences(serde.update_from_pb(r)), request)
        return serde.assignment_to_pb(a)

    async def GetAssignment(self, request, context):
        a = await self._unary(context, self.core.get_assignment, request.device_id, request.token)
        return serde.assignment_to_pb(a)

    async def RegisterEdge(self, request, context):
        edge_id = await self._unary(context, lambda r: self.core.register_edge(serde.edge_registration_from_pb(r)), request)
        return pb.RegisterEdgeResponse(edge_id=edge_id)

    async def Heartbeat(self, request, context):
        await self._unary(context, lambda r: self.core.heartbeat(serde.heartbeat_from_pb(r)), request)
        return pb.HeartbeatAck()

    async def FetchPartition(self, request, context):
        chunks = await self._unary(context, lambda r: list(self.core.partition_chunks(serde.partition_request_from_pb(r))), request)
        for chunk in chunks:
            yield serde.chunk_to_pb(chunk)

    async def AddHead(self, request, context):
        heads = await self._unary(context, lambda r: self.core.add_head(serde.head_spec_from_pb(r)), request)
        return pb.AddHeadResponse(heads=heads)

    async def ListHeads(self, request, context):
        heads = await self._unary(context, self.core.list_heads, request.model_id)
        return pb.ListHeadsResponse(heads=[serde.head_spec_to_pb(h) for h in heads])


@dataclass
class RunningCloud:
    server: RunningServer
    registry: Registry
    core: CloudCore
    metrics: ServiceMetrics
    metrics_port: int
    servicer: CloudServicer = field(repr=False)

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)
        self.servicer.pool.shutdown(wait=False, cancel_futures=True)
        self.registry.close()


async def start_cloud(cfg: CloudConfig) -> RunningCloud:
    registry = Registry(cfg.db)
    core = CloudCore(
        registry,
        load_models(list(cfg.models)),
        edge_boundary=None if cfg.edge_boundary < 0 else cfg.edge_boundary,
        max_tensor_bytes=cfg.max_tensor_bytes,
        edge_timeout_s=cfg.edge_timeout_s,
    )
    metrics = ServiceMetrics("cloud")
    servicer = CloudServicer(core, metrics, cfg.workers)
    transport = TransportConfig(max_message_bytes=cfg.max_message_bytes, grace_s=cfg.grace_s)
    server = await start_server(
        lambda s: pb_grpc.add_CloudServerServicer_to_server(servicer, s),
        [pb.DESCRIPTOR.services_by_name["CloudServer"].full_name],
        cfg.host, cfg.port, transport,
    )
    metrics_port = start_metrics(metrics.registry, cfg.host, cfg.metrics_port) if cfg.metrics_port >= 0 else -1
    log.info("[CloudServer] serving %s on %s:%d (metrics %d, db %s)", ", ".join(core.models), cfg.host, server.port, metrics_port, cfg.db)
    return RunningCloud(server, registry, core, metrics, metrics_port, servicer)
