"""The records of the crowdsensing schedulers as the cloud runs them — placement reports, campaign
specs and reports, site selection — free of any transport, like :mod:`ecd.types` (whose records
they use). Only :mod:`ecd.transport.serde` converts them to and from protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ecd.types import Position, Task

__all__ = ["EdgePlacement", "DevicePlacement", "PlacementReport", "Grid", "CampaignSpec", "DeviceTasks", "SiteRequest", "SiteScore", "SiteSelection", "DeviceQuality", "CampaignReport"]


@dataclass
class EdgePlacement:
    edge_id: str
    endpoint: str
    position: Position | None
    active: bool  # placement keeps it on (some device streams to it)
    alive: bool  # heartbeat within the cloud's edge timeout
    devices: int
    activation_cost: float


@dataclass
class DevicePlacement:
    device_id: str
    device_name: str
    edge_id: str  # "" when the device could not be placed (no alive edge)
    position: Position | None
    service_cost: float  # the device's share of the service cost (0 without a position)


@dataclass
class PlacementReport:
    """Which edge nodes are active and which edge each device streams to, and what it cost."""

    version: int
    method: str
    trigger: str  # what caused it: "edge joined", "edge lost", "operator", ...
    total_cost: float
    activation_cost: float
    service_cost: float
    seconds: float
    computed_unix_ms: int
    edges: list[EdgePlacement] = field(default_factory=list)
    devices: list[DevicePlacement] = field(default_factory=list)
    instance_json: str = ""  # the instance in `ecd placement solve --instance` format


@dataclass(frozen=True)
class Grid:
    """A campaign's area: a rectangle in degrees cut into rows x cols cells (row-major, row 0 south)."""

    south_west: Position
    north_east: Position
    rows: int
    cols: int

    @property
    def cells(self) -> int:
        return self.rows * self.cols


@dataclass
class CampaignSpec:
    name: str
    grid: Grid
    slots: int
    reporters: list[int]  # reports wanted per slot in each cell (one value: every cell)
    method: str = "tapp"
    theta: float = 0.5
    time_threshold: int = 0  # tasks one device may be given; 0 = the number of slots
    reputation_floor: float = -1.0  # < 0: the cloud's default
    subbands: int = 0  # coverage methods: the base station's subbands N; 0 = 4
    rho: float = 0.5  # coverage methods: weight of latency against coverage


@dataclass
class DeviceTasks:
    device_id: str
    device_name: str
    tasks: list[Task]
    disclosure: float = 0.0
    dangerous: bool = False


@dataclass(frozen=True)
class SiteRequest:
    """An operator's question to CrowdPower's site selection: which edge node's area should sense
    this event?"""

    event: str
    level: float  # phone quality wanted, 0..10
    budget: float
    position: Position | None  # where the event is; None only when the sender left it out (refused)


@dataclass
class SiteScore:
    site: str  # edge id
    eligible: bool
    reason: str
    quality: float
    group: list[str]  # device ids
    price: float
    proximity_m: float
    score: float


@dataclass
class SiteSelection:
    chosen: str  # edge id; "" when no site qualifies
    sites: list[SiteScore]


@dataclass
class DeviceQuality:
    device_id: str
    device_name: str
    reports: int
    quality: float
    reputation: float
    outliers: int


@dataclass
class CampaignReport:
    campaign_id: str
    spec: CampaignSpec
    status: str  # running, done
    requested_work: int
    allocated_work: int
    participants: int
    chosen: int
    dangerous: int
    utility: float
    seconds: float
    allocation: list[DeviceTasks] = field(default_factory=list)
    results: int = 0
    quality: list[DeviceQuality] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    coverage: int = 0  # coverage methods: cells covered, C(S), of ``cells`` (M)
    cells: int = 0
    objective: float = 0.0
    latency_s: float = 0.0
