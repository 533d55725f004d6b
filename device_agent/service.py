"""The device agent's gRPC face: fetch the lower blocks, register, open the edge stream, stream the
frames the core makes (resending what a broken stream left unanswered), collect results.

Thin over :class:`~device_agent.core.AgentCore`, which chooses the split, makes frames and writes
the report; messages are converted by :mod:`ecd.transport.serde`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import grpc
import numpy as np

from device_agent.core import AgentCore, FrameOutcome, RunReport
from device_agent.sources import open_source
from ecd import distribution
from ecd.config import MiB, option
from ecd.errors import EcdError, UnavailableError
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics, start_metrics
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences
from ecd.transport import serde
from ecd.transport.rpc import TransportConfig, grpc_options
from ecd.types import Assignment, DeviceRegistration, Encoding, Frame, PartitionRequest, Result
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
    report: str = option("", "write the run's report as JSON to this file")
    max_message_bytes: int = option(64 * MiB, "gRPC max message size, bytes")
    retries: int = option(3, "times a broken edge stream is reopened (unanswered frames are resent)")


class DeviceAgent:
    def __init__(self, cfg: AgentConfig):
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
        )
        reply = self.cloud.RegisterDevice(serde.registration_to_pb(registration), timeout=timeout_s)
        assignment = serde.assignment_from_pb(reply)
        self.core.registered(manifest, assignment)
        self.edge_channel = grpc.insecure_channel(assignment.edge_endpoint, options=self._options)
        log.info("[DeviceAgent] %s registered as %s: split %d, edge %s", self.cfg.name, assignment.device_id,
                 assignment.split.device, assignment.edge_endpoint)
        return assignment

    def close(self) -> None:
        if self.edge_channel:
            self.edge_channel.close()
        self.cloud_channel.close()
        if self._tmp:
            self._tmp.cleanup()

    # --- streaming -----------------------------------------------------------------------------

    def make_frame(self, image: np.ndarray) -> tuple[Frame, float]:
        return self.core.make_frame(image)

    def stream_frames(self, frames: Iterable[Frame]) -> Iterator[Result]:
        """Send prepared frames on one edge stream; yield results as they come (for tests)."""
        assert self.edge_channel
        for msg in pb_grpc.EdgeNodeStub(self.edge_channel).Stream(serde.frame_to_pb(f) for f in frames):
            yield serde.result_from_pb(msg)

    def run(self, samples: Iterable[tuple[np.ndarray, int | None]]) -> list[FrameOutcome]:
        """Stream every sample; one outcome per frame, in frame order. Frames left unanswered by a
        broken stream are resent on a new one (up to ``retries`` times); duplicates are dropped."""
        assert self.edge_channel
        stub = pb_grpc.EdgeNodeStub(self.edge_channel)
        window = threading.Semaphore(self.cfg.max_in_flight)
        sent: dict[int, tuple[object, float, int | None, int]] = {}  # frame id -> (pb frame, sent at, label, raw bytes)
        done: dict[int, FrameOutcome] = {}
        source = iter(samples)

        def requests(resend: list) -> Iterator:
            yield from resend
            for image, label in source:
                window.acquire()
                frame, t_sent = self.core.make_frame(image)
                msg = serde.frame_to_pb(frame)
                sent[frame.frame_id] = (msg, t_sent, label, int(image.nbytes))
                self.metrics.hop_bytes.labels("device", "device_to_edge").inc(msg.ByteSize())
                yield msg

        attempts = 0
        resend: list = []
        while True:
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
                break
            except grpc.RpcError as e:
                if e.code() not in RETRYABLE or attempts >= self.cfg.retries:
                    raise
                attempts += 1
                resend = [sent[i][0] for i in sorted(sent) if i not in done]
                log.warning("[DeviceAgent] edge stream broke (%s); resending %d frames (attempt %d)", e.code().name, len(resend), attempts)
        missing = [i for i in sent if i not in done]
        if missing:
            raise EcdError(f"{len(missing)} frames got no result (first: {missing[:5]})")
        return [done[i] for i in sorted(done)]

    def report(self, outcomes: list[FrameOutcome]) -> RunReport:
        return self.core.report(outcomes)


def run_agent(cfg: AgentConfig) -> RunReport:
    """The ``ecd device-agent`` job: register, stream ``cfg.frames`` samples from ``cfg.source``,
    and return the report. A refusal or an unreachable peer is an :class:`~ecd.errors.EcdError`
    whose message starts with the gRPC status name."""
    agent = DeviceAgent(cfg)
    try:
        agent.connect()
        if cfg.metrics_port >= 0:
            start_metrics(agent.metrics.registry, "127.0.0.1", cfg.metrics_port)
        samples = open_source(cfg.source, cfg.model, agent.manifest.input, cfg.frames)
        return agent.report(agent.run(samples))
    except grpc.RpcError as e:
        raise EcdError(f"{e.code().name}: {e.details()}") from None
    except grpc.FutureTimeoutError:
        raise UnavailableError(f"--cloud: no cloud server answers at {cfg.cloud}") from None
    finally:
        agent.close()
