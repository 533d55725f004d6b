"""The one place that converts between the wire's protobuf messages (``ecd.v1``) and the runtime's
own records (:mod:`ecd.types`).

Servicers and clients call ``*_from_pb`` on what arrives and ``*_to_pb`` on what leaves; the cores
never see a protobuf message. Every pair round-trips (tests/ecd/transport/test_serde.py).

An encoding number the runtime does not know is kept as that number, so the core's check
(:func:`ecd.codec.decode`, the cloud's registration) refuses it with a message naming the field.
"""

from __future__ import annotations

import grpc

from ecd.split import Preferences
from ecd.scheduler_types import (
    CampaignReport,
    CampaignSpec,
    DevicePlacement,
    DeviceQuality,
    DeviceTasks,
    EdgePlacement,
    Grid,
    PlacementReport,
    SiteRequest,
    SiteScore,
    SiteSelection,
)
from ecd.types import (
    Assignment,
    DeviceRegistration,
    EdgeHeartbeat,
    EdgeRegistration,
    Encoding,
    FileChunk,
    Frame,
    FrameError,
    HeadOutput,
    HeadSpec,
    LocationReport,
    PartitionRequest,
    Position,
    PreferencesUpdate,
    Result,
    Split,
    Task,
    Tensor,
)
from ecd.v1 import ecd_pb2 as pb

ENCODING_TO_PB = {Encoding.FLOAT32: pb.FLOAT32, Encoding.FLOAT16: pb.FLOAT16, Encoding.INT8: pb.INT8_AFFINE,
                  Encoding.UINT8: pb.UINT8_IMAGE}
ENCODING_FROM_PB = {v: k for k, v in ENCODING_TO_PB.items()}
HEAD_INPUT_TO_PB = {"logits": pb.HeadSpec.LOGITS, "probabilities": pb.HeadSpec.PROBABILITIES}
HEAD_INPUT_FROM_PB = {v: k for k, v in HEAD_INPUT_TO_PB.items()}
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def encoding_from_pb(value: int) -> Encoding | int:
    return ENCODING_FROM_PB.get(value, value)


def encoding_to_pb(encoding: Encoding | int) -> int:
    return ENCODING_TO_PB[encoding] if isinstance(encoding, Encoding) else int(encoding)


# --- data plane --------------------------------------------------------------------------------


def task_to_pb(t: Task | None) -> pb.Task | None:
    return None if t is None else pb.Task(campaign_id=t.campaign_id, task_id=t.task_id, cell=t.cell, slot=t.slot)


def task_from_pb(msg: pb.Task) -> Task:
    return Task(msg.campaign_id, msg.task_id, msg.cell, msg.slot)


def tensor_to_pb(t: Tensor) -> pb.Tensor:
    return pb.Tensor(encoding=encoding_to_pb(t.encoding), shape=list(t.shape), data=t.data,
                     scale=t.scale, zero_point=t.zero_point)


def tensor_from_pb(msg: pb.Tensor) -> Tensor:
    return Tensor(encoding_from_pb(msg.encoding), tuple(msg.shape), msg.data, msg.scale, msg.zero_point)


def frame_to_pb(f: Frame) -> pb.Frame:
    return pb.Frame(
        device_id=f.device_id, frame_id=f.frame_id, token=f.token, model_id=f.model_id,
        model_version=f.model_version, split_device=f.split.device, split_edge=f.split.edge,
        tensor=tensor_to_pb(f.tensor), captured_unix_ns=f.captured_unix_ns,
        device_compute_s=f.device_compute_s, edge_compute_s=f.edge_compute_s, uplink_bytes=f.uplink_bytes,
        task=task_to_pb(f.task), reading=f.reading, protocol_revision=f.protocol_revision,
    )


def compact_frame_to_pb(full: pb.Frame) -> pb.Frame:
    """A later frame of a device stream (revision 2): only what changes from frame to frame; the
    rest is bound by the stream's first frame (:class:`~ecd.types.StreamHeader`)."""
    msg = pb.Frame(frame_id=full.frame_id, captured_unix_ns=full.captured_unix_ns, device_compute_s=full.device_compute_s,
                   reading=full.reading)
    msg.tensor.CopyFrom(full.tensor)
    msg.tensor.encoding = pb.ENCODING_UNSPECIFIED
    if full.HasField("task"):
        msg.task.CopyFrom(full.task)
    return msg


def frame_from_pb(msg: pb.Frame) -> Frame:
    """The frame, with ``wire_bytes`` = its serialized size as it arrived."""
    return Frame(
        device_id=msg.device_id, frame_id=msg.frame_id, token=msg.token, model_id=msg.model_id,
        model_version=msg.model_version, split=Split(msg.split_device, msg.split_edge),
        tensor=tensor_from_pb(msg.tensor), captured_unix_ns=msg.captured_unix_ns,
        device_compute_s=msg.device_compute_s, edge_compute_s=msg.edge_compute_s,
        uplink_bytes=msg.uplink_bytes, wire_bytes=msg.ByteSize(),
        task=task_from_pb(msg.task) if msg.HasField("task") else None, reading=msg.reading,
        protocol_revision=msg.protocol_revision,
    )


def status_code(name: str) -> grpc.StatusCode:
    """The gRPC code for a status name (INTERNAL for a name gRPC does not know)."""
    return getattr(grpc.StatusCode, name, grpc.StatusCode.INTERNAL)


def status_name(number: int) -> str:
    return _STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN).name


def result_to_pb(r: Result) -> pb.Result:
    msg = pb.Result(
        device_id=r.device_id, frame_id=r.frame_id, split_device=r.split.device, split_edge=r.split.edge,
        heads=[pb.HeadOutput(head=h.head, label=h.label, index=h.index, scores=h.scores) for h in r.heads],
        device_compute_s=r.device_compute_s, edge_compute_s=r.edge_compute_s, cloud_compute_s=r.cloud_compute_s,
        uplink_bytes=r.uplink_bytes, edge_to_cloud_bytes=r.edge_to_cloud_bytes, output=r.output, edge_id=r.edge_id,
    )
    if r.error is not None:
        msg.error.code = status_code(r.error.status).value[0]
        msg.error.message = r.error.message
    return msg


def result_from_pb(msg: pb.Result) -> Result:
    return Result(
        device_id=msg.device_id, frame_id=msg.frame_id, split=Split(msg.split_device, msg.split_edge),
        heads=[HeadOutput(h.head, h.label, h.index, list(h.scores)) for h in msg.heads],
        error=FrameError(status_name(msg.error.code), msg.error.message) if msg.HasField("error") else None,
        device_compute_s=msg.device_compute_s, edge_compute_s=msg.edge_compute_s,
        cloud_compute_s=msg.cloud_compute_s, uplink_bytes=msg.uplink_bytes,
        edge_to_cloud_bytes=msg.edge_to_cloud_bytes, output=list(msg.output), edge_id=msg.edge_id,
    )


# --- control plane -----------------------------------------------------------------------------


def position_to_pb(p: Position | None) -> pb.Position | None:
    return None if p is None else pb.Position(lat=p.lat, lon=p.lon)


def position_from_pb(msg, has: bool) -> Position | None:
    """The position, or None where the message left the field unset."""
    return Position(msg.lat, msg.lon) if has else None


def preferences_to_pb(p: Preferences) -> pb.Preferences:
    return pb.Preferences(w_energy=p.w_energy, w_privacy=p.w_privacy, min_split=p.min_split)


def preferences_from_pb(msg: pb.Preferences) -> Preferences:
    """Validated (and normalised) by :class:`~ecd.split.Preferences`; an error names the field."""
    return Preferences(msg.w_energy, msg.w_privacy, int(msg.min_split))


def assignment_to_pb(a: Assignment) -> pb.Assignment:
    return pb.Assignment(
        device_id=a.device_id, token=a.token, edge_endpoint=a.edge_endpoint, model_id=a.model_id,
        model_version=a.model_version, split_device=a.split.device, split_edge=a.split.edge,
        recommended_split=a.recommended_split, preferences=preferences_to_pb(a.preferences),
        edge_id=a.edge_id, placement_version=a.placement_version, tasks=[task_to_pb(t) for t in a.tasks],
        encoding=encoding_to_pb(a.encoding),
    )


def assignment_from_pb(msg: pb.Assignment) -> Assignment:
    return Assignment(
        device_id=msg.device_id, token=msg.token, edge_endpoint=msg.edge_endpoint, model_id=msg.model_id,
        model_version=msg.model_version, split=Split(msg.split_device, msg.split_edge),
        recommended_split=msg.recommended_split, preferences=preferences_from_pb(msg.preferences),
        edge_id=msg.edge_id, placement_version=msg.placement_version, tasks=[task_from_pb(t) for t in msg.tasks],
        encoding=encoding_from_pb(msg.encoding),
    )


def registration_to_pb(r: DeviceRegistration) -> pb.RegisterDeviceRequest:
    return pb.RegisterDeviceRequest(
        device_name=r.device_name, profile=r.profile, radio=r.radio, preferences=preferences_to_pb(r.preferences),
        model_id=r.model_id, split_device=r.split_device or 0, encoding=encoding_to_pb(r.encoding),
        position=position_to_pb(r.position), sensors=r.sensors,
    )


def registration_from_pb(msg: pb.RegisterDeviceRequest) -> DeviceRegistration:
    return DeviceRegistration(
        device_name=msg.device_name, profile=msg.profile, radio=msg.radio,
        preferences=preferences_from_pb(msg.preferences), model_id=msg.model_id,
        split_device=msg.split_device, encoding=encoding_from_pb(msg.encoding),
        position=position_from_pb(msg.position, msg.HasField("position")), sensors=dict(msg.sensors),
    )


def update_to_pb(u: PreferencesUpdate) -> pb.UpdatePreferencesRequest:
    return pb.UpdatePreferencesRequest(device_id=u.device_id, token=u.token,
                                       preferences=preferences_to_pb(u.preferences), split_device=u.split_device)


def update_from_pb(msg: pb.UpdatePreferencesRequest) -> PreferencesUpdate:
    return PreferencesUpdate(msg.device_id, msg.token, preferences_from_pb(msg.preferences), msg.split_device)


def edge_registration_to_pb(r: EdgeRegistration) -> pb.RegisterEdgeRequest:
    return pb.RegisterEdgeRequest(endpoint=r.endpoint, capacity=r.capacity, position=position_to_pb(r.position),
                                  activation_cost=r.activation_cost)


def edge_registration_from_pb(msg: pb.RegisterEdgeRequest) -> EdgeRegistration:
    return EdgeRegistration(msg.endpoint, msg.capacity, position_from_pb(msg.position, msg.HasField("position")),
                            msg.activation_cost)


def location_to_pb(r: LocationReport) -> pb.LocationReport:
    return pb.LocationReport(device_id=r.device_id, token=r.token, position=position_to_pb(r.position), unix_ms=r.unix_ms)


def location_from_pb(msg: pb.LocationReport) -> LocationReport:
    return LocationReport(msg.device_id, msg.token, position_from_pb(msg.position, msg.HasField("position")), msg.unix_ms)


def heartbeat_to_pb(h: EdgeHeartbeat) -> pb.EdgeHeartbeat:
    return pb.EdgeHeartbeat(edge_id=h.edge_id, load=h.load, queue_depth=h.queue_depth)


def heartbeat_from_pb(msg: pb.EdgeHeartbeat) -> EdgeHeartbeat:
    return EdgeHeartbeat(msg.edge_id, msg.load, msg.queue_depth)


def partition_request_to_pb(r: PartitionRequest) -> pb.FetchPartitionRequest:
    return pb.FetchPartitionRequest(model_id=r.model_id, model_version=r.model_version, start=r.start,
                                    stop=r.stop, max_chunk_bytes=r.max_chunk_bytes)


def partition_request_from_pb(msg: pb.FetchPartitionRequest) -> PartitionRequest:
    return PartitionRequest(msg.model_id, msg.model_version, msg.start, msg.stop, msg.max_chunk_bytes)


def chunk_to_pb(c: FileChunk) -> pb.FileChunk:
    return pb.FileChunk(file=c.file, sha256=c.sha256, size=c.size, offset=c.offset, data=c.data)


def chunk_from_pb(msg: pb.FileChunk) -> FileChunk:
    return FileChunk(msg.file, msg.sha256, msg.size, msg.offset, msg.data)


def head_spec_to_pb(h: HeadSpec) -> pb.HeadSpec:
    return pb.HeadSpec(model_id=h.model_id, name=h.name, labels=h.labels, weight=h.weight, bias=h.bias,
                       input=HEAD_INPUT_TO_PB.get(h.input, pb.HeadSpec.INPUT_UNSPECIFIED))


def head_spec_from_pb(msg: pb.HeadSpec) -> HeadSpec:
    return HeadSpec(msg.model_id, msg.name, list(msg.labels), list(msg.weight), list(msg.bias),
                    HEAD_INPUT_FROM_PB.get(msg.input, "unspecified"))


def placement_report_to_pb(r: PlacementReport) -> pb.PlacementReport:
    return pb.PlacementReport(
        version=r.version, method=r.method, trigger=r.trigger, total_cost=r.total_cost,
        activation_cost=r.activation_cost, service_cost=r.service_cost, seconds=r.seconds,
        computed_unix_ms=r.computed_unix_ms,
        edges=[pb.EdgePlacement(edge_id=e.edge_id, endpoint=e.endpoint, position=position_to_pb(e.position),
                                active=e.active, alive=e.alive, devices=e.devices, activation_cost=e.activation_cost)
               for e in r.edges],
        devices=[pb.DevicePlacement(device_id=d.device_id, device_name=d.device_name, edge_id=d.edge_id,
                                    position=position_to_pb(d.position), service_cost=d.service_cost)
                 for d in r.devices],
        instance_json=r.instance_json,
    )


def placement_report_from_pb(msg: pb.PlacementReport) -> PlacementReport:
    return PlacementReport(
        version=msg.version, method=msg.method, trigger=msg.trigger, total_cost=msg.total_cost,
        activation_cost=msg.activation_cost, service_cost=msg.service_cost, seconds=msg.seconds,
        computed_unix_ms=msg.computed_unix_ms,
        edges=[EdgePlacement(e.edge_id, e.endpoint, position_from_pb(e.position, e.HasField("position")), e.active,
                             e.alive, e.devices, e.activation_cost) for e in msg.edges],
        devices=[DevicePlacement(d.device_id, d.device_name, d.edge_id,
                                 position_from_pb(d.position, d.HasField("position")), d.service_cost)
                 for d in msg.devices],
        instance_json=msg.instance_json,
    )


def grid_to_pb(g: Grid) -> pb.Grid:
    return pb.Grid(south_west=position_to_pb(g.south_west), north_east=position_to_pb(g.north_east), rows=g.rows, cols=g.cols)


def grid_from_pb(msg: pb.Grid) -> Grid:
    return Grid(Position(msg.south_west.lat, msg.south_west.lon), Position(msg.north_east.lat, msg.north_east.lon),
                msg.rows, msg.cols)


def campaign_spec_to_pb(c: CampaignSpec) -> pb.CampaignSpec:
    return pb.CampaignSpec(name=c.name, grid=grid_to_pb(c.grid), slots=c.slots, reporters=c.reporters, method=c.method,
                           theta=c.theta, time_threshold=c.time_threshold, reputation_floor=c.reputation_floor,
                           subbands=c.subbands, rho=c.rho)


def campaign_spec_from_pb(msg: pb.CampaignSpec) -> CampaignSpec:
    return CampaignSpec(msg.name, grid_from_pb(msg.grid), msg.slots, list(msg.reporters), msg.method, msg.theta,
                        msg.time_threshold, msg.reputation_floor, msg.subbands, msg.rho if msg.HasField("rho") else 0.5)


def device_quality_to_pb(q: DeviceQuality) -> pb.DeviceQuality:
    return pb.DeviceQuality(device_id=q.device_id, device_name=q.device_name, reports=q.reports, quality=q.quality,
                            reputation=q.reputation, outliers=q.outliers)


def device_quality_from_pb(msg: pb.DeviceQuality) -> DeviceQuality:
    return DeviceQuality(msg.device_id, msg.device_name, msg.reports, msg.quality, msg.reputation, msg.outliers)


def campaign_report_to_pb(r: CampaignReport) -> pb.CampaignReport:
    return pb.CampaignReport(
        campaign_id=r.campaign_id, spec=campaign_spec_to_pb(r.spec), status=r.status, requested_work=r.requested_work,
        allocated_work=r.allocated_work, participants=r.participants, chosen=r.chosen, dangerous=r.dangerous,
        utility=r.utility, seconds=r.seconds,
        allocation=[pb.DeviceTasks(device_id=d.device_id, device_name=d.device_name, tasks=[task_to_pb(t) for t in d.tasks],
                                   disclosure=d.disclosure, dangerous=d.dangerous) for d in r.allocation],
        results=r.results, quality=[device_quality_to_pb(q) for q in r.quality], excluded=r.excluded,
        coverage=r.coverage, cells=r.cells, objective=r.objective, latency_s=r.latency_s,
    )


def campaign_report_from_pb(msg: pb.CampaignReport) -> CampaignReport:
    return CampaignReport(
        campaign_id=msg.campaign_id, spec=campaign_spec_from_pb(msg.spec), status=msg.status,
        requested_work=msg.requested_work, allocated_work=msg.allocated_work, participants=msg.participants,
        chosen=msg.chosen, dangerous=msg.dangerous, utility=msg.utility, seconds=msg.seconds,
        allocation=[DeviceTasks(d.device_id, d.device_name, [task_from_pb(t) for t in d.tasks], d.disclosure, d.dangerous)
                    for d in msg.allocation],
        results=msg.results, quality=[device_quality_from_pb(q) for q in msg.quality], excluded=list(msg.excluded),
        coverage=msg.coverage, cells=msg.cells, objective=msg.objective, latency_s=msg.latency_s,
    )


def site_request_to_pb(r: SiteRequest) -> pb.SiteRequest:
    return pb.SiteRequest(event=r.event, level=r.level, budget=r.budget, position=position_to_pb(r.position))


def site_request_from_pb(msg: pb.SiteRequest) -> SiteRequest:
    return SiteRequest(msg.event, msg.level, msg.budget, position_from_pb(msg.position, msg.HasField("position")))


def site_selection_to_pb(s: SiteSelection) -> pb.SiteSelection:
    return pb.SiteSelection(chosen=s.chosen, sites=[
        pb.SiteScore(site=x.site, eligible=x.eligible, reason=x.reason, quality=x.quality, group=x.group, price=x.price,
                     proximity_m=x.proximity_m, score=x.score) for x in s.sites])


def site_selection_from_pb(msg: pb.SiteSelection) -> SiteSelection:
    return SiteSelection(msg.chosen, [SiteScore(x.site, x.eligible, x.reason, x.quality, list(x.group), x.price,
                                                x.proximity_m, x.score) for x in msg.sites])
