"""The cloud server's transport-free core: control plane and the last tier of the data plane.

The servicer (``cloud_server.service``) converts messages with :mod:`ecd.transport.serde` and calls
these methods; they take and return :mod:`ecd.types` records, never see gRPC or protobuf, and raise
:mod:`ecd.errors` exceptions naming the field for bad requests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import secrets
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from cloud_server import campaigns, placement, sites
from cloud_server.heads import BUILTIN_HEAD, LinearHead, builtin_head, head_from_spec, make_head
from cloud_server.registry import DeviceRecord, EdgeRecord, Registry, hash_token, token_matches
from ecd import codec
from ecd.config import MiB
from ecd.limits import (MAX_ENDPOINT_CHARS, MAX_HEAD_LABELS, MAX_HEADS_PER_MODEL, MAX_PROFILE_BYTES, MIN_CHUNK_BYTES,
                        check_name, check_size, printable)
from ecd.errors import (AuthenticationError, EcdError, LimitError, NotFoundError, PermissionDeniedError, PreconditionError, RequestError,
                        UnavailableError)
from ecd.manifest import MANIFEST_FILENAME, Manifest, sha256_bytes
from ecd.batching import BatchingConfig, DynamicBatcher
from ecd.partition import BlockRunner
from ecd.profiles import DeviceProfile, device_from_dict, known_devices, known_radios, load_device, load_radio
from ecd.split import Preferences, check_split, decide_split
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
    Task,
)

log = logging.getLogger("ecd.cloud")

CHUNK_BYTES = 1 * MiB
MAX_READING = 1e12  # a sensor reading's magnitude; beyond it CrowdPower's squared distances would overflow


@dataclass
class ServedModel:
    manifest: Manifest
    runner: BlockRunner
    heads: dict[str, LinearHead] = field(default_factory=dict)
    batcher: DynamicBatcher | None = None  # frames of every edge stream, batched per block range

    def run(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        return (self.batcher.run if self.batcher is not None else self.runner.run)(x, start, stop)


def parse_profile(text: str) -> DeviceProfile:
    """A shipped profile name, or the TOML of a profile the device measured (``ecd profile``)."""
    if text in known_devices():
        return load_device(text)
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise RequestError(f"profile: neither a known profile ({', '.join(known_devices())}) nor profile TOML") from None
    try:
        return device_from_dict(d, "in the request")
    except EcdError as e:  # every refusal names its field (found by benchmarks/fuzz_atheris.py)
        raise RequestError(f"profile: {e}") from None


REVOKED_NOTICE_S = 60.0  # heartbeats name the devices revoked this recently
MOVE_GRACE_S = 30.0  # an edge node may still serve a device this long after placement moved it away


class CloudCore:
    def __init__(
        self,
        registry: Registry,
        models: list[Manifest],
        edge_boundary: int | None = None,
        max_tensor_bytes: int = 16 * MiB,
        edge_timeout_s: float = 3.0,
        max_batch: int = codec.MAX_BATCH,
        device_lease_s: float = 600.0,
        placement_method: str = placement.DEFAULT_METHOD,
        placement_activation_cost: float = 5.0,
        on_change: Callable[[], None] | None = None,
        batching: BatchingConfig | None = None,
    ):
        self.registry = registry
        self.models: dict[str, ServedModel] = {}
        self.edge_boundary = edge_boundary
        self.max_tensor_bytes = max_tensor_bytes
        self.edge_timeout_s = edge_timeout_s
        self.max_batch = max_batch
        self.device_lease_s = device_lease_s
        self._touched: dict[str, float] = {}  # device id -> when its lease was last written
        self._moved_from: dict[str, dict[str, float]] = {}  # device id -> {edge id it left: when}
        self.placement_method = placement.check_method(placement_method)
        if not (math.isfinite(placement_activation_cost) and placement_activation_cost >= 0):
            raise RequestError(f"placement_activation_cost: expected a finite value >= 0, got {placement_activation_cost}")
        self.placement_activation_cost = placement_activation_cost
        self.on_change = on_change or (lambda: None)  # the transport wakes assignment watchers
        self.metrics: Any = None  # SchedulerMetrics, set by the service
        self._placement_lock = threading.Lock()
        last = registry.latest_placement()
        self.placement: PlacementReport | None = placement_report_from_dict(last) if last else None
        self._placed_alive: set[str] = {e.edge_id for e in self.placement.edges if e.alive} if self.placement else set()
        self.campaign_limits = campaigns.Limits()
        for m in models:
            runner = BlockRunner(m)
            served = ServedModel(m, runner, {BUILTIN_HEAD: builtin_head(m.labels)}, DynamicBatcher(runner.run, batching))
            for spec in registry.heads(m.model_id):
                served.heads[spec["name"]] = head_from_spec(spec, len(m.labels))
            self.models[m.model_id] = served

    # --- helpers -------------------------------------------------------------------------------

    def _model(self, model_id: str, version: str = "", field_name: str = "model_id") -> ServedModel:
        served = self.models.get(model_id)
        if served is None:
            raise PreconditionError(f"{field_name}: model {model_id!r} is not served here (serving: {', '.join(sorted(self.models))})")
        if version and version != served.manifest.version:
            raise PreconditionError(
                f"model_version: {model_id} version {version!r} is not served here (current: {served.manifest.version}); fetch the current partition",
            )
        return served

    def authenticate(self, device_id: str, token: str) -> DeviceRecord:
        record = self.registry.device(device_id) if device_id else None
        if record is None or not token or not token_matches(record.token, token):
            raise AuthenticationError(f"token: unknown device token for device_id {printable(device_id)!r}")
        self._touch(device_id)
        return record

    def _touch(self, device_id: str) -> None:
        """Renew the device's lease: every authenticated call (its frames included) counts, written
        at most every lease/4 so frames do not become database writes."""
        now = time.time()
        if now - self._touched.get(device_id, 0.0) >= self.device_lease_s / 4:
            self._touched[device_id] = now
            self.registry.touch_device(device_id, now)

    def live_since(self) -> float:
        """Devices heard from after this moment (unix seconds) hold a lease: placement places them
        and the per-edge counts count them; the others are gone until they call again."""
        return time.time() - self.device_lease_s

    def _split_edge(self, served: ServedModel, split_device: int) -> int:
        n = served.manifest.n_blocks
        boundary = n - 1 if self.edge_boundary is None else min(self.edge_boundary, n)
        return max(split_device, boundary)

    def _assignment(self, d: DeviceRecord, recommended: int, token: str) -> Assignment:
        """The device's assignment, carrying ``token``: the one the device presented (the registry
        keeps only its hash)."""
        edge = self.registry.edge(d.edge_id)
        return Assignment(
            device_id=d.device_id,
            token=token,
            edge_endpoint=edge.endpoint if edge else "",
            model_id=d.model_id,
            model_version=d.model_version,
            split=d.split,
            recommended_split=recommended,
            preferences=Preferences(d.w_energy, d.w_privacy, d.min_split),
            edge_id=d.edge_id if edge else "",
            placement_version=self.placement.version if self.placement else 0,
            tasks=[Task(*t) for t in self.registry.pending_tasks(d.device_id)],
            encoding=Encoding(d.encoding) if d.encoding in Encoding._value2member_map_ else Encoding.FLOAT32,
        )

    def _recommend(self, served: ServedModel, profile: DeviceProfile, radio: str, prefs: Preferences) -> int:
        return decide_split(served.manifest, profile, load_radio(radio), prefs).recommended

    def alive_edges(self) -> list[EdgeRecord]:
        now = time.time()
        return [e for e in self.registry.edges() if now - e.last_seen_unix <= self.edge_timeout_s]

    def _least_loaded(self, edges: list[EdgeRecord], counts: dict[str, int]) -> str:
        """The edge with the fewest devices per unit of capacity (for devices placement cannot place)."""
        return min(edges, key=lambda e: (counts.get(e.edge_id, 0) / max(e.capacity, 1e-9), e.edge_id)).edge_id

    def _sites(self, edges: list[EdgeRecord]) -> list[placement.Site]:
        return [
            placement.Site(e.edge_id, Position(e.lat, e.lon), e.activation_cost or self.placement_activation_cost)
            for e in edges if e.lat is not None and e.lon is not None
        ]

    def _pick_edge(self, position: Position | None = None) -> str:
        """A joining or moving device's edge: the cheapest *active* edge under the current placement
        when both are known (paper 003's assignment rule for a fixed open set), else the least
        loaded alive edge."""
        edges = self.alive_edges()
        if not edges:
            raise UnavailableError(
                f"edge_endpoint: no edge node has registered or sent a heartbeat in the last {self.edge_timeout_s:g} s",
            )
        if position is not None and self.placement is not None:
            active = {e.edge_id for e in self.placement.edges if e.active}
            chosen = placement.nearest_active(position, self._sites(edges), active)
            if chosen is not None:
                return chosen
        return self._least_loaded(edges, self.registry.devices_per_edge(self.live_since()))

    # --- control plane -------------------------------------------------------------------------

    def register_device(self, req: DeviceRegistration) -> Assignment:
        check_size(req.profile, "profile", MAX_PROFILE_BYTES)
        served = self._model(req.model_id)
        if req.radio not in known_radios():
            raise RequestError(f"radio: {printable(req.radio)!r} is not one of {', '.join(known_radios())}")
        profile = parse_profile(req.profile)
        prefs = req.preferences
        if prefs.min_split > served.manifest.n_blocks:
            raise RequestError(f"preferences.min_split: expected 0..{served.manifest.n_blocks}, got {prefs.min_split}")
        check_split(served.manifest, req.split_device, prefs.min_split)
        if not isinstance(req.encoding, Encoding):
            raise RequestError(f"encoding: expected FLOAT32, FLOAT16 or INT8_AFFINE, got {req.encoding}")
        position = req.position.check("position") if req.position is not None else None
        sensors = sites.check_sensors(req.sensors)
        token = secrets.token_hex(16)
        record = self.registry.add_device(
            token=hash_token(token),
            name=check_name(req.device_name or "device", "device_name"),
            profile=req.profile if req.profile in known_devices() else "measured:" + profile.name,
            radio=req.radio,
            w_energy=prefs.w_energy,
            w_privacy=prefs.w_privacy,
            min_split=prefs.min_split,
            model_id=served.manifest.model_id,
            model_version=served.manifest.version,
            split_device=req.split_device,
            split_edge=self._split_edge(served, req.split_device),
            encoding=req.encoding.value,
            reputation=campaigns.NEUTRAL_REPUTATION,
            edge_id=self._pick_edge(position),
            lat=position.lat if position else None,
            lon=position.lon if position else None,
            sensors=json.dumps(sensors),
        )
        if position is not None:
            self.registry.record_location(record.device_id, position.lat, position.lon, int(time.time() * 1000))
        log.info("[CloudServer.RegisterDevice] %s (%s) split %d on edge %s", record.device_id, record.name, record.split_device, record.edge_id)
        return self._assignment(record, self._recommend(served, profile, req.radio, prefs), token)

    def update_preferences(self, req: PreferencesUpdate) -> Assignment:
        d = self.authenticate(req.device_id, req.token)
        served = self._model(d.model_id)
        prefs = req.preferences
        check_split(served.manifest, req.split_device, prefs.min_split)
        d = self.registry.update_device(
            d.device_id,
            w_energy=prefs.w_energy,
            w_privacy=prefs.w_privacy,
            min_split=prefs.min_split,
            split_device=req.split_device,
            split_edge=self._split_edge(served, req.split_device),
        )
        profile = load_device(d.profile) if d.profile in known_devices() else None
        recommended = self._recommend(served, profile, d.radio, prefs) if profile else d.split_device
        return self._assignment(d, recommended, req.token)

    def get_assignment(self, device_id: str, token: str, edge_owner: str | None = None) -> Assignment:
        """The device's assignment. ``edge_owner``: the asker is the edge node holding that
        certificate, checking a token it was shown — only for a device assigned to it."""
        d = self._on_live_edge(self.authenticate(device_id, token))
        if edge_owner is not None and not self._serves(d, edge_owner):
            raise PermissionDeniedError(f"device_id: device {device_id} is not assigned to this edge node")
        return self._assignment(d, d.split_device, token)

    def _on_live_edge(self, d: DeviceRecord) -> DeviceRecord:
        """A device asking where to stream is never sent to a dead edge node: one that lost its
        edge while away (its lease expired, placement left it) gets a live one now."""
        alive = {e.edge_id: e for e in self.alive_edges()}
        if d.edge_id in alive or not alive:
            return d
        position = Position(d.lat, d.lon) if d.lat is not None and d.lon is not None else None
        edge = self._pick_edge(position)
        self._move({d.device_id: edge}, {d.device_id: d.edge_id})
        self.on_change()
        return self.registry.device(d.device_id)

    def register_edge(self, req: EdgeRegistration, owner: str = "") -> str:
        """Register (or re-register) the edge node at ``req.endpoint``. ``owner``: the name on the
        caller's edge certificate; an endpoint another certificate registered is refused."""
        check_name(req.endpoint, "endpoint", MAX_ENDPOINT_CHARS)
        if ":" not in req.endpoint:
            raise RequestError(f"endpoint: expected host:port, got {printable(req.endpoint)!r}")
        if not (np.isfinite(req.capacity) and req.capacity > 0):
            raise RequestError(f"capacity: expected a finite value > 0, got {req.capacity}")
        if not (math.isfinite(req.activation_cost) and req.activation_cost >= 0):
            raise RequestError(f"activation_cost: expected a finite value >= 0, got {req.activation_cost}")
        position = req.position.check("position") if req.position is not None else None
        record = self.registry.add_edge(
            req.endpoint, req.capacity, lat=position.lat if position else None, lon=position.lon if position else None,
            activation_cost=req.activation_cost, owner=owner,
        )
        if record is None:
            raise PermissionDeniedError(f"endpoint: {req.endpoint} is registered by another edge node")
        return record.edge_id

    def _move(self, mapping: dict[str, str], previous: dict[str, str]) -> None:
        """Apply device -> edge moves, remembering each device's previous edge for ``MOVE_GRACE_S``:
        frames a device sent before it heard of the move are still served there."""
        now = time.monotonic()
        for device_id, edge_id in mapping.items():
            old = previous.get(device_id)
            if old and old != edge_id:
                self._moved_from.setdefault(device_id, {})[old] = now
        self.registry.set_device_edges(mapping)

    def _serves(self, d: DeviceRecord, owner: str) -> bool:
        """Whether the edge node holding certificate ``owner`` may serve device ``d``: its edge now,
        or one it left less than ``MOVE_GRACE_S`` ago."""
        edge_ids = [d.edge_id] + [e for e, t in self._moved_from.get(d.device_id, {}).items()
                                  if time.monotonic() - t < MOVE_GRACE_S]
        return any((e := self.registry.edge(edge_id)) is not None and e.owner == owner for edge_id in edge_ids)

    def _own_edge(self, edge_id: str, owner: str) -> None:
        edge = self.registry.edge(edge_id)
        if edge is None:
            raise NotFoundError(f"edge_id: {edge_id!r} is not registered")
        if edge.owner != owner:
            raise PermissionDeniedError(f"edge_id: {edge_id} belongs to another edge node")

    def deregister_edge(self, edge_id: str, owner: str = "") -> None:
        """An edge node leaving (e.g. on SIGTERM): it gets no new devices, and the next placement moves
        its devices away."""
        self._own_edge(edge_id, owner)
        if not self.registry.remove_edge(edge_id):
            raise NotFoundError(f"edge_id: {edge_id!r} is not registered")

    def report_location(self, req: LocationReport) -> Assignment:
        """A device's new position: stored in its trace; if another active edge is now cheaper, the
        device moves there (its watchers are told)."""
        d = self.authenticate(req.device_id, req.token)
        if req.position is None:
            raise RequestError("position: required")
        position = req.position.check("position")
        if req.unix_ms < 0:
            raise RequestError(f"unix_ms: expected >= 0, got {req.unix_ms}")
        self.registry.record_location(d.device_id, position.lat, position.lon, req.unix_ms or int(time.time() * 1000))
        edge = self._pick_edge(position) if self.alive_edges() else d.edge_id
        if edge != d.edge_id:
            self._move({d.device_id: edge}, {d.device_id: d.edge_id})
            self.on_change()
        d = self.registry.device(d.device_id)
        return self._assignment(d, d.split_device, req.token)

    def heartbeat(self, req: EdgeHeartbeat, owner: str = "") -> list[str]:
        """Note the edge alive; returns the devices revoked lately (the edge drops their cached
        assignments, so a revoked token is refused there within a heartbeat)."""
        self._own_edge(req.edge_id, owner)
        if not self.registry.heartbeat(req.edge_id, req.load, req.queue_depth):
            raise NotFoundError(f"edge_id: {req.edge_id!r} is not registered")
        return self.registry.revoked_since(time.time() - REVOKED_NOTICE_S)

    def revoke_device(self, device_id: str) -> None:
        """Revoke a device's token (a stolen phone): the cloud refuses it at once, edge nodes from
        their next heartbeat on."""
        if not self.registry.revoke_device(device_id):
            raise NotFoundError(f"device_id: {printable(device_id)!r} is not registered")
        log.warning("[CloudServer.RevokeDevice] %s revoked", device_id)

    # --- placement (paper 003, see cloud_server.placement) -----------------------------------------

    def placement_due(self) -> str | None:
        """Why a new placement should run now, or None: an edge joined, was lost or left since the
        last one, or devices wait with positions and there is no placement yet."""
        alive = {e.edge_id for e in self.alive_edges()}
        if not alive:
            return None  # nothing to place devices on; the next edge to join triggers a placement
        if alive - self._placed_alive:
            return "edge joined"
        if self._placed_alive - alive:
            return "edge lost"
        if alive and self.placement is None and any(d.lat is not None for d in self.registry.devices(self.live_since())):
            return "devices joined"
        return None

    def place(self, method: str = "", seed: int = 0, trigger: str = "operator") -> PlacementReport:
        """Solve placement over the live edges and devices and apply it: every device's edge becomes
        the one placement names (devices without a position: the least loaded alive edge)."""
        method = placement.check_method(method or self.placement_method)
        with self._placement_lock:
            t0 = time.perf_counter()
            try:
                report = self._place(method, seed, trigger)
            except Exception:
                if self.metrics:
                    self.metrics.run("placement", method, "error", time.perf_counter() - t0)
                raise
            if self.metrics:
                self.metrics.run("placement", method, "ok", time.perf_counter() - t0)
                self.metrics.placed(report)
        log.info("[CloudServer.Place] v%d %s (%s): %d edges active, total cost %.3f, %.3f s", report.version, method,
                 trigger, sum(e.active for e in report.edges), report.total_cost, report.seconds)
        self.on_change()
        return report

    def _place(self, method: str, seed: int, trigger: str) -> PlacementReport:
        alive = self.alive_edges()
        if not alive:
            raise PreconditionError(
                f"edges: no edge node is alive (registered, with a heartbeat in the last {self.edge_timeout_s:g} s) to place devices on"
            )
        devices = self.registry.devices(self.live_since())
        sites = self._sites(alive)
        users = [placement.User(d.device_id, Position(d.lat, d.lon), d.model_id) for d in devices if d.lat is not None]
        solution = placement.place(sites, users, method, seed) if sites and users else None
        mapping = dict(solution.device_edge) if solution else {}
        counts = {e.edge_id: 0 for e in alive}
        for edge_id in mapping.values():
            counts[edge_id] += 1
        active_alive = [e for e in alive if solution and e.edge_id in solution.active] or alive
        for d in devices:
            if d.device_id not in mapping:
                mapping[d.device_id] = self._least_loaded(active_alive, counts) if alive else ""
                if mapping[d.device_id]:
                    counts[mapping[d.device_id]] += 1
        self._move(mapping, {d.device_id: d.edge_id for d in devices})
        alive_ids = {e.edge_id for e in alive}
        active = set(solution.active) if solution else {e for e in mapping.values() if e}
        report = PlacementReport(
            version=(self.placement.version if self.placement else 0) + 1,
            method=method if solution else "least loaded (no positions)",
            trigger=trigger,
            total_cost=solution.total_cost if solution else 0.0,
            activation_cost=solution.activation_cost if solution else 0.0,
            service_cost=solution.service_cost if solution else 0.0,
            seconds=solution.seconds if solution else 0.0,
            computed_unix_ms=int(time.time() * 1000),
            edges=[
                EdgePlacement(e.edge_id, e.endpoint, Position(e.lat, e.lon) if e.lat is not None else None,
                              e.edge_id in active, e.edge_id in alive_ids, counts.get(e.edge_id, 0),
                              e.activation_cost or self.placement_activation_cost)
                for e in self.registry.edges()
            ],
            devices=[
                DevicePlacement(d.device_id, d.name, mapping[d.device_id],
                                Position(d.lat, d.lon) if d.lat is not None else None,
                                solution.device_cost.get(d.device_id, 0.0) if solution else 0.0)
                for d in devices
            ],
            instance_json=solution.to_json() if solution else "",
        )
        self.registry.put_placement(placement_report_to_dict(report))
        self.placement = report
        self._placed_alive = alive_ids
        return report

    def placement_report(self) -> PlacementReport:
        if self.placement is None:
            raise PreconditionError("placement: none computed yet (no edge node has registered)")
        return self.placement

    # --- campaigns (paper 002) and reputations (paper 001), see cloud_server.campaigns ------------

    def create_campaign(self, spec: CampaignSpec) -> CampaignReport:
        """Allocate a campaign's tasks over the registered devices' traces and hand them out (each
        chosen device sees its tasks in its assignment)."""
        campaigns.check_spec(spec, self.campaign_limits)
        floor = spec.reputation_floor if spec.reputation_floor >= 0 else campaigns.DEFAULT_REPUTATION_FLOOR
        devices = {d.device_id: d for d in self.registry.devices(self.live_since())}
        reputations = {k: d.reputation for k, d in devices.items()}
        try:
            if spec.method in campaigns.COVERAGE_METHODS:  # where each device is now
                positions = {k: (d.lat, d.lon) for k, d in devices.items() if d.lat is not None and d.lon is not None}
                alloc = campaigns.allocate_coverage(spec, positions, reputations, floor)
            else:  # where each device has been (its trace)
                traces = {k: v for k, v in self.registry.locations().items() if k in devices}
                alloc = campaigns.allocate(spec, traces, reputations, floor)
        except Exception:
            if self.metrics:
                self.metrics.run("allocation", spec.method, "error", 0.0)
            raise
        campaign_id = uuid.uuid4().hex[:12]
        by_device: dict[str, list[Task]] = {}
        for task_id, device_id, cell, slot in alloc.tasks:
            by_device.setdefault(device_id, []).append(Task(campaign_id, task_id, cell, slot))
        report = CampaignReport(
            campaign_id=campaign_id, spec=spec, status="running", requested_work=alloc.requested,
            allocated_work=alloc.allocated, participants=len(alloc.participants), chosen=len(by_device),
            dangerous=len(alloc.dangerous), utility=alloc.utility, seconds=alloc.seconds,
            allocation=[DeviceTasks(d, devices[d].name, t, alloc.disclosure.get(d, 0.0), d in alloc.dangerous)
                        for d, t in sorted(by_device.items())],
            excluded=alloc.excluded, coverage=alloc.coverage, cells=alloc.cells, objective=alloc.objective,
            latency_s=alloc.latency_s,
        )
        # the campaign first, then its tasks: a crash between them leaves a campaign with no tasks,
        # never tasks no campaign answers for
        self.registry.put_campaign(campaign_id, dataclasses.asdict(report))
        self.registry.add_tasks(campaign_id, alloc.tasks)
        if self.metrics:
            self.metrics.run("allocation", spec.method, "ok", alloc.seconds)
        log.info("[CloudServer.CreateCampaign] %s %r by %s: %d of %d tasks to %d devices, %d dangerous", campaign_id,
                 spec.name, spec.method, alloc.allocated, alloc.requested, len(by_device), len(alloc.dangerous))
        self.on_change()
        return report

    def campaign_report(self, campaign_id: str) -> CampaignReport:
        stored = self.registry.campaign(campaign_id)
        if stored is None:
            raise NotFoundError(f"campaign_id: {campaign_id!r} is not a campaign of this cloud")
        report = campaign_report_from_dict(stored)
        rows = self.registry.tasks(campaign_id)
        report.results = sum(1 for r in rows if r[4])
        if report.status == "running" and rows and report.results == len(rows):
            report = self._finish_campaign(report, rows)
        return report

    def _finish_campaign(self, report: CampaignReport, rows: list) -> CampaignReport:
        """Every task answered: CrowdPower scores the reports; reputations go to the registry."""
        quality = campaigns.score(report.spec, rows)
        self.registry.set_reputations({d: q.reputation for d, q in quality.items()})
        names = {d.device_id: d.name for d in self.registry.devices()}
        report.quality = [dataclasses.replace(q, device_name=names.get(d, "")) for d, q in sorted(quality.items())]
        report.status = "done"
        self.registry.put_campaign(report.campaign_id, dataclasses.asdict(report))
        if self.metrics:
            self.metrics.reputations(report.quality)
        log.info("[CloudServer.Campaign] %s done: %d reports scored", report.campaign_id, sum(q.reports for q in report.quality))
        return report

    def select_site(self, req: SiteRequest) -> SiteSelection:
        """CrowdPower's site selection (paper 001 §3.6) over the alive edge nodes and the live devices
        placed on them (see :mod:`cloud_server.sites`)."""
        t0 = time.perf_counter()
        try:
            selection = sites.select(req, self.alive_edges(), self.registry.devices(self.live_since()))
        except Exception:
            if self.metrics:
                self.metrics.run("site_selection", "crowdpower", "error", time.perf_counter() - t0)
            raise
        if self.metrics:
            self.metrics.run("site_selection", "crowdpower", "ok", time.perf_counter() - t0)
        return selection

    def reputations(self) -> tuple[list[DeviceQuality], float]:
        """Every device's reputation (and the default floor the next campaign applies)."""
        return [DeviceQuality(d.device_id, d.name, 0, 0.0, d.reputation, 0) for d in self.registry.devices()], \
            campaigns.DEFAULT_REPUTATION_FLOOR

    def _answer_task(self, frame: Frame, result: Result) -> None:
        task = frame.task
        label = result.head(BUILTIN_HEAD).label if result.head(BUILTIN_HEAD) else ""
        state = self.registry.answer_task(task.campaign_id, task.task_id, frame.device_id, frame.reading, label)
        if state == "not yours":
            raise PreconditionError(f"task: campaign {task.campaign_id!r} has no task {task.task_id} for device {frame.device_id}")
        if state == "new" and self.registry.unanswered(task.campaign_id) == 0:
            self.campaign_report(task.campaign_id)  # the last answer: score the campaign now

    def partition_chunks(self, req: PartitionRequest) -> Iterator[FileChunk]:
        served = self._model(req.model_id, req.model_version)
        m = served.manifest
        if not req.start <= req.stop <= m.n_blocks:
            raise RequestError(f"start, stop: expected 0 <= start <= stop <= {m.n_blocks}, got [{req.start}, {req.stop})")
        if 0 < req.max_chunk_bytes < MIN_CHUNK_BYTES:
            raise RequestError(f"max_chunk_bytes: expected 0 (the server's default) or >= {MIN_CHUNK_BYTES}, got {req.max_chunk_bytes}")
        step = min(req.max_chunk_bytes or CHUNK_BYTES, CHUNK_BYTES)
        paths = [m.directory / MANIFEST_FILENAME] + [m.block_path(b) for b in m.blocks[req.start : req.stop]]
        for path in paths:
            data = path.read_bytes()
            digest = sha256_bytes(data)
            for offset in range(0, max(len(data), 1), step):
                yield FileChunk(path.name, digest, len(data), offset, data[offset : offset + step])

    def add_head(self, spec: HeadSpec) -> int:
        served = self._model(spec.model_id)
        if len(spec.labels) > MAX_HEAD_LABELS:
            raise LimitError(f"labels: at most {MAX_HEAD_LABELS} per head, got {len(spec.labels)}")
        for k, label in enumerate(spec.labels):
            check_name(label, f"labels[{k}]")
        if spec.name not in served.heads and len(served.heads) >= MAX_HEADS_PER_MODEL:
            raise LimitError(f"name: {spec.model_id} already has {len(served.heads)} heads (the limit); replace one instead")
        head = make_head(spec.name, spec.labels, spec.weight, spec.bias, spec.input, len(served.manifest.labels))
        self.registry.put_head(spec.model_id, head.name, head.to_spec())
        served.heads[head.name] = head
        log.info("[CloudServer.AddHead] %s on %s (%d labels)", head.name, spec.model_id, len(head.labels))
        return len(served.heads)

    def list_heads(self, model_id: str) -> list[HeadSpec]:
        served = self._model(model_id)
        return [
            HeadSpec(model_id, h.name, list(h.labels), h.weight.ravel().tolist(), h.bias.tolist(), h.input)
            for h in served.heads.values()
        ]

    # --- data plane ----------------------------------------------------------------------------

    def process(self, frame: Frame) -> Result:
        """Run blocks [split.edge, n) and every head; a bad frame becomes a Result carrying the error."""
        result = Result(
            device_id=frame.device_id, frame_id=frame.frame_id, split=frame.split,
            device_compute_s=frame.device_compute_s, edge_compute_s=frame.edge_compute_s,
            uplink_bytes=frame.uplink_bytes, edge_to_cloud_bytes=frame.wire_bytes,
        )
        try:
            device = self.authenticate(frame.device_id, frame.token)
            served = self._model(frame.model_id, frame.model_version)
            n = served.manifest.n_blocks
            split = frame.split
            check_split(served.manifest, split.device, device.min_split)
            if not split.device <= split.edge <= n:
                raise RequestError(f"split_edge: expected {split.device}..{n}, got {split.edge}")
            x = codec.decode_at(frame.tensor, served.manifest, split.edge, self.max_tensor_bytes, max_batch=self.max_batch)
            t0 = time.perf_counter()
            output = served.run(x, split.edge, n)
            for head in list(served.heads.values()):
                scores = head.scores(output)
                k = int(np.argmax(scores[0]))
                result.heads.append(HeadOutput(head.name, head.labels[k], k, scores[0].tolist()))
            result.cloud_compute_s = time.perf_counter() - t0
            result.output = output[0].astype(np.float32).tolist()
            if frame.task is not None:
                if not (math.isfinite(frame.reading) and abs(frame.reading) <= MAX_READING):
                    raise RequestError(f"reading: expected a finite number within ±{MAX_READING:g}, got {frame.reading}")
                self._answer_task(frame, result)
        except Exception as e:  # noqa: BLE001 — every frame gets a result; errors.describe classifies
            result.heads = []
            result.error = FrameError.from_exception(e)
        return result


def placement_report_to_dict(r: PlacementReport) -> dict:
    return dataclasses.asdict(r)


def placement_report_from_dict(d: dict) -> PlacementReport:
    def pos(p: dict | None) -> Position | None:
        return Position(**p) if p else None

    return PlacementReport(
        **{k: v for k, v in d.items() if k not in ("edges", "devices")},
        edges=[EdgePlacement(**{**e, "position": pos(e["position"])}) for e in d["edges"]],
        devices=[DevicePlacement(**{**x, "position": pos(x["position"])}) for x in d["devices"]],
    )


def campaign_report_from_dict(d: dict) -> CampaignReport:
    spec = dict(d["spec"])
    g = spec.pop("grid")
    grid = Grid(Position(**g["south_west"]), Position(**g["north_east"]), g["rows"], g["cols"])
    return CampaignReport(
        **{k: v for k, v in d.items() if k not in ("spec", "allocation", "quality")},
        spec=CampaignSpec(grid=grid, **spec),
        allocation=[DeviceTasks(**{**a, "tasks": [Task(**t) for t in a["tasks"]]}) for a in d["allocation"]],
        quality=[DeviceQuality(**q) for q in d["quality"]],
    )


def load_models(names: list[str]) -> list[Manifest]:
    from ecd import zoo

    return [zoo.load_manifest(n) for n in names]
