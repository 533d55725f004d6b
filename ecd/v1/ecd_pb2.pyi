from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    FLOAT32: _ClassVar[Encoding]
    FLOAT16: _ClassVar[Encoding]
    INT8_AFFINE: _ClassVar[Encoding]
    UINT8_IMAGE: _ClassVar[Encoding]
ENCODING_UNSPECIFIED: Encoding
FLOAT32: Encoding
FLOAT16: Encoding
INT8_AFFINE: Encoding
UINT8_IMAGE: Encoding

class Tensor(_message.Message):
    __slots__ = ("encoding", "shape", "data", "scale", "zero_point")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    encoding: Encoding
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    scale: float
    zero_point: int
    def __init__(self, encoding: _Optional[_Union[Encoding, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("device_id", "frame_id", "token", "model_id", "model_version", "split_device", "split_edge", "tensor", "captured_unix_ns", "device_compute_s", "edge_compute_s", "uplink_bytes", "task", "reading", "protocol_revision")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_DEVICE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_EDGE_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    EDGE_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    UPLINK_BYTES_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    READING_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_REVISION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    frame_id: int
    token: str
    model_id: str
    model_version: str
    split_device: int
    split_edge: int
    tensor: Tensor
    captured_unix_ns: int
    device_compute_s: float
    edge_compute_s: float
    uplink_bytes: int
    task: Task
    reading: float
    protocol_revision: int
    def __init__(self, device_id: _Optional[str] = ..., frame_id: _Optional[int] = ..., token: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., split_device: _Optional[int] = ..., split_edge: _Optional[int] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., captured_unix_ns: _Optional[int] = ..., device_compute_s: _Optional[float] = ..., edge_compute_s: _Optional[float] = ..., uplink_bytes: _Optional[int] = ..., task: _Optional[_Union[Task, _Mapping]] = ..., reading: _Optional[float] = ..., protocol_revision: _Optional[int] = ...) -> None: ...

class HeadOutput(_message.Message):
    __slots__ = ("head", "label", "index", "scores")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    head: str
    label: str
    index: int
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, head: _Optional[str] = ..., label: _Optional[str] = ..., index: _Optional[int] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("device_id", "frame_id", "heads", "error", "split_device", "split_edge", "device_compute_s", "edge_compute_s", "cloud_compute_s", "uplink_bytes", "edge_to_cloud_bytes", "output", "edge_id")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SPLIT_DEVICE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_EDGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    EDGE_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    CLOUD_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    UPLINK_BYTES_FIELD_NUMBER: _ClassVar[int]
    EDGE_TO_CLOUD_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    frame_id: int
    heads: _containers.RepeatedCompositeFieldContainer[HeadOutput]
    error: FrameError
    split_device: int
    split_edge: int
    device_compute_s: float
    edge_compute_s: float
    cloud_compute_s: float
    uplink_bytes: int
    edge_to_cloud_bytes: int
    output: _containers.RepeatedScalarFieldContainer[float]
    edge_id: str
    def __init__(self, device_id: _Optional[str] = ..., frame_id: _Optional[int] = ..., heads: _Optional[_Iterable[_Union[HeadOutput, _Mapping]]] = ..., error: _Optional[_Union[FrameError, _Mapping]] = ..., split_device: _Optional[int] = ..., split_edge: _Optional[int] = ..., device_compute_s: _Optional[float] = ..., edge_compute_s: _Optional[float] = ..., cloud_compute_s: _Optional[float] = ..., uplink_bytes: _Optional[int] = ..., edge_to_cloud_bytes: _Optional[int] = ..., output: _Optional[_Iterable[float]] = ..., edge_id: _Optional[str] = ...) -> None: ...

class FrameBatch(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    def __init__(self, frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("lat", "lon")
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    lat: float
    lon: float
    def __init__(self, lat: _Optional[float] = ..., lon: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("campaign_id", "task_id", "cell", "slot")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    task_id: int
    cell: int
    slot: int
    def __init__(self, campaign_id: _Optional[str] = ..., task_id: _Optional[int] = ..., cell: _Optional[int] = ..., slot: _Optional[int] = ...) -> None: ...

class Preferences(_message.Message):
    __slots__ = ("w_energy", "w_privacy", "min_split")
    W_ENERGY_FIELD_NUMBER: _ClassVar[int]
    W_PRIVACY_FIELD_NUMBER: _ClassVar[int]
    MIN_SPLIT_FIELD_NUMBER: _ClassVar[int]
    w_energy: float
    w_privacy: float
    min_split: int
    def __init__(self, w_energy: _Optional[float] = ..., w_privacy: _Optional[float] = ..., min_split: _Optional[int] = ...) -> None: ...

class RegisterDeviceRequest(_message.Message):
    __slots__ = ("device_name", "profile", "radio", "preferences", "model_id", "split_device", "encoding", "position", "sensors")
    class SensorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    RADIO_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_DEVICE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SENSORS_FIELD_NUMBER: _ClassVar[int]
    device_name: str
    profile: str
    radio: str
    preferences: Preferences
    model_id: str
    split_device: int
    encoding: Encoding
    position: Position
    sensors: _containers.ScalarMap[str, float]
    def __init__(self, device_name: _Optional[str] = ..., profile: _Optional[str] = ..., radio: _Optional[str] = ..., preferences: _Optional[_Union[Preferences, _Mapping]] = ..., model_id: _Optional[str] = ..., split_device: _Optional[int] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., sensors: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("device_id", "token", "edge_endpoint", "model_id", "model_version", "split_device", "split_edge", "recommended_split", "preferences", "edge_id", "placement_version", "tasks", "encoding")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EDGE_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_DEVICE_FIELD_NUMBER: _ClassVar[int]
    SPLIT_EDGE_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDED_SPLIT_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    token: str
    edge_endpoint: str
    model_id: str
    model_version: str
    split_device: int
    split_edge: int
    recommended_split: int
    preferences: Preferences
    edge_id: str
    placement_version: int
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    encoding: Encoding
    def __init__(self, device_id: _Optional[str] = ..., token: _Optional[str] = ..., edge_endpoint: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., split_device: _Optional[int] = ..., split_edge: _Optional[int] = ..., recommended_split: _Optional[int] = ..., preferences: _Optional[_Union[Preferences, _Mapping]] = ..., edge_id: _Optional[str] = ..., placement_version: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., encoding: _Optional[_Union[Encoding, str]] = ...) -> None: ...

class UpdatePreferencesRequest(_message.Message):
    __slots__ = ("device_id", "token", "preferences", "split_device")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREFERENCES_FIELD_NUMBER: _ClassVar[int]
    SPLIT_DEVICE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    token: str
    preferences: Preferences
    split_device: int
    def __init__(self, device_id: _Optional[str] = ..., token: _Optional[str] = ..., preferences: _Optional[_Union[Preferences, _Mapping]] = ..., split_device: _Optional[int] = ...) -> None: ...

class GetAssignmentRequest(_message.Message):
    __slots__ = ("device_id", "token", "holder")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    token: str
    holder: str
    def __init__(self, device_id: _Optional[str] = ..., token: _Optional[str] = ..., holder: _Optional[str] = ...) -> None: ...

class RegisterEdgeRequest(_message.Message):
    __slots__ = ("endpoint", "capacity", "position", "activation_cost")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_COST_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    capacity: float
    position: Position
    activation_cost: float
    def __init__(self, endpoint: _Optional[str] = ..., capacity: _Optional[float] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., activation_cost: _Optional[float] = ...) -> None: ...

class LocationReport(_message.Message):
    __slots__ = ("device_id", "token", "position", "unix_ms")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    token: str
    position: Position
    unix_ms: int
    def __init__(self, device_id: _Optional[str] = ..., token: _Optional[str] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., unix_ms: _Optional[int] = ...) -> None: ...

class DeregisterEdgeRequest(_message.Message):
    __slots__ = ("edge_id",)
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    def __init__(self, edge_id: _Optional[str] = ...) -> None: ...

class RegisterEdgeResponse(_message.Message):
    __slots__ = ("edge_id",)
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    def __init__(self, edge_id: _Optional[str] = ...) -> None: ...

class EdgeHeartbeat(_message.Message):
    __slots__ = ("edge_id", "load", "queue_depth")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    load: float
    queue_depth: int
    def __init__(self, edge_id: _Optional[str] = ..., load: _Optional[float] = ..., queue_depth: _Optional[int] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revoked: _Optional[_Iterable[str]] = ...) -> None: ...

class EnrolDeviceRequest(_message.Message):
    __slots__ = ("code", "public_key", "registration", "pinned_split")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    PINNED_SPLIT_FIELD_NUMBER: _ClassVar[int]
    code: str
    public_key: bytes
    registration: RegisterDeviceRequest
    pinned_split: bool
    def __init__(self, code: _Optional[str] = ..., public_key: _Optional[bytes] = ..., registration: _Optional[_Union[RegisterDeviceRequest, _Mapping]] = ..., pinned_split: _Optional[bool] = ...) -> None: ...

class PlaceRequest(_message.Message):
    __slots__ = ("method", "seed")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    method: str
    seed: int
    def __init__(self, method: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class GetPlacementRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DevicePlacement(_message.Message):
    __slots__ = ("device_id", "device_name", "edge_id", "position", "service_cost")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_COST_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    device_name: str
    edge_id: str
    position: Position
    service_cost: float
    def __init__(self, device_id: _Optional[str] = ..., device_name: _Optional[str] = ..., edge_id: _Optional[str] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., service_cost: _Optional[float] = ...) -> None: ...

class EdgePlacement(_message.Message):
    __slots__ = ("edge_id", "endpoint", "position", "active", "alive", "devices", "activation_cost")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_COST_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    endpoint: str
    position: Position
    active: bool
    alive: bool
    devices: int
    activation_cost: float
    def __init__(self, edge_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., active: _Optional[bool] = ..., alive: _Optional[bool] = ..., devices: _Optional[int] = ..., activation_cost: _Optional[float] = ...) -> None: ...

class PlacementReport(_message.Message):
    __slots__ = ("version", "method", "trigger", "total_cost", "activation_cost", "service_cost", "seconds", "computed_unix_ms", "edges", "devices", "instance_json")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_COST_FIELD_NUMBER: _ClassVar[int]
    SERVICE_COST_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_JSON_FIELD_NUMBER: _ClassVar[int]
    version: int
    method: str
    trigger: str
    total_cost: float
    activation_cost: float
    service_cost: float
    seconds: float
    computed_unix_ms: int
    edges: _containers.RepeatedCompositeFieldContainer[EdgePlacement]
    devices: _containers.RepeatedCompositeFieldContainer[DevicePlacement]
    instance_json: str
    def __init__(self, version: _Optional[int] = ..., method: _Optional[str] = ..., trigger: _Optional[str] = ..., total_cost: _Optional[float] = ..., activation_cost: _Optional[float] = ..., service_cost: _Optional[float] = ..., seconds: _Optional[float] = ..., computed_unix_ms: _Optional[int] = ..., edges: _Optional[_Iterable[_Union[EdgePlacement, _Mapping]]] = ..., devices: _Optional[_Iterable[_Union[DevicePlacement, _Mapping]]] = ..., instance_json: _Optional[str] = ...) -> None: ...

class FetchPartitionRequest(_message.Message):
    __slots__ = ("model_id", "model_version", "start", "stop", "max_chunk_bytes")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    start: int
    stop: int
    max_chunk_bytes: int
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., start: _Optional[int] = ..., stop: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("file", "sha256", "size", "offset", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: str
    sha256: str
    size: int
    offset: int
    data: bytes
    def __init__(self, file: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class HeadSpec(_message.Message):
    __slots__ = ("model_id", "name", "labels", "weight", "bias", "input")
    class Input(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INPUT_UNSPECIFIED: _ClassVar[HeadSpec.Input]
        LOGITS: _ClassVar[HeadSpec.Input]
        PROBABILITIES: _ClassVar[HeadSpec.Input]
    INPUT_UNSPECIFIED: HeadSpec.Input
    LOGITS: HeadSpec.Input
    PROBABILITIES: HeadSpec.Input
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    weight: _containers.RepeatedScalarFieldContainer[float]
    bias: _containers.RepeatedScalarFieldContainer[float]
    input: HeadSpec.Input
    def __init__(self, model_id: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., weight: _Optional[_Iterable[float]] = ..., bias: _Optional[_Iterable[float]] = ..., input: _Optional[_Union[HeadSpec.Input, str]] = ...) -> None: ...

class AddHeadResponse(_message.Message):
    __slots__ = ("heads",)
    HEADS_FIELD_NUMBER: _ClassVar[int]
    heads: int
    def __init__(self, heads: _Optional[int] = ...) -> None: ...

class ListHeadsRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ListHeadsResponse(_message.Message):
    __slots__ = ("heads",)
    HEADS_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[HeadSpec]
    def __init__(self, heads: _Optional[_Iterable[_Union[HeadSpec, _Mapping]]] = ...) -> None: ...

class Grid(_message.Message):
    __slots__ = ("south_west", "north_east", "rows", "cols")
    SOUTH_WEST_FIELD_NUMBER: _ClassVar[int]
    NORTH_EAST_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    south_west: Position
    north_east: Position
    rows: int
    cols: int
    def __init__(self, south_west: _Optional[_Union[Position, _Mapping]] = ..., north_east: _Optional[_Union[Position, _Mapping]] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ...) -> None: ...

class CampaignSpec(_message.Message):
    __slots__ = ("name", "grid", "slots", "reporters", "method", "theta", "time_threshold", "reputation_floor", "subbands", "rho")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    REPORTERS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    THETA_FIELD_NUMBER: _ClassVar[int]
    TIME_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FLOOR_FIELD_NUMBER: _ClassVar[int]
    SUBBANDS_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    name: str
    grid: Grid
    slots: int
    reporters: _containers.RepeatedScalarFieldContainer[int]
    method: str
    theta: float
    time_threshold: int
    reputation_floor: float
    subbands: int
    rho: float
    def __init__(self, name: _Optional[str] = ..., grid: _Optional[_Union[Grid, _Mapping]] = ..., slots: _Optional[int] = ..., reporters: _Optional[_Iterable[int]] = ..., method: _Optional[str] = ..., theta: _Optional[float] = ..., time_threshold: _Optional[int] = ..., reputation_floor: _Optional[float] = ..., subbands: _Optional[int] = ..., rho: _Optional[float] = ...) -> None: ...

class CampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class DeviceTasks(_message.Message):
    __slots__ = ("device_id", "device_name", "tasks", "disclosure", "dangerous")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    DANGEROUS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    device_name: str
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    disclosure: float
    dangerous: bool
    def __init__(self, device_id: _Optional[str] = ..., device_name: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., disclosure: _Optional[float] = ..., dangerous: _Optional[bool] = ...) -> None: ...

class DeviceQuality(_message.Message):
    __slots__ = ("device_id", "device_name", "reports", "quality", "reputation", "outliers")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    OUTLIERS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    device_name: str
    reports: int
    quality: float
    reputation: float
    outliers: int
    def __init__(self, device_id: _Optional[str] = ..., device_name: _Optional[str] = ..., reports: _Optional[int] = ..., quality: _Optional[float] = ..., reputation: _Optional[float] = ..., outliers: _Optional[int] = ...) -> None: ...

class CampaignReport(_message.Message):
    __slots__ = ("campaign_id", "spec", "status", "requested_work", "allocated_work", "participants", "chosen", "dangerous", "utility", "seconds", "allocation", "results", "quality", "excluded", "coverage", "cells", "objective", "latency_s")
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_WORK_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_WORK_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    DANGEROUS_FIELD_NUMBER: _ClassVar[int]
    UTILITY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    spec: CampaignSpec
    status: str
    requested_work: int
    allocated_work: int
    participants: int
    chosen: int
    dangerous: int
    utility: float
    seconds: float
    allocation: _containers.RepeatedCompositeFieldContainer[DeviceTasks]
    results: int
    quality: _containers.RepeatedCompositeFieldContainer[DeviceQuality]
    excluded: _containers.RepeatedScalarFieldContainer[str]
    coverage: int
    cells: int
    objective: float
    latency_s: float
    def __init__(self, campaign_id: _Optional[str] = ..., spec: _Optional[_Union[CampaignSpec, _Mapping]] = ..., status: _Optional[str] = ..., requested_work: _Optional[int] = ..., allocated_work: _Optional[int] = ..., participants: _Optional[int] = ..., chosen: _Optional[int] = ..., dangerous: _Optional[int] = ..., utility: _Optional[float] = ..., seconds: _Optional[float] = ..., allocation: _Optional[_Iterable[_Union[DeviceTasks, _Mapping]]] = ..., results: _Optional[int] = ..., quality: _Optional[_Iterable[_Union[DeviceQuality, _Mapping]]] = ..., excluded: _Optional[_Iterable[str]] = ..., coverage: _Optional[int] = ..., cells: _Optional[int] = ..., objective: _Optional[float] = ..., latency_s: _Optional[float] = ...) -> None: ...

class ReputationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SiteRequest(_message.Message):
    __slots__ = ("event", "level", "budget", "position")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    event: str
    level: float
    budget: float
    position: Position
    def __init__(self, event: _Optional[str] = ..., level: _Optional[float] = ..., budget: _Optional[float] = ..., position: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class SiteScore(_message.Message):
    __slots__ = ("site", "eligible", "reason", "quality", "group", "price", "proximity_m", "score")
    SITE_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    PROXIMITY_M_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    site: str
    eligible: bool
    reason: str
    quality: float
    group: _containers.RepeatedScalarFieldContainer[str]
    price: float
    proximity_m: float
    score: float
    def __init__(self, site: _Optional[str] = ..., eligible: _Optional[bool] = ..., reason: _Optional[str] = ..., quality: _Optional[float] = ..., group: _Optional[_Iterable[str]] = ..., price: _Optional[float] = ..., proximity_m: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class SiteSelection(_message.Message):
    __slots__ = ("chosen", "sites")
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    chosen: str
    sites: _containers.RepeatedCompositeFieldContainer[SiteScore]
    def __init__(self, chosen: _Optional[str] = ..., sites: _Optional[_Iterable[_Union[SiteScore, _Mapping]]] = ...) -> None: ...

class Reputations(_message.Message):
    __slots__ = ("devices", "floor")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[DeviceQuality]
    floor: float
    def __init__(self, devices: _Optional[_Iterable[_Union[DeviceQuality, _Mapping]]] = ..., floor: _Optional[float] = ...) -> None: ...
