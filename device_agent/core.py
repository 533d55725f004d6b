"""The device agent's core: choose the split, turn an image into a frame, and sum up a run.

Transport-free: the gRPC face (``device_agent.service``) fetches the model, registers, streams the
frames this core makes and hands back the results. The user's weights and floor decide the split
through the ECD utility on this device's profile; the agent never sends a tensor from below
``min_split`` — the check is here, before anything leaves the device, as well as at the edge and
the cloud.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ecd import codec
from ecd.errors import EcdError
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.partition import Partition
from ecd.profiles import DeviceProfile, RadioProfile
from ecd.split import Preferences, SplitDecision, check_split, decide_split
from ecd.types import Assignment, Encoding, Frame, Result, Split, Task


@dataclass
class FrameOutcome:
    frame_id: int
    label: int | None
    raw_bytes: int
    latency_s: float
    result: Result


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
    moves: int = 0  # times the device followed its assignment to another edge node
    edges: list[str] = field(default_factory=list)  # the edge nodes that served its frames

    def to_dict(self) -> dict:
        return asdict(self)


class AgentCore:
    """One device's state between registration and the end of its run."""

    def __init__(self, name: str, prefs: Preferences, encoding: Encoding, profile: DeviceProfile, radio: RadioProfile,
                 metrics: ServiceMetrics):
        self.name = name
        self.prefs = prefs
        self.encoding = encoding
        self.profile = profile
        self.radio = radio
        self.metrics = metrics
        self.decision: SplitDecision | None = None
        self.manifest: Manifest | None = None
        self.partition: Partition | None = None
        self.assignment: Assignment | None = None
        self._next_frame_id = 1
        self.duplicates = 0  # answers dropped because their frame was already answered

    def choose_split(self, manifest: Manifest, pinned: int = -1) -> int:
        """The utility's recommended ``split.device`` for this user, or ``pinned`` (>= 0) if it
        respects the floor."""
        self.decision = decide_split(manifest, self.profile, self.radio, self.prefs)
        split_device = self.decision.recommended if pinned < 0 else pinned
        if not self.prefs.min_split <= split_device <= manifest.n_blocks:
            raise EcdError(f"split: expected {self.prefs.min_split}..{manifest.n_blocks} (min_split..blocks), got {split_device}")
        return split_device

    def registered(self, manifest: Manifest, assignment: Assignment) -> None:
        """The cloud accepted the device: load blocks [0, split.device) and publish the choice.
        An assignment below the user's floor is refused here, whatever the cloud says."""
        check_split(manifest, assignment.split.device, self.prefs.min_split)
        self.manifest = manifest
        self.assignment = assignment
        self.partition = Partition(manifest, 0, assignment.split.device)
        split_device = assignment.split.device
        self.metrics.chosen_split.labels("device").set(split_device)
        if self.decision is not None:
            e = self.decision.e_comp[split_device] + self.decision.e_comm[split_device]
            self.metrics.device_energy.labels("device").set(float(e))
            self.metrics.privacy.labels("device").set(float(self.decision.p_priv[split_device]))

    def make_frame(self, image: np.ndarray, task: Task | None = None, reading: float = 0.0) -> tuple[Frame, float]:
        """Preprocess, run blocks [0, split.device), encode (tagged with the campaign task it answers,
        if any, and the sensor's reading). Returns the frame and the send time."""
        if self.manifest is None or self.partition is None or self.assignment is None:
            raise RuntimeError("make_frame before registration")
        captured = time.time_ns()
        x = self.manifest.input.preprocess(image[None])
        t0 = time.perf_counter()
        activation = self.partition.run(x)
        compute = time.perf_counter() - t0
        frame = Frame(
            device_id=self.assignment.device_id,
            frame_id=self._next_frame_id,
            token=self.assignment.token,
            model_id=self.manifest.model_id,
            model_version=self.manifest.version,
            split=Split(self.assignment.split.device, 0),
            tensor=codec.encode(activation, self.encoding),
            captured_unix_ns=captured,
            device_compute_s=compute,
            task=task,
            reading=reading,
        )
        self._next_frame_id += 1
        self.metrics.stage_seconds.labels("device", "device_compute").observe(compute)
        return frame, time.perf_counter()

    def report(self, outcomes: list[FrameOutcome]) -> RunReport:
        if self.assignment is None:
            raise RuntimeError("report before registration")
        ok = [o for o in outcomes if o.result.ok]
        lat = np.array([o.latency_s for o in ok]) if ok else np.array([np.nan])
        labelled = [o for o in ok if o.label is not None]
        accuracy = None
        if labelled:
            correct = sum(o.result.head("class").index == o.label for o in labelled)
            accuracy = correct / len(labelled)
        return RunReport(
            device_id=self.assignment.device_id,
            name=self.name,
            w_energy=self.prefs.w_energy,
            w_privacy=self.prefs.w_privacy,
            min_split=self.prefs.min_split,
            split_device=self.assignment.split.device,
            split_edge=self.assignment.split.edge,
            encoding=self.encoding.value,
            frames=len(outcomes),
            errors=len(outcomes) - len(ok),
            uplink_bytes=int(sum(o.result.uplink_bytes for o in ok)),
            raw_image_bytes=int(sum(o.raw_bytes for o in ok)),
            latency_p50_s=float(np.percentile(lat, 50)),
            latency_p95_s=float(np.percentile(lat, 95)),
            accuracy=accuracy,
            duplicates_dropped=self.duplicates,
            error_messages=sorted({o.result.error.message for o in outcomes if o.result.error is not None})[:5],
            edges=sorted({o.result.edge_id for o in outcomes if o.result.edge_id}),
        )


class SimulatedSensor:
    """A device's scalar sensor (say, temperature in °C), simulated: a smooth field over the
    campaign's cells and slots plus N(0, 0.3) noise. ``corrupt`` makes a misbehaving device — biased
    by +6 and five times as noisy — the kind CrowdPower's quality and reputation should catch."""

    def __init__(self, seed: int = 0, corrupt: bool = False):
        self.rng = np.random.default_rng(seed)
        self.corrupt = corrupt

    @staticmethod
    def truth(task: Task) -> float:
        return 20.0 + 0.5 * np.sin(task.cell) + 0.1 * task.slot

    def read(self, task: Task) -> float:
        noise = self.rng.normal(0.0, 0.3 * (5 if self.corrupt else 1))
        return float(self.truth(task) + noise + (6.0 if self.corrupt else 0.0))
