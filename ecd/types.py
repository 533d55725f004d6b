"""The runtime's own records: what a frame, a result, an assignment and a split *are*, free of any
transport.

The cores (edge node, cloud server, device agent) take and return these; only the seam
(:mod:`ecd.transport.serde`) knows the protobuf messages they travel as. Names, used everywhere:

* ``split.device`` — the device runs blocks ``[0, split.device)`` (the paper's b_d);
* ``split.edge`` — the edge runs ``[split.device, split.edge)`` (b_e); the cloud runs the rest;
* the *recommended* split is the ``split.device`` the user's utility chooses — the device may run
  another (pinned) split, never one below its floor ``preferences.min_split``.

On the wire and in the registry the same two numbers are the flat fields ``split_device`` and
``split_edge``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from ecd.errors import PreconditionError, RequestError, describe
from ecd.split import Preferences

__all__ = [
    "Encoding", "Split", "Position", "LocationReport", "Tensor", "Frame", "HeadOutput", "FrameError", "Result", "Assignment",
    "Preferences", "DeviceRegistration", "PreferencesUpdate", "EdgeRegistration", "EdgeHeartbeat",
    "PartitionRequest", "FileChunk", "HeadSpec",
    "Task",
]


class Encoding(enum.Enum):
    """How an activation is encoded on the uplink."""

    FLOAT32 = "float32"  # little-endian IEEE single precision
    FLOAT16 = "float16"  # little-endian IEEE half precision
    INT8 = "int8"  # int8 q with x = scale * (q - zero_point), per tensor
    UINT8 = "uint8"  # split 0 only: the image as captured, [N, H, W, C]; the receiver normalises it

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "float16": 2, "int8": 1, "uint8": 1}[self.value]

    @classmethod
    def for_activations(cls) -> tuple[Encoding, ...]:
        """The encodings of an activation (what a user chooses); UINT8 is only the raw image."""
        return (cls.FLOAT32, cls.FLOAT16, cls.INT8)

    @classmethod
    def parse(cls, name: str, field_name: str = "encoding") -> Encoding:
        """The encoding called ``name`` (float32, float16 or int8); the error names the field."""
        for e in cls:
            if e.value == name:
                return e
        raise RequestError(f"{field_name}: expected one of {', '.join(e.value for e in cls)}, got {name!r}")


@dataclass(frozen=True)
class Split:
    """Where a model is cut: blocks [0, device) on the device, [device, edge) on the edge, the rest
    in the cloud."""

    device: int
    edge: int


@dataclass(frozen=True)
class Position:
    """Where a device or an edge node is: WGS 84 degrees."""

    lat: float
    lon: float

    @classmethod
    def parse(cls, text: str, field_name: str = "position") -> Position | None:
        """``"LAT,LON"`` in degrees (``""`` = unknown, None); the error names the field."""
        if not text.strip():
            return None
        try:
            lat, lon = (float(v) for v in text.split(","))
        except ValueError:
            raise RequestError(f"{field_name}: expected LAT,LON in degrees, got {text!r}") from None
        return cls(lat, lon).check(field_name)

    def check(self, field_name: str = "position") -> Position:
        """This position, or a :class:`~ecd.errors.RequestError` naming the field if it is not one."""
        if not (math.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise RequestError(f"{field_name}.lat: expected degrees in [-90, 90], got {self.lat}")
        if not (math.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise RequestError(f"{field_name}.lon: expected degrees in [-180, 180], got {self.lon}")
        return self


@dataclass(frozen=True)
class Task:
    """One sensing task of a campaign: report from grid cell ``cell`` (row-major) in slot ``slot``."""

    campaign_id: str
    task_id: int
    cell: int
    slot: int


@dataclass
class Tensor:
    """An encoded batch: ``shape`` is [batch, *activation shape], ``data`` C-order little-endian."""

    encoding: Encoding
    shape: tuple[int, ...]
    data: bytes
    scale: float = 0.0  # INT8 only
    zero_point: int = 0  # INT8 only


@dataclass
class Frame:
    """One device sample on its way up: the activation at ``split.device`` (or, past the edge, at
    ``split.edge``) plus who sent it and what it cost so far."""

    device_id: str
    frame_id: int  # monotonic per device
    token: str
    model_id: str
    model_version: str
    split: Split  # split.edge is 0 until the edge sets it
    tensor: Tensor
    captured_unix_ns: int = 0
    device_compute_s: float = 0.0
    edge_compute_s: float = 0.0  # set by the edge
    uplink_bytes: int = 0  # the frame's size device -> edge; set by the edge
    wire_bytes: int = 0  # this frame's size as received on the last hop (not sent; set by the seam)
    task: Task | None = None  # set when the frame answers a campaign's sensing task
    reading: float = 0.0  # the device's sensor reading for that task
    protocol_revision: int = 0  # set on a stream's first frame (PROTOCOL_REVISION); 0 = revision 1


PROTOCOL_REVISION = 3  # of ecd.v1: 3 = several frames per message (FrameBatch, the StreamBatches calls)
KNOWN_REVISIONS = (0, 1, 2, 3)  # 0: a sender that does not say (revision 1, every frame complete)
# What a one-frame Stream call needs (compact frames, the UINT8 image): a sender states it there, so a
# revision-2 edge node still takes the stream of an agent that batches nothing.
ONE_FRAME_REVISION = 2


@dataclass(frozen=True)
class StreamHeader:
    """What a device stream's first frame binds for every later frame of that stream (compact
    frames): who sends, with which token, for which model, from which split, in which encoding. A
    later frame leaves these unset (empty strings, 0, ENCODING_UNSPECIFIED) and is read as if it
    carried the bound values; one that sets a field must repeat the bound value. A device that
    changes split or encoding opens a new stream."""

    device_id: str
    token: str
    model_id: str
    model_version: str
    split_device: int
    encoding: Encoding | int
    compact: bool  # revision 2: later frames may leave the bound fields unset; revision 1: every frame complete

    @classmethod
    def of(cls, first: Frame) -> StreamHeader:
        if first.protocol_revision not in KNOWN_REVISIONS:
            raise PreconditionError(f"protocol_revision: this node speaks revisions 1..{PROTOCOL_REVISION} of ecd.v1, "
                                    f"got {first.protocol_revision}")
        return cls(first.device_id, first.token, first.model_id, first.model_version, first.split.device, first.tensor.encoding,
                   first.protocol_revision >= 2)

    def complete(self, frame: Frame) -> Frame:
        """``frame`` with the bound fields filled in; a field set to another value is refused,
        naming it (the frame's own id and tensor are kept for the error result). On a revision-1
        stream every frame stands alone, as it always did."""
        if not self.compact:
            return frame
        for name, bound, got, unset in (
            ("device_id", self.device_id, frame.device_id, ""),
            ("token", self.token, frame.token, ""),
            ("model_id", self.model_id, frame.model_id, ""),
            ("model_version", self.model_version, frame.model_version, ""),
            ("split_device", self.split_device, frame.split.device, 0),
        ):
            if got != unset and got != bound:
                shown = "" if name == "token" else f": bound to {bound!r}, got {got!r}"
                frame.device_id = frame.device_id or self.device_id
                raise RequestError(f"{name}: differs from the stream's first frame{shown}; open a new stream to change it")
        encoding = frame.tensor.encoding
        if encoding not in (0, self.encoding):
            frame.device_id = frame.device_id or self.device_id
            raise RequestError(f"tensor.encoding: differs from the stream's first frame ({self.encoding}); open a new stream to change it")
        frame.device_id, frame.token = self.device_id, self.token
        frame.model_id, frame.model_version = self.model_id, self.model_version
        frame.split = Split(self.split_device, frame.split.edge)
        if encoding == 0:
            frame.tensor = Tensor(self.encoding, frame.tensor.shape, frame.tensor.data, frame.tensor.scale, frame.tensor.zero_point)
        return frame


@dataclass
class HeadOutput:
    head: str
    label: str
    index: int
    scores: list[float]


@dataclass
class FrameError:
    """Why one frame got no answer: a status name (INVALID_ARGUMENT, FAILED_PRECONDITION, …, see
    :mod:`ecd.errors`) and a message naming the field."""

    status: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> FrameError:
        """The error a frame is answered with when handling it raised ``exc`` (see
        :func:`ecd.errors.describe`: unexpected errors are logged, not leaked)."""
        return cls(*describe(exc))


@dataclass
class Result:
    """The answer to one frame: every head's output, or the error that refused it."""

    device_id: str
    frame_id: int
    split: Split
    heads: list[HeadOutput] = field(default_factory=list)  # empty when error is set
    error: FrameError | None = None
    device_compute_s: float = 0.0
    edge_compute_s: float = 0.0
    cloud_compute_s: float = 0.0
    uplink_bytes: int = 0  # device -> edge
    edge_to_cloud_bytes: int = 0
    output: list[float] = field(default_factory=list)  # the model's final output, first sample
    edge_id: str = ""  # the edge node that served the frame

    @property
    def ok(self) -> bool:
        return self.error is None

    def head(self, name: str) -> HeadOutput | None:
        return next((h for h in self.heads if h.head == name), None)

    @classmethod
    def refused(cls, frame: Frame, error: FrameError) -> Result:
        """The error result for ``frame`` (the stream goes on; the frame is answered, not lost)."""
        return cls(device_id=frame.device_id, frame_id=frame.frame_id, split=frame.split, error=error)


@dataclass
class Assignment:
    """What the cloud tells a device: its identity, its edge node, its model and split."""

    device_id: str
    token: str
    edge_endpoint: str
    model_id: str
    model_version: str
    split: Split
    recommended_split: int  # the cloud's own reading of the utility; the user decides
    preferences: Preferences
    edge_id: str = ""  # the edge node placement chose
    placement_version: int = 0  # bumps whenever a placement is applied
    tasks: list[Task] = field(default_factory=list)  # sensing tasks allocated and not yet answered
    encoding: Encoding | int = Encoding.FLOAT32  # the activations' encoding the device registered


@dataclass
class DeviceRegistration:
    """A device asking to join: who it is, how it values energy and privacy, the split it chose."""

    device_name: str
    profile: str  # a shipped profile name, or the TOML of a measured profile
    radio: str
    preferences: Preferences
    model_id: str
    split_device: int | None  # the split the device chose with its utility; None: the one the cloud recommends
    encoding: Encoding
    position: Position | None = None  # None: unknown, so placement cannot use the device yet
    sensors: dict[str, float] = field(default_factory=dict)  # sensor -> benchmark score 0..10 (site selection)


@dataclass
class Enrolment:
    """A browser device joining with a one-time code and its public key (SPKI DER), in place of a
    client certificate (:mod:`ecd.devicekey`)."""

    code: str
    public_key: bytes
    registration: DeviceRegistration


@dataclass
class PreferencesUpdate:
    device_id: str
    token: str
    preferences: Preferences
    split_device: int


@dataclass
class EdgeRegistration:
    endpoint: str  # host:port devices reach this edge node on
    capacity: float  # frames per second it can sustain (operator's estimate)
    position: Position | None = None  # None: placement cannot use this node
    activation_cost: float = 0.0  # placement's cost of keeping it active (AC_j); 0 = the cloud's default


@dataclass
class LocationReport:
    device_id: str
    token: str
    position: Position | None  # None only when the sender left it out (refused, naming the field)
    unix_ms: int = 0  # when the device was there; 0 = now


@dataclass
class EdgeHeartbeat:
    edge_id: str
    load: float  # frames per second over the last interval
    queue_depth: int


@dataclass
class PartitionRequest:
    """Blocks [start, stop) of a model (start == stop: only its manifest)."""

    model_id: str
    model_version: str  # "" = the version the cloud serves
    start: int
    stop: int
    max_chunk_bytes: int = 0  # the largest chunk the caller accepts; 0 = the server's default


@dataclass
class FileChunk:
    file: str  # manifest.json or a block file
    sha256: str  # of the whole file
    size: int  # of the whole file
    offset: int
    data: bytes


@dataclass
class HeadSpec:
    """A linear task head over a model's output: scores = weight · f(output) + bias,
    f = identity ("logits") or softmax ("probabilities")."""

    model_id: str
    name: str
    labels: list[str]
    weight: list[float]  # len(labels) x output size, row major
    bias: list[float]
    input: str  # "logits" | "probabilities" | "unspecified"
