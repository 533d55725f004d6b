"""Placement in the running cloud: which edge nodes are active, and which edge each device streams
to — paper 003's edge-server activation problem, solved by :mod:`scheduling.placement` over the
registry's live edge nodes and devices.

How the paper's model meets a live system (our choices, documented because the paper's evaluation is
offline):

* **Servers** are the edge nodes that are alive (a heartbeat within the cloud's edge timeout) and
  registered a position; **users** are the devices whose position is known; each served model is
  one **data type** and a device carries its model's type. Every edge node can run every model
  (it fetches partitions from the cloud on demand), so IPC_j(b) = 0.
* Positions (WGS 84 degrees) are projected to a local plane in km (equirectangular about the mean
  latitude of the points placed): at city scale the error is well under 1 %. The service cost is
  the paper's star cost, the round trip ``2·d(device, edge)`` in km.
* AC_j is the edge's registered ``activation_cost``, else the cloud's default
  (``--placement-activation-cost``), in the same km-equivalent unit: an edge is worth opening when it
  saves devices more than that many km of round trips.
* The paper's model is uncapacitated: an edge's ``capacity`` is recorded, not enforced.
* A device without a position, or when no alive edge has one, goes to the least loaded alive edge
  (devices per unit of capacity) — the rule the cloud used before placement.
* Between full placements a device that joins or moves goes to the cheapest *active* edge — the
  paper's assignment rule for a fixed set of open servers. A full placement runs when an edge node
  joins, is lost (misses its heartbeats) or leaves, and when an operator asks.

The instance is exported in ``ecd placement solve --instance`` format, so an operator can reproduce
any placement offline (tests/cloud_server/test_placement_service.py checks that they agree).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ecd.errors import PreconditionError, RequestError
from ecd.types import Position
from scheduling.placement import METHODS, PlacementProblem, solve

EARTH_RADIUS_KM = 6371.0088
DEFAULT_METHOD = "otacs_ls"  # closest to optimal on the OR-Library benchmark (1.0002 x optimum)


@dataclass(frozen=True)
class Site:
    """An edge node as placement sees it."""

    edge_id: str
    position: Position
    activation_cost: float


@dataclass(frozen=True)
class User:
    """A device as placement sees it."""

    device_id: str
    position: Position
    data_type: str  # the model it streams


@dataclass
class Solution:
    method: str
    seconds: float
    total_cost: float
    activation_cost: float
    service_cost: float
    device_edge: dict[str, str]  # device id -> edge id
    device_cost: dict[str, float]  # device id -> its service cost
    active: list[str]  # edge ids placement keeps on
    instance: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.instance)


def check_method(method: str) -> str:
    """A placement method an operator or the config names (the one check: what passes is solved)."""
    if method not in METHODS:
        raise RequestError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return method


def project_km(points: Sequence[Position]) -> np.ndarray:
    """(n, 2) km on a local plane: equirectangular about the points' mean latitude."""
    lat = np.radians([p.lat for p in points])
    lon = np.radians([p.lon for p in points])
    lat0 = float(lat.mean())
    lon0 = float(np.angle(np.exp(1j * lon).mean()))  # the mean longitude, across the antimeridian too
    dlon = np.angle(np.exp(1j * (lon - lon0)))
    return np.stack([EARTH_RADIUS_KM * dlon * math.cos(lat0), EARTH_RADIUS_KM * (lat - lat0)], axis=1)


def build_problem(sites: Sequence[Site], users: Sequence[User]) -> tuple[PlacementProblem, dict]:
    """The live instance as the solver's typed problem, and the same instance in the
    ``ecd placement solve --instance`` JSON format (kept with the report, for offline reproduction)."""
    if not sites:
        raise PreconditionError("edges: no alive edge node has a position to place devices on")
    if not users:
        raise PreconditionError("devices: no device has reported a position yet")
    types = sorted({u.data_type for u in users})
    xy = project_km([s.position for s in sites] + [u.position for u in users])
    user_types = np.array([[u.data_type == t for t in types] for u in users], dtype=bool)
    problem = PlacementProblem(
        activation_cost=np.array([float(s.activation_cost) for s in sites]),
        processing_cost=np.zeros((len(sites), len(types))),  # every edge node runs every model: IPC_j(b) = 0
        user_types=user_types, server_pos=xy[: len(sites)], user_pos=xy[len(sites):], type_names=tuple(types),
    )
    instance = {
        "types": types,
        "servers": [
            {"id": s.edge_id, "x": float(x), "y": float(y), "activation_cost": float(s.activation_cost),
             "processing_cost": {t: 0.0 for t in types}}
            for s, (x, y) in zip(sites, xy[: len(sites)])
        ],
        "users": [
            {"id": u.device_id, "x": float(x), "y": float(y), "types": [u.data_type]}
            for u, (x, y) in zip(users, xy[len(sites):])
        ],
    }
    return problem, instance


def place(sites: Sequence[Site], users: Sequence[User], method: str = DEFAULT_METHOD, seed: int = 0) -> Solution:
    """Solve the live instance with ``method`` (checked by the caller: :func:`check_method`)."""
    problem, instance = build_problem(sites, users)
    t0 = time.perf_counter()
    placement = solve(problem, method, seed=seed)
    seconds = time.perf_counter() - t0
    per_user = problem.user_server_cost()
    device_edge, device_cost = {}, {}
    for i, u in enumerate(users):
        j = int(placement.assignment[i].max())  # one carried type per device
        device_edge[u.device_id] = sites[j].edge_id
        device_cost[u.device_id] = float(per_user[i, j])
    return Solution(
        method=method, seconds=seconds, total_cost=float(placement.total_cost),
        activation_cost=float(placement.facility_cost), service_cost=float(placement.service_cost),
        device_edge=device_edge, device_cost=device_cost,
        active=[sites[int(j)].edge_id for j in placement.activated], instance=instance,
    )


def nearest_active(position: Position, sites: Sequence[Site], active: set[str]) -> str | None:
    """The cheapest active edge for a device at ``position`` (the paper's rule for a fixed open set)."""
    candidates = [s for s in sites if s.edge_id in active]
    if not candidates:
        return None
    xy = project_km([position] + [s.position for s in candidates])
    d = np.sqrt(((xy[1:] - xy[0]) ** 2).sum(axis=1))
    return candidates[int(np.argmin(d))].edge_id
