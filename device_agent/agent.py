"""The device agent: fetch the lower blocks, choose the split, register, stream, collect results.

The user's weights and floor decide the split through the ECD utility on this device's profile
(DESIGN.md §3); the agent never sends a tensor from below ``min_split`` — the check is here, before
anything leaves the device, as well as at the edge and the cloud.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import grpc
import numpy as np

from ecd import codec, distribution
from ecd.config import option
from ecd.errors import EcdError
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.partition import Partition
from ecd.profiles import load_device, load_radio
from ecd.transport.rpc import MiB, TransportConfig, grpc_options
from ecd.split import Preferences, SplitDecision, decide_split
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

log = logging.getLogger("ecd.agent")

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


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


@dataclass
class FrameOutcome:
    frame_id: int
    label: int | None
    raw_bytes: int
    latency_s: float
    result: pb.Result


@dataclass
class RunReport:
    device_id: str
    name: str
    w_energy: float
    w_privacy: float
    min_split: int
    split_device: int
    split_edge: int
    encoding: str
    frames: int
    errors: int
    uplink_bytes: int
    raw_image_bytes: int
    latency_p50_s: float
    latency_p95_s: float
    accuracy: float | None
    duplicates_dropped: int = 0
    error_messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class DeviceAgent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        w_e = cfg.energy_weight if cfg.energy_weight >= 0 else 1.0 - cfg.privacy_weight
        self.prefs = Preferences(w_e, cfg.privacy_weight, cfg.min_split)
        self.encoding = codec.encoding_value(cfg.encoding)
        self.profile = load_device(cfg.profile)
        self.radio = load_radio(cfg.radio)
        self._tmp = None if cfg.model_dir else tempfile.TemporaryDirectory(prefix="ecd-agent-")
        self.model_dir = Path(cfg.model_dir or self._tmp.name)
        transport = TransportConfig(max_message_bytes=cfg.max_message_bytes)
        self._options = grpc_options(transport)
        self.cloud_channel = grpc.insecure_channel(cfg.cloud, options=self._options)
        self.cloud = pb_grpc.CloudServerStub(self.cloud_channel)
        self.metrics = ServiceMetrics("device")
        self.edge_channel: grpc.Channel | None = None
        self.assignment: pb.Assignment | None = None
        self.decision: SplitDecision | None = None
        self.partition: Partition | None = None
        self.manifest: Manifest | None = None
        self._next_frame_id = 1
        self.duplicates = 0  # answers dropped because their frame was already answered

    # --- set-up --------------------------------------------------------------------------------

    def connect(self, timeout_s: float = 30.0) -> pb.Assignment:
        """Fetch the manifest, choose the split, fetch blocks [0, b_d), register, open the edge."""
        grpc.channel_ready_future(self.cloud_channel).result(timeout=timeout_s)
        dest = self.model_dir / self.cfg.model
        head = distribution.fetch(self.cloud.FetchPartition(distribution.request(self.cfg.model, "", 0, 0, self.cfg.max_message_bytes)), dest)
        self.decision = decide_split(head, self.profile, self.radio, self.prefs)
        b_d = self.decision.recommended if self.cfg.split < 0 else self.cfg.split
        if not self.prefs.min_split <= b_d <= head.n_blocks:
            raise EcdError(f"split: expected {self.prefs.min_split}..{head.n_blocks} (min_split..blocks), got {b_d}")
        self.manifest = distribution.fetch(
            self.cloud.FetchPartition(distribution.request(self.cfg.model, head.version, 0, b_d, self.cfg.max_message_bytes)), dest
        )
        self.partition = Partition(self.manifest, 0, b_d)
        profile_path = Path(self.cfg.profile)
        profile_text = profile_path.read_text() if profile_path.is_file() else self.cfg.profile
        self.assignment = self.cloud.RegisterDevice(
            pb.RegisterDeviceRequest(
                device_name=self.cfg.name,
                profile=profile_text,
                radio=self.cfg.radio,
                preferences=pb.Preferences(w_energy=self.prefs.w_energy, w_privacy=self.prefs.w_privacy, min_split=self.prefs.min_split),
                model_id=self.manifest.model_id,
                split_device=b_d,
                encoding=self.encoding,
            ),
            timeout=timeout_s,
        )
        self.edge_channel = grpc.insecure_channel(self.assignment.edge_endpoint, options=self._options)
        self.metrics.chosen_split.labels("device").set(b_d)
        e = self.decision.e_comp[b_d] + self.decision.e_comm[b_d]
        self.metrics.device_energy.labels("device").set(float(e))
        self.metrics.privacy.labels("device").set(float(self.decision.p_priv[b_d]))
        log.info("[DeviceAgent] %s registered as %s: split %d, edge %s", self.cfg.name, self.assignment.device_id, b_d, self.assignment.edge_endpoint)
        return self.assignment

    def close(self) -> None:
        if self.edge_channel:
            self.edge_channel.close()
        self.cloud_channel.close()
        if self._tmp:
            self._tmp.cleanup()

    # --- streaming -----------------------------------------------------------------------------

    def make_frame(self, image: np.ndarray) -> tuple[pb.Frame, float]:
        """Preprocess, run blocks [0, b_d), encode. Returns the frame and the capture time."""
        assert self.manifest and self.partition and self.assignment
        captured = time.time_ns()
        x = self.manifest.input.preprocess(image[None])
        t0 = time.perf_counter()
        activation = self.partition.run(x)
        compute = time.perf_counter() - t0
        frame = pb.Frame(
            device_id=self.assignment.device_id,
            frame_id=self._next_frame_id,
            token=self.assignment.token,
            model_id=self.manifest.model_id,
            model_version=self.manifest.version,
            split_device=self.partition.stop,
            tensor=codec.encode(activation, self.encoding),
            captured_unix_ns=captured,
            device_compute_s=compute,
        )
        self._next_frame_id += 1
        self.metrics.stage_seconds.labels("device", "device_compute").observe(compute)
        return frame, time.perf_counter()

    def stream_frames(self, frames: Iterable[pb.Frame]) -> Iterator[pb.Result]:
        """Send prepared frames on one edge stream; yield results as they come (for tests)."""
        assert self.edge_channel
        yield from pb_grpc.EdgeNodeStub(self.edge_channel).Stream(iter(frames))

    def run(self, samples: Iterable[tuple[np.ndarray, int | None]]) -> list[FrameOutcome]:
        """Stream every sample; one outcome per frame, in frame order. Frames left unanswered by a
        broken stream are resent on a new one (up to ``retries`` times); duplicates are dropped."""
        assert self.edge_channel
        stub = pb_grpc.EdgeNodeStub(self.edge_channel)
        window = threading.Semaphore(self.cfg.max_in_flight)
        sent: dict[int, tuple[pb.Frame, float, int | None, int]] = {}
        done: dict[int, FrameOutcome] = {}
        source = iter(samples)

        def requests(resend: list[pb.Frame]) -> Iterator[pb.Frame]:
            yield from resend
            for image, label in source:
                window.acquire()
                frame, t_sent = self.make_frame(image)
                sent[frame.frame_id] = (frame, t_sent, label, int(image.nbytes))
                self.metrics.hop_bytes.labels("device", "device_to_edge").inc(frame.ByteSize())
                yield frame

        attempts = 0
        resend: list[pb.Frame] = []
        while True:
            try:
                for result in stub.Stream(requests(resend)):
                    if result.frame_id in done or result.frame_id not in sent:
                        self.duplicates += 1
                        continue
                    frame, t_sent, label, raw = sent[result.frame_id]
                    latency = time.perf_counter() - t_sent
                    done[result.frame_id] = FrameOutcome(result.frame_id, label, raw, latency, result)
                    ok = not result.HasField("error")
                    self.metrics.frame(ok, None if ok else str(result.error.code))
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
        assert self.assignment and self.decision
        ok = [o for o in outcomes if not o.result.HasField("error")]
        lat = np.array([o.latency_s for o in ok]) if ok else np.array([np.nan])
        labelled = [o for o in ok if o.label is not None]
        accuracy = None
        if labelled:
            correct = sum(next(h.index for h in o.result.heads if h.head == "class") == o.label for o in labelled)
            accuracy = correct / len(labelled)
        return RunReport(
            device_id=self.assignment.device_id,
            name=self.cfg.name,
            w_energy=self.prefs.w_energy,
            w_privacy=self.prefs.w_privacy,
            min_split=self.prefs.min_split,
            split_device=self.assignment.split_device,
            split_edge=self.assignment.split_edge,
            encoding=self.cfg.encoding,
            frames=len(outcomes),
            errors=len(outcomes) - len(ok),
            uplink_bytes=int(sum(o.result.uplink_bytes for o in ok)),
            raw_image_bytes=int(sum(o.raw_bytes for o in ok)),
            latency_p50_s=float(np.percentile(lat, 50)),
            latency_p95_s=float(np.percentile(lat, 95)),
            accuracy=accuracy,
            duplicates_dropped=self.duplicates,
            error_messages=sorted({o.result.error.message for o in outcomes if o.result.HasField("error")})[:5],
        )
