"""The cloud server's gRPC face: the CloudServer servicer (devices' and edge nodes' calls) over the
parts of :class:`~cloud_server.core.CloudCore`, and ``start_cloud``, which also serves the operator's
Scheduler service (:mod:`cloud_server.scheduler_service`) and the operator view. Messages are
converted by :mod:`ecd.transport.serde`; errors by the catalog."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2

from cloud_server.config import CloudConfig, check_frame_limit, check_options
from cloud_server.core import CloudCore
from cloud_server.enrolment import enrol
from cloud_server.served import load_models
from cloud_server.registry import Registry, StorageState
from cloud_server.scheduler_service import SchedulerServicer, operator_check, require_operator
from ecd.transport import tls as tls_
from ecd.batching import BatchingConfig
from ecd.limits import RateLimiter, RateLimits, check_message_frames, frame_receive_cap
from ecd.metrics import SchedulerMetrics, ServiceMetrics, metrics_tls, start_metrics
from ecd.transport import browser_wire, serde
from ecd.transport.auth import caller, certificate_name
from ecd.transport.catalog import to_status
from ecd.transport.rpc import RunningServer, TransportConfig, call_core, cancel_all, peer_host, start_server
from ecd.errors import ConfigError, EcdError
from ecd.types import Result
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

log = logging.getLogger("ecd.cloud")

REGISTRY_HEALTH = "ecd.registry"  # gRPC health's name for the registry's write path


class Changes:
    """Wakes assignment watchers when the registry's assignments may have changed. ``notify`` may be
    called from any thread (placement runs in a worker thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.loop.call_soon_threadsafe(self._bump)

    def _bump(self) -> None:
        old, self.event = self.event, asyncio.Event()
        old.set()


class ControlMonitor:
    """The control plane's periodic checks, every ``every_s`` (and at once when an edge registers or
    deregisters), in a worker thread: this replica's claim to lead the schedulers is renewed; the
    leader runs a new placement when one is due (an edge node joined, was lost or left; devices
    joined or left, debounced), the other replicas take up the leader's latest placement and tell
    their watchers; while the registry's disk is full, a probe write looks for space coming back.
    The registry's write path is then published (``ecd_registry_writable``, and gRPC health's
    ``ecd.registry`` service, while the overall health stays SERVING: frames still flow)."""

    def __init__(self, core: CloudCore, every_s: float):
        self.core = core
        self.every_s = every_s
        self.kicked = asyncio.Event()
        self.health: Any = None  # the server's HealthServicer, once it serves

    def kick(self) -> None:
        self.kicked.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self.kicked.wait(), timeout=self.every_s)
            except asyncio.TimeoutError:
                pass
            self.kicked.clear()
            try:
                await loop.run_in_executor(None, self.check)
            except Exception as e:  # noqa: BLE001 — a registry out of reach: the next check tries again
                log.warning("[CloudServer.Monitor] check failed: %s", e)
            await self.publish_storage()

    def check(self) -> None:
        """One check (a few registry reads and writes; a placement takes seconds)."""
        if self.core.registry.storage.state is StorageState.FULL:
            self.core.registry.probe_write()
        if not self.core.leader.renew():
            if self.core.placement.follow():
                self.core.on_change()  # the leader moved devices: this replica's watchers hear of it
            return
        reason = self.core.placement.due()
        if reason is None:
            return
        try:
            self.core.placement.place(trigger=reason)
        except Exception as e:  # noqa: BLE001 — a failed run is logged and counted; the next check retries
            log.warning("[CloudServer.Placement] %s: placement failed: %s", reason, e)

    async def publish_storage(self) -> None:
        writable = self.core.registry.storage.state is StorageState.WRITABLE
        if self.core.metrics is not None:
            self.core.metrics.registry_writable.set(1 if writable else 0)
        if self.health is not None:
            await self.health.set(REGISTRY_HEALTH, health_pb2.HealthCheckResponse.SERVING if writable
                                  else health_pb2.HealthCheckResponse.NOT_SERVING)


def _caller_key(context: grpc.aio.ServicerContext) -> str:
    """Whom a rate limit counts: the certificate's holder under TLS, else the peer's host."""
    who = caller()
    return str(who) if who.role else peer_host(context.peer())


class CloudServicer(pb_grpc.CloudServerServicer):
    def __init__(self, core: CloudCore, metrics: ServiceMetrics, workers: int, changes: Changes, monitor: ControlMonitor,
                 limits: RateLimits, operator_check: Callable[[str], None]):
        self.core = core
        self.operator_check = operator_check  # AddHead is an operator's call (operator_peers on a plaintext cloud)
        self.metrics = metrics
        self.workers = workers
        self.changes = changes
        self.monitor = monitor
        self.limits = limits
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloud-infer")
        self.readers: set[asyncio.Task] = set()  # one per open data-plane stream
        self.streams = 0

    async def drain(self, timeout_s: float) -> int:
        """Stop reading every edge's stream, answer what was read, end the streams (the edges send
        what is left to the next cloud); waits up to ``timeout_s``. Returns the streams still open."""
        for reader in list(self.readers):
            reader.cancel()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.streams and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return self.streams

    async def Stream(self, request_iterator: AsyncIterator[pb.Frame], context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Result]:
        async for results in self._serve(request_iterator, lambda msg: (msg,), context):
            for result in results:
                yield serde.result_to_pb(result)

    async def StreamBatches(self, request_iterator: AsyncIterator[pb.FrameBatch], context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ResultBatch]:
        async for results in self._serve(request_iterator, lambda msg: msg.frames, context):
            yield pb.ResultBatch(results=[serde.result_to_pb(r) for r in results])

    async def _serve(self, request_iterator: AsyncIterator[Any], frames_of: Callable[[Any], Sequence[pb.Frame]],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[list[Result]]:
        """An edge's stream: each message's frames answered together by a worker, messages in order;
        a message over the limits ends the stream with its status, after what was read before it."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[Awaitable[list[Result]] | EcdError | None] = asyncio.Queue(maxsize=self.workers)
        relayed_by = certificate_name("edge")  # under TLS: the edge certificate that relays

        def process(msgs: Sequence[pb.Frame]) -> list[Result]:
            return self.core.process_many([serde.frame_from_pb(m) for m in msgs], relayed_by)

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    frames = frames_of(msg)
                    check_message_frames(len(frames))  # before any frame is built
                    await pending.put(loop.run_in_executor(self.pool, process, frames))
            except EcdError as e:
                await pending.put(e)
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        self.readers.add(reader)
        self.streams += 1
        try:
            while (job := await pending.get()) is not None:
                if isinstance(job, EcdError):
                    await context.abort(*to_status(job))
                results = await job
                for result in results:
                    self.metrics.frame(result.ok, None if result.ok else result.error.status)
                    if result.ok:
                        self.metrics.stage_seconds.labels("cloud", "cloud_compute").observe(result.cloud_compute_s)
                        self.metrics.hop_bytes.labels("cloud", "edge_to_cloud").inc(result.edge_to_cloud_bytes)
                yield results
        finally:
            reader.cancel()
            self.readers.discard(reader)
            self.streams -= 1

    async def RegisterDevice(self, request, context):
        await call_core(context, self.limits.registrations.take, _caller_key(context))
        # parsing a profile and deciding the split take a while: off the event loop
        holder = certificate_name("device") or ""
        a = await call_core(context, lambda r: self.core.devices.register(serde.registration_from_pb(r), holder), request, in_thread=True)
        return serde.assignment_to_pb(a)

    async def UpdatePreferences(self, request, context):  # an edge relays a browser device's (edge_node.browser)
        holder, edge = certificate_name("device"), certificate_name("edge")
        a = await call_core(context, lambda r: self.core.devices.update_preferences(serde.update_from_pb(r), holder, edge), request)
        return serde.assignment_to_pb(a)

    async def GetAssignment(self, request, context):
        who = caller()
        # a device asking: its own certificate; an edge node asking about a device's frames: the one it streams with
        holder = (request.holder or None) if who.role == "edge" else certificate_name("device")
        a = await call_core(context, self.core.devices.get_assignment, request.device_id, request.token,
                            who.name if who.role == "edge" else None, holder)
        return serde.assignment_to_pb(a)

    async def EnrolDevice(self, request, context):  # a browser device's, relayed by its edge node (ecd.transport.auth)
        await call_core(context, self.limits.registrations.take, _caller_key(context))
        a = await call_core(context, lambda r: enrol(self.core.enrolment, self.core.devices, browser_wire.enrolment_from_pb(r)), request, in_thread=True)
        return serde.assignment_to_pb(a)

    async def RegisterEdge(self, request, context):
        await call_core(context, self.limits.registrations.take, _caller_key(context))
        edge_id = await call_core(context, lambda r: self.core.edges.register(serde.edge_registration_from_pb(r), certificate_name("edge") or ""), request)
        self.monitor.kick()
        return pb.RegisterEdgeResponse(edge_id=edge_id)

    async def DeregisterEdge(self, request, context):
        await call_core(context, self.core.edges.deregister, request.edge_id, certificate_name("edge") or "")
        self.monitor.kick()
        return pb.HeartbeatAck()

    async def ReportLocation(self, request, context):
        await call_core(context, self.limits.locations.take, request.device_id)
        holder = certificate_name("device")
        a = await call_core(context, lambda r: self.core.devices.report_location(serde.location_from_pb(r), holder), request)
        return serde.assignment_to_pb(a)

    async def WatchAssignment(self, request, context):
        """The device's assignment now, then each time it changes (a new placement included, so a
        device knows which placement it follows)."""
        await call_core(context, self.limits.watches.take, _caller_key(context))
        holder = certificate_name("device")
        last = None
        while True:
            event = self.changes.event
            a = await call_core(context, self.core.devices.get_assignment, request.device_id, request.token, None, holder)
            key = (a.edge_id, a.edge_endpoint, a.split, a.preferences, a.model_version, a.placement_version, tuple(a.tasks))
            if key != last:
                last = key
                yield serde.assignment_to_pb(a)
            await event.wait()

    async def Heartbeat(self, request, context):
        revoked = await call_core(context, lambda r: self.core.edges.heartbeat(serde.heartbeat_from_pb(r), certificate_name("edge") or ""), request)
        return pb.HeartbeatAck(revoked=revoked)

    async def FetchPartition(self, request, context):
        chunks = await call_core(context, lambda r: list(self.core.models.partition_chunks(serde.partition_request_from_pb(r))), request,
                              in_thread=True)
        for chunk in chunks:
            yield serde.chunk_to_pb(chunk)

    async def AddHead(self, request, context):
        await require_operator(context, self.operator_check)  # operator-only, on a plaintext cloud too
        heads = await call_core(context, lambda r: self.core.models.add_head(serde.head_spec_from_pb(r)), request, in_thread=True)
        return pb.AddHeadResponse(heads=heads)

    async def ListHeads(self, request, context):
        heads = await call_core(context, self.core.models.list_heads, request.model_id)
        return pb.ListHeadsResponse(heads=[serde.head_spec_to_pb(h) for h in heads])


@dataclass
class RunningCloud:
    server: RunningServer
    registry: Registry
    core: CloudCore
    metrics: ServiceMetrics
    metrics_port: int
    servicer: CloudServicer = field(repr=False)
    tasks: list[asyncio.Task] = field(default_factory=list, repr=False)
    panel: Any = field(default=None, repr=False)  # ecd.web.WebServer serving the operator view, or None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def panel_port(self) -> int:
        """The operator view's bound HTTP port; -1 when it is off."""
        return self.panel.port if self.panel is not None else -1

    async def stop(self, grace: float | None = None) -> None:
        """Drain the edges' streams (every frame read is answered; the rest the edges resend to the
        next cloud), then stop serving."""
        if self.panel is not None:
            await self.panel.aclose()
        await cancel_all(self.tasks)
        await asyncio.get_running_loop().run_in_executor(None, self.core.leader.release)  # another replica leads at once
        await self.servicer.drain(grace if grace is not None else 5.0)
        await self.server.stop(min(grace, 0.5) if grace is not None else 0.5)
        self.servicer.pool.shutdown(wait=False, cancel_futures=True)
        self.registry.close()


async def start_cloud(cfg: CloudConfig) -> RunningCloud:
    check_options(cfg)  # every option that can be wrong, before anything starts
    panel_token = _panel_token(cfg)
    models = load_models(list(cfg.models))
    check_frame_limit(models, cfg.max_tensor_bytes)
    registry = Registry(cfg.db)
    metrics = ServiceMetrics("cloud")
    core = CloudCore(
        registry,
        models,
        edge_boundary=None if cfg.edge_boundary < 0 else cfg.edge_boundary,
        max_tensor_bytes=cfg.max_tensor_bytes,
        max_batch=cfg.max_batch,
        device_lease_s=cfg.device_lease_s,
        edge_timeout_s=cfg.edge_timeout_s,
        placement_method=cfg.placement_method,
        placement_activation_cost=cfg.placement_activation_cost,
        batching=BatchingConfig(cfg.batch_max_frames, cfg.batch_max_delay_ms / 1e3),
        metrics=SchedulerMetrics(metrics.registry),
        leader_lease_s=cfg.leader_lease_s,
        placement_debounce_s=cfg.placement_debounce_s,
    )
    core.devices.per_certificate = cfg.devices_per_certificate
    core.enrolment.ttl_s = cfg.enrol_code_ttl_s
    # before the gRPC server: a metrics port in use is refused before anything is serving
    metrics_port = start_metrics(metrics.registry, cfg.host, cfg.metrics_port, *metrics_tls(cfg)) if cfg.metrics_port >= 0 else -1
    changes = Changes(asyncio.get_running_loop())
    core.on_change = changes.notify
    monitor = ControlMonitor(core, cfg.placement_check_s)
    limits = RateLimits(registrations=RateLimiter(cfg.registrations_per_s, 5 * cfg.registrations_per_s, "registrations"),
                        locations=RateLimiter(cfg.locations_per_s, 10 * cfg.locations_per_s, "ReportLocation"))
    check = operator_check(tuple(cfg.operator_peers))
    servicer = CloudServicer(core, metrics, cfg.workers, changes, monitor, limits, check)
    # what edges and devices send is at most a frame the cloud would take (ecd.limits.frame_receive_cap)
    transport = TransportConfig(max_message_bytes=cfg.max_message_bytes, max_receive_bytes=frame_receive_cap(cfg.max_tensor_bytes))

    def register(s: grpc.aio.Server) -> None:
        pb_grpc.add_CloudServerServicer_to_server(servicer, s)
        pb_grpc.add_SchedulerServicer_to_server(SchedulerServicer(core, check), s)

    panel = _panel(cfg, core, metrics_port, check, panel_token)
    try:
        server = await start_server(
            register,
            [pb.DESCRIPTOR.services_by_name["CloudServer"].full_name, pb.DESCRIPTOR.services_by_name["Scheduler"].full_name],
            cfg.host, cfg.port, transport, tls=tls_.load(cfg.tls_dir, cfg.tls_name), allow_plaintext=cfg.insecure,
            reflection_on=cfg.reflection, health_port=cfg.health_port,
        )
    except BaseException:
        if panel is not None:
            panel.sock.close()
        raise
    log.info("[CloudServer] serving %s on %s:%d (metrics %d, db %s)", ", ".join(core.models), cfg.host, server.port, metrics_port, registry.path)
    running = RunningCloud(server, registry, core, metrics, metrics_port, servicer, panel=panel)
    monitor.health = server.health
    await monitor.publish_storage()
    running.tasks.append(asyncio.create_task(monitor.run()))
    if panel is not None:
        panel.serve()
        log.info("[CloudServer] operator view on %s (%s)", panel.url, "actions unlocked by the operator token"
                 if cfg.panel_token_file else "read-only")
    return running


def _panel_token(cfg: CloudConfig) -> str:
    """The operator view's options checked before anything starts; the operator token ("" = a
    read-only view). The view is plain HTTP: loopback only unless plaintext is forced."""
    if cfg.panel_port < 0:
        return ""
    if not cfg.insecure and not tls_.is_loopback(cfg.panel_host):
        raise ConfigError(f"panel_host: {cfg.panel_host} is not a loopback address and the operator view is plain HTTP; "
                          "keep it on loopback (reach it over an SSH tunnel) or force it with --insecure")
    from cloud_server.panel import read_token

    return read_token(cfg.panel_token_file)


def _panel(cfg: CloudConfig, core: CloudCore, metrics_port: int, check: Callable[[str], None], token: str) -> Any:
    """The operator view's web server, bound (not yet serving), or None when ``panel_port`` < 0.
    Its reads pass the operator calls' own peer check (``operator_peers``)."""
    if cfg.panel_port < 0:
        return None
    from cloud_server.panel import OperatorView, operator_app
    from ecd.web import WebServer

    def check_host(host: str) -> None:
        check(f"ipv6:[{host}]:0" if ":" in host else f"ipv4:{host}:0" if host != "unix" else "unix:")

    app = operator_app(OperatorView(core, metrics_port, enrol_page_url=cfg.enrol_page_url), check_host, token, hosts=(cfg.panel_host,))
    return WebServer(app, cfg.panel_host, cfg.panel_port)
