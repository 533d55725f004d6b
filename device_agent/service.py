"""The device agent's gRPC face: fetch the lower blocks, register, open the edge stream, stream the
frames the core makes (resending what a broken stream left unanswered), collect results.

Thin over :class:`~device_agent.core.AgentCore`, which chooses the split, makes frames and writes
the report; messages are converted by :mod:`ecd.transport.serde`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import signal
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import grpc
import numpy as np

from device_agent.core import AgentCore, FrameOutcome, Identity, RunReport, SimulatedSensor, Tally
from device_agent.sources import open_source
from ecd import distribution
from ecd.transport import tls as tls_
from ecd.config import MiB, option
from ecd.errors import ConfigError, EcdError, PeerError, PreconditionError, RequestError, UnavailableError
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics, start_metrics
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, SplitDecision, decide_split
from ecd.transport import serde
from ecd.transport.rpc import TransportConfig, grpc_options
from ecd.types import (PROTOCOL_REVISION, Assignment, DeviceRegistration, Encoding, LocationReport, PartitionRequest,
                       Position, PreferencesUpdate, Task)
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
    frames: int = option(200, "how many frames to stream (0 = until SIGTERM: a long-running agent)")
    fps: float = option(0.0, "frames per second to send (0 = as fast as max_in_flight allows)")
    state: str = option("", "a file keeping this device's identity (id and token) across restarts, created 0600 (empty = a new device each run)")
    max_in_flight: int = option(8, "frames sent but not yet answered")
    model_dir: str = option("", "where fetched partitions are kept (default: a temporary folder)")
    metrics_port: int = option(-1, "Prometheus port (-1 = off, 0 = any free port)")
    metrics_host: str = option("127.0.0.1", "address the Prometheus endpoint listens on")
    report: str = option("", "write the run's report as JSON to this file")
    max_message_bytes: int = option(64 * MiB, "gRPC max message size, bytes")
    call_timeout_s: float = option(10.0, "deadline of each call to the cloud (registration, assignment, location), seconds")
    drain_s: float = option(10.0, "on SIGTERM, how long to wait for the answers to frames in flight, seconds")
    position: str = option("", "where the device is, LAT,LON in degrees (placement uses it; empty = unknown)")
    trace: str = option("", "a CSV of positions (lat,lon per line) the device walks through, one step per --trace-every frames")
    trace_every: int = option(20, "frames between two location reports when replaying --trace")
    follow: bool = option(True, "watch the assignment and move to the edge node placement names")
    failover_wait_s: float = option(60.0, "how long to go on without any edge node answering (asking the cloud for a new one, with backoff) before giving up, seconds")
    sensor_seed: int = option(0, "seed of the simulated sensor whose readings answer campaign tasks")
    corrupt_reports: bool = option(False, "misbehave: send biased, noisy readings (to see CrowdPower catch it)")
    tls_dir: str = option("", "folder written by `ecd certs init`: ca.pem and this holder's NAME.pem/NAME.key (empty = plaintext, loopback only)")
    tls_name: str = option("device-1", "which certificate in tls_dir is this holder's (NAME.pem, NAME.key)")
    allow_plaintext: bool = option(False, "force plaintext on a non-loopback address (anyone on the network can then read and forge traffic)")
    panel_port: int = option(-1, "the control panel's HTTP port: the user's energy/privacy curve and a privacy slider that re-splits the running device (-1 = off, 0 = any free port)")
    panel_host: str = option("127.0.0.1", "address the control panel listens on (loopback: only this device's user; another address needs --allow-plaintext, as the panel has no TLS)")
    sensors: str = option("", "the phone's sensor benchmark scores for site selection, NAME=SCORE,... with scores 0..10 (e.g. temperature=7.5,camera=9)")


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


def parse_sensors(text: str) -> dict[str, float]:
    """``temperature=7.5,camera=9`` as a dict (the cloud checks names and ranges)."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, score = item.partition("=")
        try:
            out[name.strip()] = float(score)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--sensors: expected NAME=SCORE,..., got {item!r}")
    return out


class DeviceAgent:
    def __init__(self, cfg: AgentConfig):
        if cfg.trace_every < 1:
            raise ConfigError(f"--trace-every: expected >= 1, got {cfg.trace_every}")
        parse_sensors(cfg.sensors)  # a bad option fails before anything starts
        if Encoding.parse(cfg.encoding, "--encoding") is Encoding.UINT8:
            raise ConfigError("--encoding: uint8 is the raw image, sent by itself at split 0; choose the activations' "
                              "encoding: float32, float16 or int8")
        if cfg.panel_port >= 0 and not tls_.is_loopback(cfg.panel_host) and not cfg.allow_plaintext:
            raise ConfigError(f"--panel-host: {cfg.panel_host} is not a loopback address; the panel is plain HTTP and steers "
                              "this device's privacy: keep it on loopback, or force it with --allow-plaintext")
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
        self.tls = tls_.load(cfg.tls_dir, cfg.tls_name)
        tls_.check_plaintext(self.tls, tls_.host_of(cfg.cloud), cfg.allow_plaintext, "--cloud")
        self.cloud_channel = tls_.channel(cfg.cloud, self.tls, "cloud", self._options)
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
        self.tally = Tally()
        self.tally_sent = 0
        self._unanswered: dict = {}
        self._stopping = threading.Event()
        self.streaming = False
        self._prefs_lock = threading.Lock()  # one preferences change at a time (the panel's threads)
        self._resplit: tuple[Preferences, SplitDecision, int] | None = None  # applied between two streams
        self.resplits = 0
        self.preferences_error = ""  # why the last preferences change was not applied (shown on the panel)

    def _edge_channel(self, endpoint: str) -> grpc.Channel:
        """A channel to the edge node the cloud named; under TLS it must hold an *edge* certificate
        of this deployment's CA (a node that merely registered an address gets no frame)."""
        tls_.check_plaintext(self.tls, tls_.host_of(endpoint), self.cfg.allow_plaintext, "edge_endpoint")
        return tls_.channel(endpoint, self.tls, "edge", self._options)

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
        """Fetch the manifest, choose the split, fetch blocks [0, split.device), register (or, with a
        state file, come back as the same device), open the edge."""
        grpc.channel_ready_future(self.cloud_channel).result(timeout=timeout_s)
        dest = self.model_dir / self.cfg.model
        head = self._fetch(distribution.request(self.cfg.model, "", 0, 0, self.cfg.max_message_bytes), dest)
        split_device = self.core.choose_split(head, self.cfg.split)
        manifest = self._fetch(distribution.request(self.cfg.model, head.version, 0, split_device, self.cfg.max_message_bytes), dest)
        assignment = self._come_back(manifest, split_device)
        if assignment is None:
            assignment = self._register(manifest, split_device)
        if self.cfg.state:
            Identity(assignment.device_id, assignment.token, self.cfg.cloud, manifest.model_id, manifest.version).write(self.cfg.state)
        self.core.registered(manifest, assignment)
        self.placement_version = assignment.placement_version
        self._offer(assignment)
        self.edge_channel = self._edge_channel(assignment.edge_endpoint)
        self.edges_used.append(assignment.edge_id)
        if self.cfg.follow:
            self._watcher = threading.Thread(target=self._watch, name="ecd-agent-watch", daemon=True)
            self._watcher.start()
        log.info("[DeviceAgent] %s registered as %s: split %d, edge %s", self.cfg.name, assignment.device_id,
                 assignment.split.device, assignment.edge_endpoint)
        return assignment

    def _register(self, manifest: Manifest, split_device: int) -> Assignment:
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
            sensors=parse_sensors(self.cfg.sensors),
        )
        reply = self.cloud.RegisterDevice(serde.registration_to_pb(registration), timeout=self.cfg.call_timeout_s)
        return serde.assignment_from_pb(reply)

    def _come_back(self, manifest: Manifest, split_device: int) -> Assignment | None:
        """The state file's device, with this run's weights and split; None when there is no state
        file, it names another cloud or model version, or the cloud no longer knows the device."""
        known = Identity.read(self.cfg.state) if self.cfg.state else None
        if known is None:
            return None
        if (known.cloud, known.model_id, known.model_version) != (self.cfg.cloud, manifest.model_id, manifest.version):
            log.info("[DeviceAgent] %s was registered for %s@%s at %s: registering again", known.device_id,
                     known.model_id, known.model_version, known.cloud)
            return None
        update = PreferencesUpdate(known.device_id, known.token, self.core.prefs, split_device)
        try:
            reply = self.cloud.UpdatePreferences(serde.update_to_pb(update), timeout=self.cfg.call_timeout_s)
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                raise
            log.warning("[DeviceAgent] the cloud no longer knows device %s (%s): registering again", known.device_id, e.code().name)
            return None
        a = serde.assignment_from_pb(reply)
        log.info("[DeviceAgent] %s is back as %s", self.cfg.name, a.device_id)
        if self.position is not None:
            a = serde.assignment_from_pb(self.cloud.ReportLocation(
                serde.location_to_pb(LocationReport(a.device_id, a.token, self.position)), timeout=self.cfg.call_timeout_s))
        return a

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
        self.edge_channel = self._edge_channel(a.edge_endpoint)
        self.moves += 1
        self.edges_used.append(a.edge_id)
        log.info("[DeviceAgent] %s moves from edge %s to %s (%s)", old.device_id, old.edge_id, a.edge_id, a.edge_endpoint)

    def report_location(self, position: Position) -> Assignment:
        """Tell the cloud where the device is; a move in the reply is followed like a watched one."""
        a = self.core.assignment
        reply = serde.assignment_from_pb(self.cloud.ReportLocation(
            serde.location_to_pb(LocationReport(a.device_id, a.token, position)), timeout=self.cfg.call_timeout_s))
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

    # --- the user's preferences, changed while the device streams (the control panel) ------------

    def check_preferences(self, w_privacy: float | None = None, min_split: int | None = None) -> Preferences:
        """The preferences a user asks for, checked against this device: ``w_privacy`` in [0, 1]
        (``w_energy`` becomes 1 - w_privacy), ``min_split`` within the model's blocks, never below
        the current floor while a stream runs (a floor is a promise to the user: it is not lowered
        behind a running stream), never above a split pinned with ``--split``."""
        pending = self._resplit
        current = pending[0] if pending is not None else self.core.prefs  # a change not yet applied counts
        n = self.core.manifest.n_blocks if self.core.manifest else None
        if w_privacy is not None and (isinstance(w_privacy, bool) or not isinstance(w_privacy, (int, float))
                                      or not 0.0 <= w_privacy <= 1.0):  # NaN fails the comparison too
            raise RequestError(f"w_privacy: expected a number in [0, 1], got {w_privacy!r}")
        if min_split is not None:
            if isinstance(min_split, bool) or not isinstance(min_split, int) or min_split < 0 or (n is not None and min_split > n):
                raise RequestError(f"min_split: expected an integer in 0..{n} (the model's blocks), got {min_split!r}")
            if self.streaming and min_split < current.min_split:
                raise PreconditionError(f"min_split: the floor can only be raised while the device streams (it is {current.min_split}, "
                                        f"asked {min_split}); stop the agent to lower it")
            if self.cfg.split >= 0 and min_split > self.cfg.split:
                raise PreconditionError(f"min_split: {min_split} is above the split pinned with --split ({self.cfg.split})")
        w = current.w_privacy if w_privacy is None else float(w_privacy)
        return dataclasses.replace(current, w_energy=1.0 - w, w_privacy=w,
                                   min_split=current.min_split if min_split is None else min_split)

    def decide(self, prefs: Preferences) -> tuple[SplitDecision, int]:
        """The utility's curve for ``prefs`` on this device, and the split it would send at (the
        recommended one, or the one pinned with ``--split``)."""
        assert self.core.manifest is not None
        decision = decide_split(self.core.manifest, self.core.profile, self.core.radio, prefs)
        return decision, decision.recommended if self.cfg.split < 0 else self.cfg.split

    def change_preferences(self, w_privacy: float | None = None, min_split: int | None = None) -> int:
        """Take the user's new weight and floor; returns the split the device sends at from now on.

        The cloud is told (``UpdatePreferences``). When the split changes while a stream runs, the
        change is applied between two streams: no new frame is sent, the ones in flight are
        answered at the old split, then the device fetches the blocks it lacks, tells the cloud and
        goes on at the new split — no frame is lost, resent or sent twice (:meth:`run`)."""
        with self._prefs_lock:
            prefs = self.check_preferences(w_privacy, min_split)
            decision, split = self.decide(prefs)
            current = self.core.assignment.split.device
            if self.streaming and (split != current or self._resplit is not None):
                self._resplit = (prefs, decision, split)  # run() picks it up between two frames
                return split
            try:
                self._apply_preferences(prefs, decision, split)
            except grpc.RpcError as e:
                raise PeerError(e.code().name, f"cloud: {e.code().name}: {e.details()}") from None
            return split

    def _apply_preferences(self, prefs: Preferences, decision: SplitDecision, split: int) -> None:
        """Fetch blocks [0, split) if they are not here, tell the cloud, load the new partition."""
        manifest, a = self.core.manifest, self.core.assignment
        assert manifest is not None and a is not None and self.core.partition is not None
        if split > self.core.partition.stop:
            manifest = self._fetch(distribution.request(manifest.model_id, manifest.version, 0, split, self.cfg.max_message_bytes),
                                   self.model_dir / self.cfg.model)
        reply = serde.assignment_from_pb(self.cloud.UpdatePreferences(
            serde.update_to_pb(PreferencesUpdate(a.device_id, a.token, prefs, split)), timeout=self.cfg.call_timeout_s))
        self.core.prefs, self.core.decision = prefs, decision
        self.core.registered(manifest, dataclasses.replace(a, split=reply.split, recommended_split=reply.recommended_split,
                                                           preferences=reply.preferences))
        self.preferences_error = ""
        log.info("[DeviceAgent] %s: w_privacy %.2f, min_split %d: split %d", a.device_id, prefs.w_privacy, prefs.min_split, split)

    def _resplit_now(self) -> None:
        """Apply a pending split change (no frame in flight). If the cloud cannot be told, the device
        goes on at the old split and the panel says why."""
        with self._prefs_lock:
            pending, self._resplit = self._resplit, None
            if pending is None:
                return
            old = self.core.assignment.split.device
            try:
                self._apply_preferences(*pending)
            except grpc.RpcError as e:
                self.preferences_error = f"{e.code().name}: {e.details()}"
                log.warning("[DeviceAgent] preferences not applied (%s); staying at split %d", self.preferences_error, old)
                return
            except EcdError as e:
                self.preferences_error = str(e)
                log.warning("[DeviceAgent] preferences not applied (%s); staying at split %d", e, old)
                return
            self.resplits += self.core.assignment.split.device != old

    # --- streaming -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask a running :meth:`run` to finish: no new frame is sent, the ones in flight get up to
        ``drain_s`` to be answered (SIGTERM does this)."""
        self._stopping.set()

    def run(self, samples: Iterable[tuple[np.ndarray, int | None]], keep: bool = True) -> list[FrameOutcome]:
        """Stream every sample (until :meth:`stop`); returns one outcome per frame in frame order
        (or none, ``keep=False``: a long-running agent keeps only :attr:`tally`).

        Every result reaches the application once: answers to frames already answered are dropped.
        Between frames the agent follows its assignment: when the cloud names another edge node, it
        stops sending on the current stream, lets it answer what is in flight, and goes on at the
        new edge. When a stream breaks, the agent asks the cloud for its assignment (with backoff
        and jitter) until an edge node answers again, and resends every unanswered frame there; it
        gives up after ``failover_wait_s`` without any answer (the frames still unanswered are
        counted as lost in the report). A split change the user asks for (:meth:`change_preferences`)
        is applied the same way: between two streams, with nothing in flight.
        """
        assert self.edge_channel
        self.streaming = True
        try:
            return self._stream(samples, keep)
        finally:
            self.streaming = False
            if self._resplit is not None:  # asked for as the stream ended: nothing is in flight
                self._resplit_now()

    def _stream(self, samples: Iterable[tuple[np.ndarray, int | None]], keep: bool) -> list[FrameOutcome]:
        window = threading.Semaphore(self.cfg.max_in_flight)
        sent: dict[int, tuple[object, float, int | None, int]] = {}  # unanswered: frame id -> (pb frame, sent at, label, raw bytes)
        self._unanswered = sent
        outcomes: list[FrameOutcome] = []
        source = iter(samples)
        exhausted = threading.Event()
        interval = 1.0 / self.cfg.fps if self.cfg.fps > 0 else 0.0
        next_at = time.monotonic()

        def wire(msg: pb.Frame, stream: dict) -> pb.Frame:
            """A stream's first frame complete (it binds the rest), the others compact. The flag is
            the stream's own: a broken stream's request iterator can still be pulled once by its
            sender thread after the next stream has started."""
            if stream["first"]:
                stream["first"] = False
                msg.protocol_revision = PROTOCOL_REVISION
                return msg
            return serde.compact_frame_to_pb(msg)

        current: list[dict] = [{}]  # the stream now open; an older one's iterator makes no more frames

        def requests(resend: list, stream: dict) -> Iterator:
            nonlocal next_at
            for msg in resend:
                yield wire(msg, stream)
            while True:
                while not window.acquire(timeout=0.2):
                    if self._stopping.is_set() or self._move is not None or self._resplit is not None or stream is not current[0]:
                        return
                if self._move is not None or self._resplit is not None or self._stopping.is_set() or stream is not current[0]:
                    window.release()  # switch edges, re-split, or stop: between frames (a frame made for
                    return            # a stream that has ended would go nowhere until the next break)
                if interval and self._stopping.wait(max(0.0, next_at - time.monotonic())):
                    window.release()
                    return
                next_at = max(next_at + interval, time.monotonic() - interval)
                try:
                    image, label = next(source)
                except StopIteration:
                    window.release()
                    exhausted.set()
                    return
                n_sent = self.tally_sent
                if self.trace and n_sent % self.cfg.trace_every == 0 and n_sent:
                    self._report_trace_step(n_sent)
                with self._lock:
                    task = self._tasks.popleft() if self._tasks else None
                frame, t_sent = self.core.make_frame(image, task, self.sensor.read(task) if task else 0.0)
                self.tasks_done += task is not None
                msg = serde.frame_to_pb(frame)
                sent[frame.frame_id] = (msg, t_sent, label, int(image.nbytes))
                self.tally_sent += 1
                out = wire(msg, stream)
                self.metrics.hop_bytes.labels("device", "device_to_edge").inc(out.ByteSize())
                yield out

        resend: list = []
        backoff_s = 0.2
        last_answer = time.monotonic()
        stop_deadline: float | None = None
        while True:
            stub = pb_grpc.EdgeNodeStub(self.edge_channel)
            broke = False
            try:
                current[0] = stream = {"first": True}
                for msg in stub.Stream(requests(resend, stream)):
                    result = serde.result_from_pb(msg)
                    entry = sent.pop(result.frame_id, None)
                    if entry is None:  # answered before (a resent frame answered twice), or never sent
                        self.core.duplicates += 1
                        continue
                    _, t_sent, label, raw = entry
                    latency = time.perf_counter() - t_sent
                    outcome = FrameOutcome(result.frame_id, label, raw, latency, result)
                    self.tally.add(outcome)
                    if keep:
                        outcomes.append(outcome)
                    self.metrics.frame(result.ok, None if result.ok else result.error.status)
                    self.metrics.stage_seconds.labels("device", "end_to_end").observe(latency)
                    window.release()
                    last_answer = time.monotonic()
                    backoff_s = 0.2
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE:
                    raise
                broke = True
                log.warning("[DeviceAgent] edge stream broke (%s: %s); %d frames unanswered", e.code().name, e.details(), len(sent))
            if not sent and (exhausted.is_set() or self._stopping.is_set()):
                break
            now = time.monotonic()
            if self._stopping.is_set():
                stop_deadline = stop_deadline or now + self.cfg.drain_s
                if now > stop_deadline:
                    log.warning("[DeviceAgent] stopping with %d frames unanswered after %.1f s", len(sent), self.cfg.drain_s)
                    break
            if now - last_answer > self.cfg.failover_wait_s:
                raise UnavailableError(
                    f"edge: no edge node answered for {self.cfg.failover_wait_s:g} s (failover_wait_s); {len(sent)} frames unanswered")
            if broke and self._move is None:
                # the cloud's word on a dead edge comes through the watch; ask as well, in case the
                # watch is down too (the cloud restarting), then try whichever edge it names
                if not self._moved.wait(backoff_s * random.uniform(0.5, 1.0)):
                    self._ask_assignment()
                backoff_s = min(backoff_s * 2, 5.0)
            if self._move is not None:
                self._switch()
            if self._resplit is not None and not sent:
                self._resplit_now()
            resend = [sent[i][0] for i in sorted(sent)]
            if resend:
                log.warning("[DeviceAgent] resending %d frames", len(resend))
        if sent and not self._stopping.is_set():
            raise EcdError(f"{len(sent)} frames got no result (first: {sorted(sent)[:5]})")
        outcomes.sort(key=lambda o: o.frame_id)
        return outcomes

    def _report_trace_step(self, n_sent: int) -> None:
        try:
            self.report_location(self.trace[(n_sent // self.cfg.trace_every) % len(self.trace)])
        except grpc.RpcError as e:  # the cloud may be restarting: the next step reports again
            log.warning("[DeviceAgent] location report failed (%s)", e.code().name)

    def _ask_assignment(self) -> None:
        """Ask the cloud where this device should stream now; a new edge is taken like a watched move."""
        a = self.core.assignment
        try:
            reply = self.cloud.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token),
                                             timeout=self.cfg.call_timeout_s)
        except grpc.RpcError as e:
            log.warning("[DeviceAgent] cannot ask the cloud for the assignment (%s)", e.code().name)
            return
        self._offer(serde.assignment_from_pb(reply))

    def report(self, outcomes: list[FrameOutcome] | None = None, exit: str = "completed") -> RunReport:
        """The run's report: over ``outcomes`` when given, else over everything this agent answered."""
        report = self.core.report(self.tally if outcomes is None else outcomes)
        report.moves = self.moves
        report.resplits = self.resplits
        if outcomes is None:
            report.sent = self.tally_sent
            report.lost = len(self._unanswered)
        report.exit = exit
        return report


def run_agent(cfg: AgentConfig, on_ready: Callable[[dict], None] | None = None) -> RunReport:
    """The ``ecd device-agent`` job: register (or come back as the state file's device), stream
    ``cfg.frames`` samples from ``cfg.source`` (without end when 0, until SIGTERM), and return the
    report — written to ``cfg.report`` on every exit, a failure's included. ``on_ready`` gets the
    agent's identity and bound metrics port once it has registered. A refusal or an unreachable
    peer is an :class:`~ecd.errors.EcdError` whose message starts with the gRPC status name."""
    agent = DeviceAgent(cfg)
    restore = None
    if threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    exit_reason = "completed"
    panel = None
    try:
        agent.connect(cfg.call_timeout_s * 3)
        metrics_port = -1
        if cfg.metrics_port >= 0:
            metrics_port = start_metrics(agent.metrics.registry, cfg.metrics_host, cfg.metrics_port)
        if cfg.panel_port >= 0:
            panel = start_panel(agent, cfg)
        if on_ready is not None:
            on_ready({"ready": "device-agent", "device_id": agent.assignment.device_id, "metrics_port": metrics_port,
                      "panel_url": panel.url if panel else ""})
        samples = open_source(cfg.source, cfg.model, agent.manifest.input, cfg.frames)
        agent.run(samples, keep=False)
        exit_reason = "stopped" if agent.stopping else "completed"
        return agent.report(exit=exit_reason)
    except grpc.RpcError as e:
        exit_reason = f"{e.code().name}: {e.details()}"
        raise EcdError(exit_reason) from None
    except grpc.FutureTimeoutError:
        exit_reason = f"UNAVAILABLE: no cloud server answers at {cfg.cloud}"
        raise UnavailableError(f"--cloud: no cloud server answers at {cfg.cloud}") from None
    except BaseException as e:
        exit_reason = str(e) or type(e).__name__
        raise
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        if cfg.report and agent.assignment is not None:
            write_report(cfg.report, agent.report(exit=exit_reason))
        if panel is not None:
            panel.close()
        agent.close()


def start_panel(agent: DeviceAgent, cfg: AgentConfig):
    """The control panel (``device_agent.panel``, imported only when asked for), in its own thread."""
    from device_agent.panel import start_panel as start

    panel = start(agent, cfg.panel_host, cfg.panel_port)
    log.info("[DeviceAgent] control panel at %s", panel.url)
    return panel


def write_report(path: str, report: RunReport) -> None:
    """The report as JSON, written whole (a reader never sees half a file)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2))
    os.replace(tmp, target)
