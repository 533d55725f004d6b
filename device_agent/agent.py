"""The device agent: the parts wired together — fetch the lower blocks, register (or come back as
the state file's device), then stream — and ``run_agent``, the ``ecd device-agent`` job.

Where each behaviour lives: the options in ``config``; the split decision, frames and the report in
``core``; the stream (sending, results, failover, resend, moves and re-splits between two streams)
as a state machine in ``stream``, the frames it holds in ``inflight``, what other threads ask of it
in ``requests``; following the cloud's word on the assignment in ``follow``; the user's preference
changes in ``preferences``; the measured link and energy, and the live re-split they may ask for, in
``link``, ``energy`` and ``adapt``; what the panel shows in ``status``; the samples and the sensor in
``sources``; the wire (gRPC) in ``service``, behind the two peers of ``peers``.
"""

from __future__ import annotations

import json
import math
import logging
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from device_agent.adapt import Adaptation
from device_agent.config import AgentConfig, packing, parse_sensors, read_trace
from device_agent.core import AgentCore, FrameOutcome, RunReport, SavedIdentity, Tally
from device_agent.follow import AssignmentFollower
from device_agent.peers import EdgePeer, PeerDown
from device_agent.preferences import PreferenceControl
from device_agent.requests import AgentRequests
from device_agent.service import GrpcCloud, GrpcEdge
from device_agent.sources import SimulatedSensor, open_source
from device_agent.status import AgentStatus
from device_agent.stream import StreamLoop
from ecd import distribution
from ecd.errors import ConfigError, EcdError, PeerError
from ecd.leakage import check_level, level_model
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics, metrics_tls, start_metrics
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, SplitDecision
from ecd.transport import tls as tls_
from ecd.transport.rpc import TransportConfig, grpc_options
from ecd.transport.targets import client_target
from ecd.types import Assignment, DeviceRegistration, Encoding, Frame, LocationReport, Position, PreferencesUpdate, Result

log = logging.getLogger("ecd.agent")

RETRIED_REGISTRATION = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")  # refusals for now: a rate limit, a cloud out of reach
REGISTER_BACKOFF_S = (0.5, 8.0)  # the first wait, and the longest (each doubles the last, with jitter)

__all__ = ["AgentConfig", "AgentStatus", "DeviceAgent", "FrameOutcome", "RunReport", "run_agent"]


class DeviceAgent:
    def __init__(self, cfg: AgentConfig):
        if cfg.trace_every < 1:
            raise ConfigError(f"--trace-every: expected >= 1, got {cfg.trace_every}")
        for name in ("answer_deadline_s", "register_retry_s"):  # NaN or < 0 would silently abandon every stream
            if not (math.isfinite(getattr(cfg, name)) and getattr(cfg, name) >= 0):
                raise ConfigError(f"--{name.replace('_', '-')}: expected a finite number of seconds >= 0, got {getattr(cfg, name)}")
        parse_sensors(cfg.sensors)  # a bad option fails before anything starts
        self.packing = packing(cfg)
        if cfg.adapt and cfg.split >= 0:
            raise ConfigError("--adapt: the split is pinned with --split; adapting would override the user's choice")
        if Encoding.parse(cfg.encoding, "--encoding") is Encoding.UINT8:
            raise ConfigError("--encoding: uint8 is the raw image, sent by itself at split 0; choose the activations' "
                              "encoding: float32, float16 or int8")
        if cfg.panel_port >= 0 and not tls_.is_loopback(cfg.panel_host) and not cfg.insecure:
            raise ConfigError(f"--panel-host: {cfg.panel_host} is not a loopback address; the panel is plain HTTP and steers "
                              "this device's privacy: keep it on loopback, or force it with --insecure")
        self.trace = read_trace(cfg.trace) if cfg.trace else []
        self.position = Position.parse(cfg.position, "--position") or (self.trace[0] if self.trace else None)
        self.cfg = cfg
        w_e = cfg.w_energy if cfg.w_energy >= 0 else 1.0 - cfg.w_privacy
        self.core = AgentCore(cfg.name, Preferences(w_e, cfg.w_privacy, cfg.min_split, cfg.max_accuracy_loss),
                              Encoding.parse(cfg.encoding), load_device(cfg.profile), load_radio(cfg.radio),
                              ServiceMetrics("device"))
        self.metrics = self.core.metrics
        self._tmp = None if cfg.model_dir else tempfile.TemporaryDirectory(prefix="ecd-agent-")
        self.model_dir = Path(cfg.model_dir or self._tmp.name)
        self._options = grpc_options(TransportConfig(max_message_bytes=cfg.max_message_bytes))
        self.tls = tls_.load(cfg.tls_dir, cfg.tls_name)
        self.cloud = GrpcCloud(client_target(cfg.cloud, self.tls, cfg.insecure, "--cloud"), self.tls, self._options,
                               cfg.call_timeout_s)
        self.edge: EdgePeer | None = None
        self.sensor = SimulatedSensor(cfg.sensor_seed, cfg.corrupt_reports)
        self.tally = Tally()
        self._stop = threading.Event()
        self.follower = AssignmentFollower(self.core, self.cloud)
        self.loop: StreamLoop | None = None
        self.preferences = PreferenceControl(self.core, self.cloud, cfg.split, self.model_dir, cfg.max_message_bytes,
                                             streaming=lambda: self.loop is not None and self.loop.streaming)
        self.moves = 0  # times the device followed its assignment to another edge node
        self.adaptation = Adaptation(self.core, self.preferences.request, self.metrics, cfg.adapt, cfg.fps, cfg.adapt_slack,
                                     cfg.adapt_margin, cfg.adapt_dwell_s)
        self._probe_stop = threading.Event()

    @property
    def assignment(self) -> Assignment | None:
        return self.core.assignment

    @property
    def manifest(self) -> Manifest | None:
        return self.core.manifest

    # --- set-up --------------------------------------------------------------------------------

    def connect(self, timeout_s: float = 30.0) -> Assignment:
        """Fetch the manifest, decide the split, fetch blocks [0, split.device), register (or, with a
        state file, come back as the same device), open the edge."""
        self.cloud.wait_ready(timeout_s)
        head = self.cloud.fetch(distribution.request(self.cfg.model, "", 0, 0, self.cfg.max_message_bytes), self.model_dir / self.cfg.model)
        split_device = self.core.decide(head, self.cfg.split)
        run, self.core.level = level_model(head, self.core.decision.strength_at(split_device))  # a learned level: its model
        if run != head.model_id:
            head = check_level(head, self.core.level, self.cloud.fetch(distribution.request(run, "", 0, 0, self.cfg.max_message_bytes), self.model_dir / run))
        if self.core.level is not None:  # the decision's curve is the level's it runs, not the best of all levels
            self.core.decision, _ = self.preferences.decide(self.core.prefs)
        fetch = head.n_blocks if self.cfg.adapt else split_device  # adapting: every block while the link is fast
        manifest = self.cloud.fetch(distribution.request(run, head.version, 0, fetch, self.cfg.max_message_bytes), self.model_dir / run)
        self.preferences.fetched = fetch
        assignment = self._come_back(manifest, split_device) or self._register(manifest, split_device)
        if self.cfg.state:
            SavedIdentity(assignment.device_id, assignment.token, self.cfg.cloud, manifest.model_id, manifest.version).write(self.cfg.state)
        self.core.registered(manifest, assignment)
        self.follower.offer(assignment)
        self.edge = GrpcEdge(assignment, self.tls, self._options, self.cfg.insecure, self.metrics, self.packing.on)
        self.loop = StreamLoop(self.cfg, self.edge, AgentRequests(self._stop, self.follower, self.preferences, self._move),
                               self._make_frames, self.metrics, self.tally,
                               on_answer=self.adaptation.answered)
        if self.cfg.adapt:
            self.adaptation.start_probe(lambda: self.loop.edge.probe(), self._probe_stop, self.cfg.probe_every_s)
        if self.cfg.follow:
            self.follower.start_watch()
        log.info("[DeviceAgent] %s registered as %s: split %d, edge %s", self.cfg.name, assignment.device_id,
                 assignment.split.device, assignment.edge_endpoint)
        return assignment

    def _register(self, manifest: Manifest, split_device: int) -> Assignment:
        """Register; a refusal for now (the cloud's rate limit, or the cloud out of reach) is retried
        with backoff and jitter for ``register_retry_s``, a stop ending the wait."""
        profile_path = Path(self.cfg.profile)
        request = DeviceRegistration(
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
        deadline = time.monotonic() + self.cfg.register_retry_s
        backoff_s = REGISTER_BACKOFF_S[0]
        while True:
            try:
                return self.cloud.register(request)
            except (PeerError, PeerDown) as e:
                status = e.status if isinstance(e, PeerError) else "UNAVAILABLE"
                wait_s = backoff_s * random.uniform(0.5, 1.0)
                if status not in RETRIED_REGISTRATION or time.monotonic() + wait_s > deadline:
                    raise
                log.warning("[DeviceAgent] registration refused for now (%s): again in %.1f s", e, wait_s)
                if self._stop.wait(wait_s):
                    raise
                backoff_s = min(backoff_s * 2, REGISTER_BACKOFF_S[1])

    def _come_back(self, manifest: Manifest, split_device: int) -> Assignment | None:
        """The state file's device, with this run's weights and split; None when there is no state
        file, it names another cloud or model version, or the cloud no longer knows the device."""
        known = SavedIdentity.read(self.cfg.state) if self.cfg.state else None
        if known is None:
            return None
        if (known.cloud, known.model_id, known.model_version) != (self.cfg.cloud, manifest.model_id, manifest.version):
            log.info("[DeviceAgent] %s was registered for %s@%s at %s: registering again", known.device_id,
                     known.model_id, known.model_version, known.cloud)
            return None
        try:
            a = self.cloud.update_preferences(PreferencesUpdate(known.device_id, known.token, self.core.prefs, split_device))
        except PeerError as e:
            if e.status not in ("UNAUTHENTICATED", "NOT_FOUND"):
                raise
            log.warning("[DeviceAgent] the cloud no longer knows device %s (%s): registering again", known.device_id, e.status)
            return None
        log.info("[DeviceAgent] %s is back as %s", self.cfg.name, a.device_id)
        if self.position is not None:
            a = self.cloud.report_location(LocationReport(a.device_id, a.token, self.position))
        return a

    # --- streaming -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask a running :meth:`run` to finish: no new frame is sent, the ones in flight get up to
        ``drain_s`` to be answered (SIGTERM does this)."""
        self._stop.set()

    def run(self, samples: Iterable[tuple[np.ndarray, int | None]], keep: bool = True) -> list[FrameOutcome]:
        """Stream every sample (until :meth:`stop`); returns one outcome per frame in frame order
        (or none, ``keep=False``: a long-running agent keeps only :attr:`tally`). The state machine
        and its guarantees (each result once, moves and re-splits between two streams, failover
        with resend, giving up after ``failover_wait_s``) are :mod:`device_agent.stream`'s."""
        assert self.loop is not None, "run before connect"
        try:
            return self.loop.run(samples, keep)
        finally:
            self.preferences.apply_pending()  # asked for as the stream ended: nothing is in flight

    def _make_frames(self, images: list[np.ndarray]) -> list[Frame | Result]:
        """A message's samples as frames, the device blocks run on them as one call: a trace step
        reported every ``trace_every`` frames; the next campaign task, if any, answered with the sensor's reading."""
        tasks = []
        for n_made in range(self.core.next_frame_id - 1, self.core.next_frame_id - 1 + len(images)):
            if self.trace and n_made % self.cfg.trace_every == 0 and n_made:
                try:
                    self.report_location(self.trace[(n_made // self.cfg.trace_every) % len(self.trace)])
                except EcdError as e:  # the cloud may be restarting: the next step reports again
                    log.warning("[DeviceAgent] location report failed (%s)", e)
            task = self.follower.next_task()
            tasks.append((task, self.sensor.read(task) if task else 0.0))
        return self.core.make_frames(images, tasks)

    def _move(self) -> EdgePeer:
        """Switch to the edge the pending move names (the stream loop calls this between streams)."""
        a = self.follower.take_move()
        assert a is not None and self.edge is not None
        old = self.core.moved_to(a)
        self.edge.close()
        self.edge = GrpcEdge(a, self.tls, self._options, self.cfg.insecure, self.metrics, self.packing.on)
        self.moves += 1
        log.info("[DeviceAgent] %s moves from edge %s to %s (%s)", old.device_id, old.edge_id, a.edge_id, a.edge_endpoint)
        return self.edge

    # --- following the assignment ------------------------------------------------------------------

    def report_location(self, position: Position) -> Assignment:
        """Tell the cloud where the device is; a move in the reply is followed like a watched one."""
        a = self.core.assignment
        assert a is not None
        reply = self.cloud.report_location(LocationReport(a.device_id, a.token, position))
        self.position = position
        if self.cfg.follow:
            self.follower.offer(reply)
        return reply

    def wait_for_tasks(self, count: int, timeout_s: float = 30.0) -> bool:
        return self.follower.wait_for_tasks(count, timeout_s)

    def wait_for_placement(self, version: int, timeout_s: float = 30.0) -> bool:
        return self.follower.wait_for_placement(version, timeout_s)

    # --- the user's preferences (the control panel) ------------------------------------------------

    def check_preferences(self, w_privacy: float | None = None, min_split: int | None = None) -> Preferences:
        return self.preferences.check(w_privacy, min_split)

    def decide(self, prefs: Preferences) -> tuple[SplitDecision, int]:
        return self.preferences.decide(prefs)

    def change_preferences(self, w_privacy: float | None = None, min_split: int | None = None) -> int:
        """Take the user's new weight and floor; returns the split the device sends at from now on
        (:meth:`device_agent.preferences.PreferenceControl.change`)."""
        return self.preferences.change(w_privacy, min_split)

    # --- what the outside sees ---------------------------------------------------------------------

    def status(self) -> AgentStatus:
        a, loop, live = self.core.assignment, self.loop, self.tally.snapshot()
        pending = self.preferences.pending
        return AgentStatus(
            state=loop.state.value if loop else "idle", why=loop.why if loop else "", streaming=bool(loop and loop.streaming),
            device_id=a.device_id if a else "", edge_id=a.edge_id if a else "", edge_endpoint=a.edge_endpoint if a else "",
            split=a.split.device if a else -1, pending_split=pending.split if pending else None,
            sent=loop.sent if loop else 0, answered=live["answered"], errors=live["errors"],
            in_flight=len(loop.in_flight) if loop else 0, duplicates_dropped=loop.duplicates if loop else 0,
            moves=self.moves, resplits=self.preferences.resplits, placement_version=self.follower.placement_version,
            tasks_seen=len(self.follower.tasks_seen), tasks_done=self.follower.tasks_done,
            preferences_error=self.preferences.error, stop_asked=self.stopping)

    def report(self, outcomes: list[FrameOutcome] | None = None, exit: str = "completed") -> RunReport:
        """The run's report: over ``outcomes`` when given, else over everything this agent answered."""
        status = self.status()
        report = self.core.report(self.tally if outcomes is None else outcomes, duplicates=status.duplicates_dropped)
        report.moves = status.moves
        report.resplits = status.resplits
        if outcomes is None:
            report.sent = status.sent
            report.lost = status.in_flight
        report.exit = exit
        self.adaptation.fill(report, self.preferences.split_changes)
        return report

    def close(self) -> None:
        self._probe_stop.set()
        self.follower.close()
        if self.edge is not None:
            self.edge.close()
        self.cloud.close()
        if self._tmp:
            self._tmp.cleanup()


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
            metrics_port = start_metrics(agent.metrics.registry, cfg.metrics_host, cfg.metrics_port, *metrics_tls(cfg))
        if cfg.panel_port >= 0:
            panel = start_panel(agent, cfg)
        if on_ready is not None:
            on_ready({"ready": "device-agent", "device_id": agent.assignment.device_id, "metrics_port": metrics_port,
                      "panel_url": panel.url if panel else ""})
        samples = open_source(cfg.source, cfg.model, agent.manifest.input, cfg.frames)
        agent.run(samples, keep=False)
        exit_reason = "stopped" if agent.stopping else "completed"
        return agent.report(exit=exit_reason)
    except PeerDown as e:  # a peer out of reach: the message starts with UNAVAILABLE
        exit_reason = str(e)
        raise
    except PeerError as e:  # a peer's refusal: the message starts with its status
        exit_reason = str(e)
        raise EcdError(exit_reason) from None
    except BaseException as e:
        exit_reason = str(e) or type(e).__name__
        raise
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
        if cfg.report:  # a run that never registered too: its exit says why
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
