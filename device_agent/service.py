"""The device agent's gRPC face: fetch the lower blocks, register, open the edge stream, stream the
frames the core makes (resending what a broken stream left unanswered), collect results.

Thin over :class:`~device_agent.core.AgentCore`, which chooses the split, makes frames and writes
the report; messages are converted by :mod:`ecd.transport.serde`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import grpc
import numpy as np

from device_agent.core import AgentCore, FrameOutcome, RunReport, SimulatedSensor
from device_agent.sources import open_source
from ecd import distribution
from ecd.config import MiB, option
from ecd.errors import ConfigError, EcdError, UnavailableError
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics, start_metrics
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences
from ecd.transport import serde
from ecd.transport.rpc import TransportConfig, grpc_options
from ecd.types import Assignment, DeviceRegistration, Encoding, LocationReport, PartitionRequest, Position, Task
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

log = logging.getLogger("ecd.agent")

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)

__all__ = ["AgentConfig", "DeviceAgent", "FrameOutcome", "RunReport", "run_agent"]


@dataclass(frozen=True)
class AgentConfig:
    cloud: str = option("127.0.0.1:50051", "cloud server host:port (registration, model download)")
    name: str = option("device", "a name operators see")
    profile: str = option("pi4", "device profile: shipped name or a file written by `ecd profile`")
    radio: str = option("wifi", "uplink radio: wifi, lte or 5g")
    privacy_weight: float = option(0.5, "w_privacy (lambda2)")
    energy_weight: float = option(-1.0, "w_energy (lambda1); -1 = 1 - privacy_weight")
    min_split: int = option(0, "hard floor: never send anything from below this block")
    split: int = option(-1, "run exactly this split instead of the utility's choice (-1 = the utility's); must be >= min_split")
    model: str = option("digits_cnn", "model id served by the cloud")
    encoding: str = option("float32", "tensor encoding on the uplink: float32, float16 or int8")
    source: str = option("heldout", "frames: heldout, synthetic or folder:PATH")
    frames: int = option(200, "how many frames to stream")
    max_in_flight: int = option(8, "frames sent but not yet answered")
    model_dir: str = option("", "where fetched partitions are kept (default: a temporary folder)")
    metrics_port: int = option(-1, "Prometheus port (-1 = off, 0 = any free port)")
    metrics_host: str = option("127.0.0.1", "address the Prometheus endpoint listens on")
    report: str = option("", "write the run's report as JSON to this file")
    max_message_bytes: int = option(64 * MiB, "gRPC max message size, bytes")
    retries: int = option(3, "times a broken edge stream is reopened (unanswered frames are resent)")
    position: str = option("", "where the device is, LAT,LON in degrees (placement uses it; empty = unknown)")
    trace: str = option("", "a CSV of positions (lat,lon per line) the device walks through, one step per --trace-every frames")
    trace_every: int = option(20, "frames between two location reports when replaying --trace")
    follow: bool = option(True, "watch the assignment and move to the edge node placement names")
    failover_wait_s: float = option(30.0, "after its edge breaks, how long to wait for the cloud to name another, seconds")
    sensor_seed: int = option(0, "seed of the simulated sensor whose readings answer campaign tasks")
    corrupt_reports: bool = option(False, "misbehave: send biased, noisy readings (to see CrowdPower catch it)")


def read_trace(path: str) -> list[Position]:
    """Positions from a CSV file: ``lat,lon`` per line (a header line and extra columns are ignored)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"--trace: cannot read {path} ({e.strerror})") from None
    out = []
    for n, line in enumerate(lines, 1):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 2 or not cells[0]:
            continue
        try:
            lat, lon = float(cells[0]), float(cells[1])
        except ValueError:
            if n == 1:
                continue  # a header
            raise ConfigError(f"--trace: {path}, line {n}: expected lat,lon, got {line!r}") from None
        out.append(Position(lat, lon).check(f"--trace line {n}"))
    if not out:
        raise ConfigError(f"--trace: {path} holds no positions")
    return out


class DeviceAgent:
    def __init__(self, cfg: AgentConfig):
        if cfg.trace_every < 1:
            raise ConfigError(f"--trace-every: expected >= 1, got {cfg.trace_every}")
        self.trace = read_trace(cfg.trace) if cfg.trace else []
        self.position = Position.parse(cfg.position, "--position") or (self.trace[0] if self.trace else None)
        self.cfg = cfg
        w_e = cfg.energy_weight if cfg.energy_weight >= 0 else 1.0 - cfg.privacy_weight
        self.core = AgentCore(cfg.name, Preferences(w_e, cfg.privacy_weight, cfg.min_split),
                              Encoding.parse(cfg.encoding), load_device(cfg.profile), load_radio(cfg.radio),
                              ServiceMetrics("device"))
        self.metrics = self.core.metrics
        self._tmp = None if cfg.model_dir else tempfile.TemporaryDirectory(prefix="ecd-agent-")
        self.model_dir = Path(cfg.model_dir or self._tmp.name)
        self._options = grpc_options(TransportConfig(max_message_bytes=cfg.max_message_bytes))
        self.cloud_channel = grpc.insecure_channel(cfg.cloud, options=self._options)
        self.cloud = pb_grpc.CloudServerStub(self.cloud_channel)
        self.edge_channel: grpc.Channel | None = None
        self._move: Assignment | None = None  # a new edge the cloud named, not yet switched to
        self._moved = threading.Event()
        self._lock = threading.Lock()
        self._seen = threading.Condition(self._lock)
        self.placement_version = 0
        self._watch_call = None
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self.moves = 0
        self.edges_used: list[str] = []
        self.sensor = SimulatedSensor(cfg.sensor_seed, cfg.corrupt_reports)
        self._tasks: deque[Task] = deque()  # campaign tasks handed out and not yet sent
        self._tasks_seen: set[Task] = set()
        self.tasks_done = 0

    @property
    def assignment(self) -> Assignment | None:
        return self.core.assignment

    @property
    def manifest(self) -> Manifest | None:
        return self.core.manifest

    # --- set-up --------------------------------------------------------------------------------

    def _fetch(self, request: PartitionRequest, dest: Path) -> Manifest:
        return distribution.fetch(map(serde.chunk_from_pb, self.cloud.FetchPartition(serde.partition_request_to_pb(request))), dest)

    def connect(self, timeout_s: float = 30.0) -> Assignment:
        """Fetch the manifest, choose the split, fetch blocks [0, split.device), register, open the edge."""
        grpc.channel_ready_future(self.cloud_channel).result(timeout=timeout_s)
        dest = self.model_dir / self.cfg.model
        head = self._fetch(distribution.request(self.cfg.model, "", 0, 0, self.cfg.max_message_bytes), dest)
        split_device = self.core.choose_split(head, self.cfg.split)
        manifest = self._fetch(distribution.request(self.cfg.model, head.version, 0, split_device, self.cfg.max_message_bytes), dest)
        profile_path = Path(self.cfg.profile)
        registration = DeviceRegistration(
            device_name=self.cfg.name,
            profile=profile_path.read_text() if profile_path.is_file() else self.cfg.profile,
            radio=self.cfg.radio,
            preferences=self.core.prefs,
            model_id=manifest.model_id,
            split_device=split_device,
            encoding=self.core.encoding,
            position=self.position,
        )
        reply = self.cloud.RegisterDevice(serde.registration_to_pb(registration), timeout=timeout_s)
        assignment = serde.assignment_from_pb(reply)
        self.core.registered(manifest, assignment)
        self.placement_version = assignment.placement_version
        self._offer(assignment)
        self.edge_channel = grpc.insecure_channel(assignment.edge_endpoint, options=self._options)
        self.edges_used.append(assignment.edge_id)
        if self.cfg.follow:
            self._watcher = threading.Thread(target=self._watch, name="ecd-agent-watch", daemon=True)
            self._watcher.start()
        log.info("[DeviceAgent] %s registered as %s: split %d, edge %s", self.cfg.name, assignment.device_id,
                 assignment.split.device, assignment.edge_endpoint)
        return assignment

    # --- following the assignment ------------------------------------------------------------------

    def _watch(self) -> None:
        """Follow the cloud's word on this device's assignment; a new edge is switched to between
        frames. A watch the cloud drops (it restarted, the link broke) is opened again, with
        backoff, until the agent closes."""
        a = self.core.assignment
        backoff_s = 0.2
        while not self._closing.is_set():
            call = self.cloud.WatchAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token))
            self._watch_call = call
            if self._closing.is_set():  # closed while the call was being made
                call.cancel()
            try:
                for msg in call:
                    self._offer(serde.assignment_from_pb(msg))
                    backoff_s = 0.2
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.CANCELLED or self._closing.is_set():
                    return
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    log.warning("[DeviceAgent] assignment watch refused (%s: %s)", e.code().name, e.details())
                    return
                log.warning("[DeviceAgent] assignment watch broke (UNAVAILABLE); again in %.1f s", backoff_s)
            if self._closing.wait(backoff_s):
                return
            backoff_s = min(backoff_s * 2, 5.0)

    def _offer(self, a: Assignment) -> None:
        with self._lock:
            for task in a.tasks:
                if task not in self._tasks_seen:
                    self._tasks_seen.add(task)
                    self._tasks.append(task)
            current = self._move or self.core.assignment
            if a.edge_endpoint and (a.edge_endpoint, a.edge_id) != (current.edge_endpoint, current.edge_id):
                self._move = a
            elif a.placement_version > current.placement_version:
                current.placement_version = a.placement_version  # the same edge under a newer placement
            self.placement_version = max(self.placement_version, a.placement_version)
            self._seen.notify_all()
            if self._move is not None:
                self._moved.set()

    def wait_for_tasks(self, count: int, timeout_s: float = 30.0) -> bool:
        """Block until ``count`` campaign tasks (in all) reached this agent."""
        with self._lock:
            return self._seen.wait_for(lambda: len(self._tasks_seen) >= count, timeout_s)

    def wait_for_placement(self, version: int, timeout_s: float = 30.0) -> bool:
        """Block until the cloud's placement ``version`` (or a later one) reached this agent."""
        with self._lock:
            return self._seen.wait_for(lambda: self.placement_version >= version, timeout_s)

    def _switch(self) -> None:
        with self._lock:
            a, self._move = self._move, None
            self._moved.clear()
        old = self.core.assignment
        self.core.assignment = dataclasses.replace(old, edge_endpoint=a.edge_endpoint, edge_id=a.edge_id,
                                                   placement_version=a.placement_version)
        if self.edge_channel:
            self.edge_channel.close()
        self.edge_channel = grpc.insecure_channel(a.edge_endpoint, options=self._options)
        self.moves += 1
        self.edges_used.append(a.edge_id)
        log.info("[DeviceAgent] %s moves from edge %s to %s (%s)", old.device_id, old.edge_id, a.edge_id, a.edge_endpoint)

    def report_location(self, position: Position) -> Assignment:
        """Tell the cloud where the device is; a move in the reply is followed like a watched one."""
        a = self.core.assignment
        reply = serde.assignment_from_pb(self.cloud.ReportLocation(
            serde.location_to_pb(LocationReport(a.device_id, a.token, position)), timeout=30))
        self.position = position
        if self.cfg.follow:
            self._offer(reply)
        return reply

    def close(self) -> None:
        self._closing.set()
        if self._watch_call is not None:
            self._watch_call.cancel()
        if self._watcher is not None:
            self._watcher.join(10)
        if self.edge_channel:
            self.edge_channel.close()
        self.cloud_channel.close()
        if self._tmp:
            self._tmp.cleanup()

    # --- streaming -----------------------------------------------------------------------------

    def run(self, samples: Iterable[tuple[np.ndarray, int | None]]) -> list[FrameOutcome]:
        """Stream every sample; one outcome per frame, in frame order.

        Between frames the agent follows its assignment: when the cloud names another edge node, it
        stops sending on the current stream, lets it answer what is in flight, and goes on at the new
        edge. Frames left unanswered by a broken stream are resent on the next one (after waiting up
        to ``failover_wait_s`` for the cloud to name a new edge; ``retries`` bounds the breaks on one
        edge); duplicate answers are dropped.
        """
        assert self.edge_channel
        window = threading.Semaphore(self.cfg.max_in_flight)
        sent: dict[int, tuple[object, float, int | None, int]] = {}  # frame id -> (pb frame, sent at, label, raw bytes)
        done: dict[int, FrameOutcome] = {}
        source = iter(samples)
        exhausted = threading.Event()

        def requests(resend: list) -> Iterator:
            yield from resend
            while True:
                window.acquire()
                if self._move is not None:  # switch edges between frames
                    window.release()
                    return
                try:
                    image, label = next(source)
                except StopIteration:
                    window.release()
                    exhausted.set()
                    return
                if self.trace and len(sent) % self.cfg.trace_every == 0 and len(sent):
                    self.report_location(self.trace[(len(sent) // self.cfg.trace_every) % len(self.trace)])
                with self._lock:
                    task = self._tasks.popleft() if self._tasks else None
                frame, t_sent = self.core.make_frame(image, task, self.sensor.read(task) if task else 0.0)
                self.tasks_done += task is not None
                msg = serde.frame_to_pb(frame)
                sent[frame.frame_id] = (msg, t_sent, label, int(image.nbytes))
                self.metrics.hop_bytes.labels("device", "device_to_edge").inc(msg.ByteSize())
                yield msg

        attempts = 0
        resend: list = []
        while True:
            stub = pb_grpc.EdgeNodeStub(self.edge_channel)
            try:
                for msg in stub.Stream(requests(resend)):
                    result = serde.result_from_pb(msg)
                    if result.frame_id in done or result.frame_id not in sent:
                        self.core.duplicates += 1
                        continue
                    _, t_sent, label, raw = sent[result.frame_id]
                    latency = time.perf_counter() - t_sent
                    done[result.frame_id] = FrameOutcome(result.frame_id, label, raw, latency, result)
                    self.metrics.frame(result.ok, None if result.ok else result.error.status)
                    self.metrics.stage_seconds.labels("device", "end_to_end").observe(latency)
                    window.release()
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE:
                    raise
                unanswered = len(sent) - len(done)
                log.warning("[DeviceAgent] edge stream broke (%s); %d frames unanswered", e.code().name, unanswered)
                if not (self.cfg.follow and self._moved.wait(self.cfg.failover_wait_s)):
                    attempts += 1
                    if attempts > self.cfg.retries:
                        raise
            if exhausted.is_set() and len(done) == len(sent):
                break
            if self._move is not None:
                self._switch()
                attempts = 0
            resend = [sent[i][0] for i in sorted(sent) if i not in done]
            if resend:
                log.warning("[DeviceAgent] resending %d frames", len(resend))
        missing = [i for i in sent if i not in done]
        if missing:
            raise EcdError(f"{len(missing)} frames got no result (first: {missing[:5]})")
        return [done[i] for i in sorted(done)]

    def report(self, outcomes: list[FrameOutcome]) -> RunReport:
        report = self.core.report(outcomes)
        report.moves = self.moves
        return report


def run_agent(cfg: AgentConfig, on_ready: Callable[[dict], None] | None = None) -> RunReport:
    """The ``ecd device-agent`` job: register, stream ``cfg.frames`` samples from ``cfg.source``,
    and return the report. ``on_ready`` gets the agent's identity and bound metrics port once it
    has registered. A refusal or an unreachable peer is an :class:`~ecd.errors.EcdError` whose
    message starts with the gRPC status name."""
    agent = DeviceAgent(cfg)
    try:
        agent.connect()
        metrics_port = -1
        if cfg.metrics_port >= 0:
            metrics_port = start_metrics(agent.metrics.registry, cfg.metrics_host, cfg.metrics_port)
        if on_ready is not None:
            on_ready({"ready": "device-agent", "device_id": agent.assignment.device_id, "metrics_port": metrics_port})
        samples = open_source(cfg.source, cfg.model, agent.manifest.input, cfg.frames)
        return agent.report(agent.run(samples))
    except grpc.RpcError as e:
        raise EcdError(f"{e.code().name}: {e.details()}") from None
    except grpc.FutureTimeoutError:
        raise UnavailableError(f"--cloud: no cloud server answers at {cfg.cloud}") from None
    finally:
        agent.close()
