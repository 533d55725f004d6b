"""What the cloud core's tests share: the bundled model, a core with one edge node, and a core on a
clock the test moves with its scheduler metrics in their own Prometheus registry. The fixtures are
imported by each ``tests/cloud_server/test_core*.py``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from cloud_server.core import (
    CloudCore,
)
from cloud_server.registry import Registry
from ecd import codec, zoo
from ecd.manifest import load_heldout
from ecd.partition import Partition
from ecd.scheduler_types import CampaignSpec, Grid
from ecd.metrics import SchedulerMetrics
from ecd.split import Preferences
from ecd.types import (
    Frame,
    DeviceRegistration,
    EdgeRegistration,
    Encoding,
    Position,
    Split,
)

M = zoo.load_manifest("digits_cnn")


@pytest.fixture
def core(tmp_path: Path) -> CloudCore:
    c = CloudCore(Registry(tmp_path / "r.sqlite3"), [M])
    c.edges.register(EdgeRegistration("127.0.0.1:1", 10.0))
    return c


def register(core: CloudCore, split: int = 2, min_split: int = 0):
    return core.devices.register(DeviceRegistration("d", "pi4", "wifi", Preferences(1.0, 1.0, min_split), M.model_id, split, Encoding.FLOAT32))


# --- the control plane, on a clock the test moves ------------------------------------------------
#
# The core and its registry take a clock (``ecd.clock.Clock``); here both read one the test sets, so
# leases, timeouts, grace periods and the scheduler timings are checked at their exact boundaries
# instead of being slept through.

N = M.n_blocks
A_POS, B_POS = Position(40.70, -74.00), Position(40.80, -74.00)  # two edge sites ~11 km apart
NEAR_A, NEAR_B = Position(40.701, -74.00), Position(40.799, -74.00)


class Clock:
    """An ``ecd.clock.Clock`` the test moves: wall time and the timer are the same number."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def time(self) -> float:
        return self.now

    perf_counter = time


@dataclasses.dataclass
class Cloud:
    core: CloudCore
    clock: Clock
    prom: CollectorRegistry
    changes: list[int]

    def runs(self, scheduler: str, method: str, outcome: str) -> float | None:
        return self.prom.get_sample_value("ecd_scheduler_runs_total", {"scheduler": scheduler, "method": method, "outcome": outcome})

    def seconds(self, scheduler: str) -> float | None:
        return self.prom.get_sample_value("ecd_scheduler_seconds_sum", {"scheduler": scheduler})

    def register(self, name: str = "d", split: int = 2, position: Position | None = None, profile: str = "pi4",
                 prefs: Preferences = Preferences(0.6, 0.4, 0), encoding: Encoding = Encoding.FLOAT32, sensors=None):
        return self.core.devices.register(DeviceRegistration(name, profile, "wifi", prefs, M.model_id, split, encoding, position,
                                                            sensors or {}))

    def edge(self, port: int, position: Position | None = None, owner: str = "", cost: float = 0.0, capacity: float = 10.0) -> str:
        return self.core.edges.register(EdgeRegistration(f"127.0.0.1:{port}", capacity, position, cost), owner)


@pytest.fixture
def cloud(tmp_path: Path) -> Cloud:
    clock = Clock()
    changes: list[int] = []
    prom = CollectorRegistry()
    c = CloudCore(Registry(str(tmp_path / "r.sqlite3"), clock=clock.time), [M], on_change=lambda: changes.append(1),
                  metrics=SchedulerMetrics(prom), clock=clock)
    return Cloud(c, clock, prom, changes)


def frame(a, split: Split, x: np.ndarray | None = None, frame_id: int = 1) -> Frame:
    x = M.input.preprocess(load_heldout(M).images[:1]) if x is None else x
    act = Partition(M, 0, split.edge).run(x)
    return Frame(a.device_id, frame_id, a.token, a.model_id, a.model_version, split, codec.encode(act),
                 device_compute_s=0.25, edge_compute_s=0.5, uplink_bytes=123, wire_bytes=77)


GRID = Grid(Position(40.70, -74.02), Position(40.72, -73.98), rows=1, cols=2)
WEST, EAST = Position(40.71, -74.01), Position(40.71, -73.99)


def campaign_spec(**kw) -> CampaignSpec:
    return CampaignSpec(**{"name": "heat", "grid": GRID, "slots": 2, "reporters": [1], "method": "tapp", "theta": 5.0, **kw})
