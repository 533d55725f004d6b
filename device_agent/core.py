"""The device agent's core: decide the split, turn an image into a frame, keep the frames in flight,
and sum up a run.

Transport-free: the gRPC face (``device_agent.service``) fetches the model, registers, streams the
frames this core makes and hands back the results. The user's weights and floor decide the split
through the ECD utility on this device's profile; the agent never sends a tensor from below
``min_split`` — the check is here, before anything leaves the device, as well as at the edge and
the cloud.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from ecd import codec
from ecd.batching import run_rows
from ecd.errors import ConfigError, EcdError
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.partition import Partition
from ecd.profiles import DeviceProfile, RadioProfile
from ecd.split import Preferences, SplitDecision, check_split, decide_split
from ecd.leakage import defence_table
from ecd.types import Assignment, Encoding, Frame, FrameError, Result, Split, Task, Tensor

T = TypeVar("T")


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
    frames: int  # answered, each once (errors included)
    errors: int
    uplink_bytes: int
    raw_image_bytes: int
    latency_p50_s: float
    latency_p95_s: float
    accuracy: float | None
    duplicates_dropped: int = 0  # answers dropped because their frame was already answered
    error_messages: list[str] = field(default_factory=list)
    moves: int = 0  # times the device followed its assignment to another edge node
    edges: list[str] = field(default_factory=list)  # the edge nodes that served its frames
    latency_p99_s: float = float("nan")
    resplits: int = 0  # times the user's new preferences moved the split of a running stream
    sent: int = 0  # distinct frames sent (a resent frame counts once)
    lost: int = 0  # frames sent and never answered: 0 unless the run ended on a failure
    exit: str = "completed"  # completed, stopped (SIGTERM) or the failure's message
    latency_mean_s: float = float("nan")
    split_changes: list[dict] = field(default_factory=list)  # {"frame", "from", "to", "reason"} (preferences.py)
    energy: dict = field(default_factory=dict)  # the measured energy's sums and source (device_agent.energy)
    energy_per_frame_j: float = float("nan")
    energy_source: str = ""  # rapl, power_supply or model
    uplink_mbps_measured: float = float("nan")  # device_agent.link, at the end of the run
    rtt_ms_measured: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SavedIdentity:
    """Who this device is to the cloud, kept in the agent's state file (``--state``) so a restarted
    agent is the same device (its history, reputation and campaign tasks stay its own)."""

    device_id: str
    token: str
    cloud: str
    model_id: str
    model_version: str

    @classmethod
    def read(cls, path: str) -> SavedIdentity | None:
        """The identity in ``path``; None if there is no such file yet."""
        try:
            data = json.loads(Path(path).read_text())
            return cls(**{k: str(data[k]) for k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"--state: {path} is not an agent state file ({e}); remove it to register as a new device") from None

    def write(self, path: str) -> None:
        """Write atomically, readable by this user only (the token is a credential)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(self), f)
            os.replace(tmp, target)
        except OSError as e:
            raise ConfigError(f"--state: cannot write {path} ({e.strerror})") from None


class Tally:
    """A run's outcomes summed as they come, in bounded memory (a long-running agent answers
    millions of frames): counts and byte sums, and the latest ``window`` latencies for the
    percentiles."""

    def __init__(self, window: int = 10_000):
        self._lock = threading.Lock()  # the control panel reads while the stream adds
        self.frames = self.errors = self.uplink_bytes = self.raw_image_bytes = 0
        self.labelled = self.correct = 0
        self.latencies: deque[float] = deque(maxlen=window)
        self.error_messages: set[str] = set()
        self.edges: set[str] = set()
        self.per_split: dict[int, int] = {}  # answered frames by the split they were sent at

    def add(self, o: FrameOutcome) -> None:
        with self._lock:
            self._add(o)

    def _add(self, o: FrameOutcome) -> None:
        self.frames += 1
        split = o.result.split.device
        self.per_split[split] = self.per_split.get(split, 0) + 1
        if o.result.edge_id:
            self.edges.add(o.result.edge_id)
        if not o.result.ok:
            self.errors += 1
            if len(self.error_messages) < 5:
                self.error_messages.add(o.result.error.message)
            return
        self.latencies.append(o.latency_s)
        self.uplink_bytes += o.result.uplink_bytes
        self.raw_image_bytes += o.raw_bytes
        if o.label is not None:
            self.labelled += 1
            self.correct += o.result.head("class").index == o.label

    def percentile(self, q: float) -> float:
        with self._lock:
            latencies = np.array(self.latencies)
        return float(np.percentile(latencies, q)) if len(latencies) else float("nan")

    def mean(self) -> float:
        with self._lock:
            return float(np.mean(self.latencies)) if self.latencies else float("nan")

    def snapshot(self) -> dict:
        """The counts so far, read consistently while frames are being answered."""
        with self._lock:
            return {"answered": self.frames, "errors": self.errors, "uplink_bytes": self.uplink_bytes,
                    "per_split": dict(self.per_split), "accuracy": self.correct / self.labelled if self.labelled else None}


DEVICE_CALL_BYTES = 8 * 1024 * 1024  # input and largest activation of the frames run in one call on the device


def _frame_bytes(manifest: Manifest, stop: int) -> int:
    """One frame's input and largest block output in blocks [0, stop), float32: what a call holds per
    frame (mobilenet_v2: 0.6 + 1.6 MB, 3 frames a call; digits_cnn: 36 kB, a whole message)."""
    return 4 * int(np.prod(manifest.input.shape)) + max((b.output_bytes_float32 for b in manifest.blocks[:stop]), default=0)


class AgentCore:
    """One device's state between registration and the end of its run: the single writer of its
    preferences, split decision, partition and assignment (others call the commands below)."""

    def __init__(self, name: str, prefs: Preferences, encoding: Encoding, profile: DeviceProfile, radio: RadioProfile,
                 metrics: ServiceMetrics):
        self.name = name
        self.prefs = prefs
        self.encoding = encoding
        self.profile = profile
        self.radio = radio
        self.metrics = metrics
        self.decision: SplitDecision | None = None
        self.family: Manifest | None = None  # the manifest decisions are made on (a learned table's level 0)
        self.level: int | None = None  # the learned privacy level run (its own model, ``manifest``); None: no table
        self.manifest: Manifest | None = None
        self.partition: Partition | None = None
        self.assignment: Assignment | None = None
        self._next_frame_id = 1

    def decide(self, manifest: Manifest, pinned: int = -1) -> int:
        """The utility's recommended ``split.device`` for this user, or ``pinned`` (>= 0) if it
        respects the floor. The decision also fixes the defence strength at every split
        (``SplitDecision.strength_at``), which ``make_frame`` applies to the split registered."""
        self.decision, self.family = decide_split(manifest, self.profile, self.radio, self.prefs), manifest
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

    def preferences_applied(self, prefs: Preferences, decision: SplitDecision, manifest: Manifest, assignment: Assignment) -> None:
        """The cloud took the user's new preferences: the new split, decision and partition."""
        self.prefs, self.decision = prefs, decision
        self.registered(manifest, assignment)

    @property
    def next_frame_id(self) -> int:
        """The id the next frame made gets."""
        return self._next_frame_id

    def moved_to(self, a: Assignment) -> Assignment:
        """The device now streams to the edge ``a`` names (a move); returns the assignment left."""
        old = self.assignment
        assert old is not None
        self.assignment = dataclasses.replace(old, edge_endpoint=a.edge_endpoint, edge_id=a.edge_id,
                                              placement_version=a.placement_version)
        return old

    def placement_seen(self, version: int) -> None:
        """The same edge under a newer placement."""
        assert self.assignment is not None
        self.assignment = dataclasses.replace(self.assignment, placement_version=version)

    def make_frame(self, image: np.ndarray, task: Task | None = None, reading: float = 0.0) -> tuple[Frame, float]:
        """One image as a frame (:meth:`make_frames`), raising what made it fail. Returns the frame
        and the send time."""
        captured = time.time_ns()
        (tensor,), compute = self._tensors([image])
        if isinstance(tensor, Exception):
            raise tensor
        return self._frame(tensor, task, reading, captured, compute), time.perf_counter()

    def make_frames(self, images: list[np.ndarray], tasks: list[tuple[Task | None, float]]) -> list[Frame | Result]:
        """Images as frames, in order, their blocks [0, split.device) run as one call — what the
        agent sends in one message (a model that costs less than its call: digits_cnn) — each
        tagged with the campaign task it answers, if any, and the sensor's reading (``tasks``). A
        frame that cannot be made is its id's error result, and only its own."""
        captured = time.time_ns()
        tensors, compute = self._tensors(images)
        out: list[Frame | Result] = []
        for tensor, (task, reading) in zip(tensors, tasks, strict=True):
            if not isinstance(tensor, Exception):
                out.append(self._frame(tensor, task, reading, captured, compute))
                continue
            assert self.assignment is not None
            out.append(Result(self.assignment.device_id, self._next_frame_id, Split(self.assignment.split.device, 0),
                              error=FrameError.from_exception(tensor)))
            self._next_frame_id += 1
        return out

    def _tensors(self, images: list[np.ndarray]) -> tuple[list[Tensor | Exception], float]:
        """Each image preprocessed, run through blocks [0, split.device) together (a call that
        fails is run again frame by frame: ``ecd.batching.run_rows``), defended (fresh noise per
        frame) and encoded — or what failed; and each frame's share of the compute, in seconds."""
        if self.manifest is None or self.partition is None or self.assignment is None:
            raise RuntimeError("make_frame before registration")
        if self.sends_image():  # the receiver normalises; a quarter of float32
            t0 = time.perf_counter()
            tensors = [_or_error(codec.encode_image, image[None]) for image in images]
        else:
            manifest, partition = self.manifest, self.partition
            xs = [_or_error(manifest.input.preprocess, image[None]) for image in images]
            t0 = time.perf_counter()
            ready = [i for i, x in enumerate(xs) if not isinstance(x, Exception)]
            per_call = max(1, DEVICE_CALL_BYTES // _frame_bytes(manifest, partition.stop))
            for at in range(0, len(ready), per_call):  # a device's memory bounds how many frames run at once
                chunk = ready[at:at + per_call]
                for i, y in zip(chunk, run_rows(lambda x, _start, _stop: partition.run(x), [xs[i] for i in chunk], 0, partition.stop)):
                    xs[i] = y
            tensors = [x if isinstance(x, Exception) else _or_error(lambda a: codec.encode(self._defend(a), self.encoding), x)
                       for x in xs]
        return tensors, (time.perf_counter() - t0) / max(len(images), 1)

    def _frame(self, tensor: Tensor, task: Task | None, reading: float, captured: int, compute: float) -> Frame:
        """The next frame id's frame, carrying ``tensor``."""
        assert self.manifest is not None and self.assignment is not None
        frame = Frame(
            device_id=self.assignment.device_id,
            frame_id=self._next_frame_id,
            token=self.assignment.token,
            model_id=self.manifest.model_id,
            model_version=self.manifest.version,
            split=Split(self.assignment.split.device, 0),
            tensor=tensor,
            captured_unix_ns=captured,
            device_compute_s=compute,
            task=task,
            reading=reading,
        )
        self._next_frame_id += 1
        self.metrics.stage_seconds.labels("device", "device_compute").observe(compute)
        return frame

    def sends_image(self) -> bool:
        """At split 0 with no defence noise the device sends the image as captured (UINT8): exact,
        and a quarter of the normalised float32 (or half of float16)."""
        assert self.assignment is not None
        return self.assignment.split.device == 0 and self.defence_strength() <= 0

    def wire_encoding(self) -> Encoding:
        """The encoding this device's frames go out in now."""
        return Encoding.UINT8 if self.sends_image() else self.encoding

    def defence_strength(self) -> float:
        """The noise strength applied to this device's frames (0: none): the user's pinned one, else
        the decision's for the registered split; 0 when a learned level runs."""
        assert self.manifest is not None and self.assignment is not None
        split = self.assignment.split.device
        if self.level is not None:  # a learned level: its weights are the defence, no noise
            return 0.0
        if self.prefs.defence_strength is not None:
            return float(self.prefs.defence_strength)
        if self.decision is not None and self.decision.version == self.manifest.version:
            return self.decision.strength_at(split)
        return 0.0

    def _defend(self, activation: np.ndarray) -> np.ndarray:
        """Laplace noise of scale strength x scale[split] (the manifest's measured defence table) on
        the activation, before it leaves the device. Fresh OS entropy: the noise is never replayed."""
        assert self.manifest is not None and self.assignment is not None
        strength = self.defence_strength()
        if strength <= 0:
            return activation
        cached = getattr(self, "_defence_cache", None)
        key = (self.manifest.version, self.assignment.split.device, strength)
        if cached is None or cached[0] != key:
            table = defence_table(self.manifest, required=True)
            assert table is not None
            table.check_strength(self.manifest.model_id, strength)
            cached = (key, float(strength * table.scale[self.assignment.split.device]), np.random.default_rng())
            self._defence_cache = cached
        _, scale, rng = cached
        return (activation + rng.laplace(0.0, scale, activation.shape)).astype(np.float32)

    def report(self, tally: Tally | list[FrameOutcome], duplicates: int = 0) -> RunReport:
        if not isinstance(tally, Tally):
            outcomes, tally = tally, Tally(max(len(tally), 1))
            for o in outcomes:
                tally.add(o)
        return RunReport(
            device_id=self.assignment.device_id if self.assignment else "",  # "": the run never registered
            name=self.name,
            w_energy=self.prefs.w_energy,
            w_privacy=self.prefs.w_privacy,
            min_split=self.prefs.min_split,
            split_device=self.assignment.split.device if self.assignment else -1,
            split_edge=self.assignment.split.edge if self.assignment else -1,
            encoding=(self.wire_encoding() if self.assignment else self.encoding).value,
            frames=tally.frames,
            errors=tally.errors,
            uplink_bytes=tally.uplink_bytes,
            raw_image_bytes=tally.raw_image_bytes,
            latency_p50_s=tally.percentile(50),
            latency_p95_s=tally.percentile(95),
            latency_p99_s=tally.percentile(99),
            latency_mean_s=tally.mean(),
            accuracy=tally.correct / tally.labelled if tally.labelled else None,
            duplicates_dropped=duplicates,
            error_messages=sorted(tally.error_messages),
            edges=sorted(tally.edges),
            sent=tally.frames,
        )


def _or_error(fn: Callable[..., T], *args) -> T | Exception:
    """``fn(*args)``, or the exception it raised: one frame's failure, handed to that frame."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 — that frame's own error
        return e
