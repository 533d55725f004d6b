"""The mobile edge-server activation problem (MESAP) of paper 003, its costs and metrics.

Paper: "Clustering ant-colony edge-server location strategies for mobile crowdsensing" (OTACS /
TTACS), §2.3 (Eqs. 1–5) and §3.2 (Eqs. 21–24).

* Servers j have an activation cost AC_j and an incremental processing cost IPC_j(b) per data type
  b (``inf`` = cannot process b). FC_j = AC_j + Σ_{b ∈ β_j} IPC_j(b) (Eq. 1).
* Users i carry data types BT_i and start at L_i. Each of a user's types is uploaded to one active
  server that processes it; SC_i is the user's tour from L_i through the distinct servers it uses
  and back (Eq. 2).
* Objective (Eq. 4 as restated in ALGORITHMS.md): Σ_j p_j·AC_j + Σ_{j,b} q_jb·IPC_j(b) + Σ_i SC_i.

Choices the paper leaves open or states inconsistently (ours):

* **A data type may be processed by several servers** (q_jb per server; each user's type goes to
  exactly one, Eq. 15). Eq. (16) read literally (one server per type in the whole system) would
  make the one-type case a single-server problem, contradicting the stated equivalence with
  uncapacitated facility location that the OR-Library anchors rely on.
* Tour order (Eq. 2 does not fix it): exact for ≤ 4 distinct servers, nearest neighbour + 2-opt
  beyond.
* A user's type goes to the open server of that type nearest to the user (star distance); the tour
  is then measured through the servers so chosen. With only a user × server cost matrix (OR-Library,
  no coordinates) the service cost is the "star" sum Σ c_ij over the servers a user uses.
* Load metrics: LBSU_j = users served by j, LBSD_j = data items received by j; avgLBSU and avgLBSD =
  (max − min) / NAMES (Eqs. 21–24).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from scheduling.errors import SchedulingError

__all__ = [
    "PlacementError",
    "InfeasibleError",
    "PlacementProblem",
    "Placement",
    "evaluate",
    "assign_users",
]


class PlacementError(SchedulingError):
    """A malformed placement instance; the message names the field."""


class InfeasibleError(PlacementError):
    """No placement satisfies the constraints; the message says which."""


def _check(name: str, a: np.ndarray, allow_inf: bool = False) -> None:
    bad = np.isnan(a) | (a < 0)
    if not allow_inf:
        bad |= np.isinf(a)
    if bad.any():
        idx = tuple(int(v) for v in np.argwhere(bad)[0])
        raise PlacementError(f"{name}: costs must be finite and >= 0 (got {a[idx]} at index {list(idx)})")


@dataclass(frozen=True)
class PlacementProblem:
    activation_cost: np.ndarray  # (M,) AC_j
    processing_cost: np.ndarray  # (M, K) IPC_j(b); inf = server j cannot process type b
    user_types: np.ndarray  # (N, K) bool: BT_i
    server_pos: np.ndarray | None = None  # (M, 2)
    user_pos: np.ndarray | None = None  # (N, 2)
    service_cost: np.ndarray | None = None  # (N, M) user-server cost, when there are no coordinates
    user_items: np.ndarray | None = None  # (N, K) data items per type (default 1 per carried type)
    type_names: tuple[str, ...] = ()
    _dist_us: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        ac = np.asarray(self.activation_cost, dtype=np.float64)
        ipc = np.asarray(self.processing_cost, dtype=np.float64)
        types = np.asarray(self.user_types, dtype=bool)
        object.__setattr__(self, "activation_cost", ac)
        object.__setattr__(self, "processing_cost", ipc)
        object.__setattr__(self, "user_types", types)
        if ac.ndim != 1 or len(ac) == 0:
            raise PlacementError("activation_cost: the server set is empty")
        m = len(ac)
        if ipc.ndim != 2 or ipc.shape[0] != m:
            raise PlacementError(f"processing_cost: expected shape ({m}, K), got {list(ipc.shape)}")
        k = ipc.shape[1]
        if k == 0:
            raise PlacementError("processing_cost: no data types (K = 0)")
        if types.ndim != 2 or types.shape[1] != k:
            raise PlacementError(f"user_types: expected shape (N, {k}), got {list(types.shape)}")
        if len(types) == 0:
            raise PlacementError("user_types: the user set is empty")
        _check("activation_cost", ac)
        _check("processing_cost", ipc, allow_inf=True)
        for b in np.flatnonzero(types.any(axis=0)):
            if np.isinf(ipc[:, b]).all():
                raise InfeasibleError(f"processing_cost: no server can process data type {self.type_name(int(b))!r}, which users carry")
        if self.service_cost is None:
            if self.server_pos is None or self.user_pos is None:
                raise PlacementError("user_pos, server_pos: give coordinates for users and servers, or a service_cost matrix")
            sp = np.asarray(self.server_pos, dtype=np.float64)
            up = np.asarray(self.user_pos, dtype=np.float64)
            if sp.shape != (m, 2):
                raise PlacementError(f"server_pos: expected shape ({m}, 2), got {list(sp.shape)}")
            if up.shape != (len(types), 2):
                raise PlacementError(f"user_pos: expected one location per user, shape ({len(types)}, 2), got {list(up.shape)}")
            for name, a in (("server_pos", sp), ("user_pos", up)):
                if not np.isfinite(a).all():
                    i = int(np.argwhere(~np.isfinite(a))[0][0])
                    raise PlacementError(f"{name}: entry {i} has no valid location")
            object.__setattr__(self, "server_pos", sp)
            object.__setattr__(self, "user_pos", up)
        else:
            sc = np.asarray(self.service_cost, dtype=np.float64)
            if sc.shape != (len(types), m):
                raise PlacementError(f"service_cost: expected shape ({len(types)}, {m}), got {list(sc.shape)}")
            _check("service_cost", sc)
            object.__setattr__(self, "service_cost", sc)
        items = self.user_items if self.user_items is not None else types.astype(np.float64)
        object.__setattr__(self, "user_items", np.asarray(items, dtype=np.float64))

    @property
    def n_servers(self) -> int:
        return len(self.activation_cost)

    @property
    def n_users(self) -> int:
        return len(self.user_types)

    @property
    def n_types(self) -> int:
        return self.processing_cost.shape[1]

    @property
    def has_coordinates(self) -> bool:
        return self.service_cost is None

    def type_name(self, b: int) -> str:
        return self.type_names[b] if b < len(self.type_names) else str(b)

    def user_server_cost(self) -> np.ndarray:
        """(N, M): the star cost of a user using a server — c_ij, or the round trip 2·d(L_i, s_j)."""
        if not self.has_coordinates:
            return self.service_cost
        if self._dist_us is None:
            d = np.sqrt(((self.user_pos[:, None, :] - self.server_pos[None, :, :]) ** 2).sum(-1))
            object.__setattr__(self, "_dist_us", d)
        return 2.0 * self._dist_us


@dataclass(frozen=True)
class Placement:
    """A solution: which server processes which type (open_), and where each user's type goes."""

    open_: np.ndarray  # (M, K) bool: q_jb
    assignment: np.ndarray  # (N, K) int server per carried type, -1 where the user lacks the type
    total_cost: float
    facility_cost: float
    service_cost: float
    names: int  # NAMES: activated servers
    avg_lbsu: float
    avg_lbsd: float
    method: str = ""

    @property
    def activated(self) -> np.ndarray:
        return np.flatnonzero(self.open_.any(axis=1))

    def to_dict(self, problem: PlacementProblem) -> dict:
        return {
            "method": self.method,
            "total_cost": self.total_cost,
            "facility_cost": self.facility_cost,
            "service_cost": self.service_cost,
            "activated_servers": self.activated.tolist(),
            "types_per_server": {
                int(j): [problem.type_name(int(b)) for b in np.flatnonzero(self.open_[j])] for j in self.activated
            },
            "assignment": self.assignment.tolist(),
            "metrics": {"NAMES": self.names, "TC": self.total_cost, "avgLBSU": self.avg_lbsu, "avgLBSD": self.avg_lbsd},
        }


def assign_users(problem: PlacementProblem, open_: np.ndarray) -> np.ndarray:
    """Each user's each carried type -> the open server of that type with the least star cost."""
    cost = problem.user_server_cost()
    n, k = problem.user_types.shape
    out = np.full((n, k), -1, dtype=np.int64)
    for b in range(k):
        users = np.flatnonzero(problem.user_types[:, b])
        if len(users) == 0:
            continue
        servers = np.flatnonzero(open_[:, b])
        if len(servers) == 0:
            raise InfeasibleError(f"open_: data type {problem.type_name(b)!r} is carried by users but no open server processes it")
        out[users, b] = servers[np.argmin(cost[np.ix_(users, servers)], axis=1)]
    return out


def _tour_length(points: np.ndarray) -> float:
    """Closed tour from points[0] (the user) through the rest and back: exact for <= 4 servers."""
    k = len(points) - 1
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    if k <= 4:
        best = math.inf
        for perm in itertools.permutations(range(1, k + 1)):
            if k > 1 and perm[0] > perm[-1]:
                continue  # a cycle and its reverse have the same length
            order = (0, *perm, 0)
            best = min(best, sum(d[a, b] for a, b in zip(order, order[1:])))
        return float(best)
    order = [0]  # nearest neighbour
    left = set(range(1, k + 1))
    while left:
        nxt = min(left, key=lambda j: d[order[-1], j])
        order.append(nxt)
        left.remove(nxt)
    order.append(0)
    improved = True
    while improved:  # 2-opt
        improved = False
        for a in range(1, len(order) - 2):
            for b in range(a + 1, len(order) - 1):
                delta = d[order[a - 1], order[b]] + d[order[a], order[b + 1]] - d[order[a - 1], order[a]] - d[order[b], order[b + 1]]
                if delta < -1e-12:
                    order[a : b + 1] = order[a : b + 1][::-1]
                    improved = True
    return float(sum(d[a, b] for a, b in zip(order, order[1:])))


def service_costs(problem: PlacementProblem, assignment: np.ndarray) -> np.ndarray:
    """SC_i for every user (Eq. 2), or the star sum without coordinates."""
    n = problem.n_users
    sc = np.zeros(n)
    if not problem.has_coordinates:
        for i in range(n):
            servers = np.unique(assignment[i][assignment[i] >= 0])
            sc[i] = problem.service_cost[i, servers].sum()
        return sc
    d = problem.user_server_cost() / 2.0
    for i in range(n):
        servers = np.unique(assignment[i][assignment[i] >= 0])
        if len(servers) == 1:
            sc[i] = 2.0 * d[i, servers[0]]
        elif len(servers) > 1:
            sc[i] = _tour_length(np.vstack([problem.user_pos[i], problem.server_pos[servers]]))
    return sc


def evaluate(problem: PlacementProblem, open_: np.ndarray, method: str = "", assignment: np.ndarray | None = None) -> Placement:
    """Close every (server, type) no user uses, assign users, and measure cost and load."""
    open_ = np.asarray(open_, dtype=bool).copy()
    if np.isinf(problem.processing_cost[open_]).any():
        raise InfeasibleError("open_: a server is asked to process a data type it cannot process")
    if assignment is None:
        assignment = assign_users(problem, open_)
    used = np.zeros_like(open_)
    rows, cols = np.nonzero(assignment >= 0)
    used[assignment[rows, cols], cols] = True
    open_ &= used  # an open (server, type) nobody uses only costs
    active = open_.any(axis=1)
    facility = float(problem.activation_cost[active].sum() + problem.processing_cost[open_].sum())
    service = float(service_costs(problem, assignment).sum())
    users_per = np.zeros(problem.n_servers)
    items_per = np.zeros(problem.n_servers)
    for i in range(problem.n_users):
        s = assignment[i][assignment[i] >= 0]
        users_per[np.unique(s)] += 1
        np.add.at(items_per, s, problem.user_items[i][assignment[i] >= 0])
    names = int(active.sum())
    lbsu = (users_per[active].max() - users_per[active].min()) / names if names else 0.0
    lbsd = (items_per[active].max() - items_per[active].min()) / names if names else 0.0
    return Placement(open_, assignment, facility + service, facility, service, names, float(lbsu), float(lbsd), method)
