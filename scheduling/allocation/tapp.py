"""TAPP: task allocation with privacy preservation (paper 002, §4.3–4.5, Algorithms 1–3).

Notation (a **reconstruction** of the lost notation, ALGORITHMS.md): subregions j = 1..m;
participants i with actual profile p_i (share of i's visits per subregion, floored at ε and
renormalised; j is *active* for i when p_ij > ε), time threshold T_i and privacy threshold θ_i;
workload w_j unit tasks. An allocation x_ij ∈ ℕ satisfies Σ_i x_ij = w_j, Σ_j x_ij ≤ T_i and
x_ij = 0 where j is inactive for i. Observed profile o_i = x_i / Σ_j x_ij (floored at ε,
renormalised); community profile c = mean of the p_i; privacy disclosure D_i = KL(o_i ‖ c); an
allocated participant with D_i > θ_i is *dangerous*. Utility = 1 − n/N (n allocated of N).

Phases: (1) allocate unit tasks one by one — subregion with the least excess of available time
over remaining work first, to the active participant with the fewest active subregions, then the
most rest time; (2) for each dangerous participant (most work first) move unit tasks, always from
the subregion whose removal changes D_i least (most negative), to a safe candidate that stays safe
(allocated participants first, then the most rest time), until D_i ≤ θ_i or its work is gone —
"else break" when no candidate exists, as in the paper's evaluation; (3) merge: move all of one
participant's tasks to another that covers its subregions when time and privacy still hold, in
passes over the givers until a pass merges nothing.
Baseline1 = phase 1; Baseline2 = greedy: each subregion's work to its active participants with the
largest time threshold first, as much as each can take.

Choices (ours): ε = 1e-6; ties broken by participant index; phase 3 tries givers with the least
work first and receivers with the most rest time first.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import numpy as np

from scheduling.errors import AllocationError

__all__ = ["TappError", "TappInfeasible", "TappInstance", "TappAllocation", "allocate", "METHODS", "kl_disclosure"]

EPS = 1e-6


class TappError(AllocationError):
    """A malformed TAPP instance; the message names the field."""


class TappInfeasible(TappError):
    """The workloads cannot be met; the message says which constraint."""


def _floor(v: np.ndarray) -> np.ndarray:
    v = np.maximum(v, EPS)
    return v / v.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class TappInstance:
    profiles: np.ndarray  # (N, m) actual profiles, rows sum to 1
    time_threshold: np.ndarray  # (N,) unit tasks
    workload: np.ndarray  # (m,) unit tasks
    theta: np.ndarray  # (N,) privacy thresholds

    def __post_init__(self) -> None:
        p = np.asarray(self.profiles, dtype=np.float64)
        t = np.asarray(self.time_threshold)
        w = np.asarray(self.workload)
        th = np.asarray(self.theta, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
            raise TappError("profiles: expected a non-empty (participants x subregions) array")
        if th.shape not in ((), (1,), (p.shape[0],)):
            raise TappError(f"theta: expected one value or {p.shape[0]} values, got shape {list(th.shape)}")
        th = np.broadcast_to(th, (p.shape[0],)).copy()
        if not np.isfinite(p).all() or (p < 0).any():
            raise TappError("profiles: shares must be finite and >= 0")
        sums = p.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-6):
            raise TappError(f"profiles: each participant's shares must sum to 1 (participant {int(np.argmax(np.abs(sums - 1) > 1e-6))} sums to {sums[np.argmax(np.abs(sums - 1) > 1e-6)]:.6g})")
        for name, v, n in (("time_threshold", t, p.shape[0]), ("workload", w, p.shape[1])):
            if v.shape != (n,):
                raise TappError(f"{name}: expected {n} values, got shape {list(v.shape)}")
            if not np.all(np.isfinite(v.astype(np.float64))) or (v < 0).any() or not np.all(np.equal(np.mod(v, 1), 0)):
                raise TappError(f"{name}: expected non-negative whole numbers of unit tasks")
        if not np.isfinite(th).all() or (th < 0).any():
            raise TappError("theta: privacy thresholds must be finite and >= 0")
        object.__setattr__(self, "profiles", p)
        object.__setattr__(self, "time_threshold", t.astype(np.int64))
        object.__setattr__(self, "workload", w.astype(np.int64))
        object.__setattr__(self, "theta", th)

    @property
    def n_participants(self) -> int:
        return self.profiles.shape[0]

    @property
    def n_subregions(self) -> int:
        return self.profiles.shape[1]

    @property
    def active(self) -> np.ndarray:
        return self.profiles > EPS

    @property
    def community(self) -> np.ndarray:
        return _floor(self.profiles).mean(axis=0)


def kl_disclosure(x: np.ndarray, community: np.ndarray) -> float:
    """D = KL(o ‖ c) of one participant's allocation row (0 for an empty row)."""
    total = x.sum()
    if total == 0:
        return 0.0
    o = _floor(x / total)
    return float(np.sum(o * np.log(o / community)))


@dataclass(frozen=True)
class TappAllocation:
    method: str
    x: np.ndarray  # (N, m) unit tasks
    disclosure: np.ndarray  # (N,) D_i (0 for unallocated)
    dangerous: int
    allocated: int
    utility: float

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "allocation": self.x.tolist(),
            "disclosure": self.disclosure.tolist(),
            "dangerous": self.dangerous,
            "allocated": self.allocated,
            "utility": self.utility,
        }


def _result(inst: TappInstance, x: np.ndarray, method: str) -> TappAllocation:
    c = inst.community
    d = np.array([kl_disclosure(row, c) for row in x])
    allocated = x.sum(axis=1) > 0
    dangerous = int(np.sum(allocated & (d > inst.theta + 1e-12)))
    n = int(allocated.sum())
    return TappAllocation(method, x, d, dangerous, n, 1.0 - n / inst.n_participants)


def _check_capacity(inst: TappInstance) -> None:
    active = inst.active
    for j in range(inst.n_subregions):
        available = int(inst.time_threshold[active[:, j]].sum())
        if available < inst.workload[j]:
            raise TappInfeasible(
                f"workload: subregion {j} needs {inst.workload[j]} unit tasks but its active participants have {available} units of time"
            )
    if inst.workload.sum() > inst.time_threshold.sum():
        raise TappInfeasible("workload: the total work exceeds the participants' total time")


# --- phase 1 / Baseline1 ----------------------------------------------------------------------------


def phase1(inst: TappInstance) -> np.ndarray:
    _check_capacity(inst)
    active = inst.active
    n_active = active.sum(axis=1)
    rest = inst.time_threshold.copy()
    remaining = inst.workload.copy()
    x = np.zeros(active.shape, dtype=np.int64)
    available = np.array([rest[active[:, j]].sum() for j in range(inst.n_subregions)], dtype=np.int64)
    heaps = [[(int(n_active[i]), -int(rest[i]), int(i)) for i in np.flatnonzero(active[:, j]) if rest[i] > 0] for j in range(inst.n_subregions)]
    for h in heaps:
        heapq.heapify(h)
    while remaining.sum() > 0:
        excess = np.where(remaining > 0, available - remaining, np.iinfo(np.int64).max)
        j = int(np.argmin(excess))
        if excess[j] < 0:
            raise TappInfeasible(f"time_threshold: subregion {j} cannot be finished with the participants' rest time")
        h = heaps[j]
        while True:
            if not h:
                raise TappInfeasible(f"time_threshold: no active participant with rest time left in subregion {j}")
            _, neg_rest, i = h[0]
            if rest[i] > 0 and -neg_rest == rest[i]:
                break
            heapq.heappop(h)  # stale entry
            if rest[i] > 0:
                heapq.heappush(h, (int(n_active[i]), -int(rest[i]), i))
        heapq.heappop(h)
        x[i, j] += 1
        rest[i] -= 1
        remaining[j] -= 1
        available[active[i]] -= 1
        if rest[i] > 0:
            heapq.heappush(h, (int(n_active[i]), -int(rest[i]), i))
    return x


# --- phase 2: modification --------------------------------------------------------------------------


def _delta_remove(row: np.ndarray, j: int, c: np.ndarray) -> float:
    trial = row.copy()
    trial[j] -= 1
    return kl_disclosure(trial, c) - kl_disclosure(row, c)


def phase2(inst: TappInstance, x: np.ndarray) -> np.ndarray:
    x = x.copy()
    c = inst.community
    theta = inst.theta
    big = math.inf

    def disclosure(i: int) -> float:
        return kl_disclosure(x[i], c)

    dangerous = [i for i in range(inst.n_participants) if x[i].sum() > 0 and disclosure(i) > theta[i]]
    dangerous.sort(key=lambda i: (-x[i].sum(), i))
    dangerous_set = set(dangerous)
    for i in dangerous:
        while x[i].sum() > 0 and disclosure(i) > theta[i]:
            best_j, best_delta, best_k = None, big, None
            for j in np.flatnonzero(x[i] > 0):
                k = _candidate(inst, x, int(j), exclude=dangerous_set)
                if k is None:
                    continue
                d = _delta_remove(x[i], int(j), c)
                if d < best_delta:
                    best_j, best_delta, best_k = int(j), d, k
            if best_j is None:
                break  # "else break": no safe participant can take any of i's tasks
            x[i, best_j] -= 1
            x[best_k, best_j] += 1
        if x[i].sum() == 0 or disclosure(i) <= theta[i]:
            dangerous_set.discard(i)
    return x


def _disclosures(rows: np.ndarray, community: np.ndarray) -> np.ndarray:
    """KL(o ‖ c) for many allocation rows at once (0 for empty rows)."""
    totals = rows.sum(axis=1, keepdims=True)
    o = _floor(rows / np.where(totals > 0, totals, 1))
    d = np.sum(o * np.log(o / community), axis=1)
    return np.where(totals[:, 0] > 0, d, 0.0)


def _candidate(inst: TappInstance, x: np.ndarray, j: int, exclude: set[int]) -> int | None:
    """A safe participant active in j with rest time who stays safe with one more task in j:
    allocated participants first, then the most rest time (then the lowest index)."""
    loads = x.sum(axis=1)
    cands = np.flatnonzero(inst.active[:, j] & (loads < inst.time_threshold))
    if exclude:
        cands = cands[~np.isin(cands, list(exclude))]
    if len(cands) == 0:
        return None
    trial = x[cands].copy()
    trial[:, j] += 1
    ok = cands[_disclosures(trial, inst.community) <= inst.theta[cands]]
    if len(ok) == 0:
        return None
    rest = inst.time_threshold[ok] - loads[ok]
    order = np.lexsort((ok, -rest, loads[ok] == 0))
    return int(ok[order[0]])


# --- phase 3: merging -------------------------------------------------------------------------------


def phase3(inst: TappInstance, x: np.ndarray) -> np.ndarray:
    """Merge: passes over the givers (least work first) until a pass merges nothing."""
    x = x.copy()
    merged = True
    while merged:
        merged = False
        loads = x.sum(axis=1)
        for a in sorted(np.flatnonzero(loads > 0), key=lambda a: (loads[a], a)):
            if loads[a] == 0:
                continue  # already merged into another participant in this pass
            regions = x[a] > 0
            receivers = np.flatnonzero((loads > 0) & (np.arange(len(loads)) != a))
            receivers = receivers[inst.active[np.ix_(receivers, np.flatnonzero(regions))].all(axis=1)]
            receivers = receivers[loads[a] + loads[receivers] <= inst.time_threshold[receivers]]
            if len(receivers) == 0:
                continue
            safe = receivers[_disclosures(x[receivers] + x[a], inst.community) <= inst.theta[receivers]]
            if len(safe) == 0:
                continue
            b = int(safe[np.lexsort((safe, -(inst.time_threshold[safe] - loads[safe])))[0]])
            x[b] += x[a]
            x[a] = 0
            loads[b] += loads[a]
            loads[a] = 0
            merged = True
    return x


# --- methods ----------------------------------------------------------------------------------------


def tapp(inst: TappInstance, seed: int = 0) -> TappAllocation:
    return _result(inst, phase3(inst, phase2(inst, phase1(inst))), "tapp")


def baseline1(inst: TappInstance, seed: int = 0) -> TappAllocation:
    return _result(inst, phase1(inst), "baseline1")


def baseline2(inst: TappInstance, seed: int = 0) -> TappAllocation:
    _check_capacity(inst)
    x = np.zeros(inst.profiles.shape, dtype=np.int64)
    rest = inst.time_threshold.copy()
    order = np.lexsort((np.arange(inst.n_participants), -inst.time_threshold))
    for j in range(inst.n_subregions):
        need = int(inst.workload[j])
        for i in order:
            if need == 0:
                break
            if inst.active[i, j] and rest[i] > 0:
                take = min(need, int(rest[i]))
                x[i, j] += take
                rest[i] -= take
                need -= take
        if need:
            raise TappInfeasible(f"time_threshold: the greedy baseline runs out of time in subregion {j}")
    return _result(inst, x, "baseline2")


EXHAUSTIVE_MAX = 200_000


def exhaustive(inst: TappInstance, seed: int = 0) -> TappAllocation:
    """Every feasible allocation of a tiny instance; the fewest dangerous, then the fewest allocated."""
    _check_capacity(inst)
    per_region = []
    for j in range(inst.n_subregions):
        who = np.flatnonzero(inst.active[:, j])
        splits = [s for s in itertools.product(range(int(inst.workload[j]) + 1), repeat=len(who)) if sum(s) == inst.workload[j]]
        per_region.append((who, splits))
    total = math.prod(len(s) for _, s in per_region)
    if total > EXHAUSTIVE_MAX:
        raise TappError(f"method=exhaustive: {total} allocations; at most {EXHAUSTIVE_MAX} are searched")
    best = None
    for combo in itertools.product(*[s for _, s in per_region]):
        x = np.zeros(inst.profiles.shape, dtype=np.int64)
        for j, ((who, _), split) in enumerate(zip(per_region, combo)):
            x[who, j] = split
        if (x.sum(axis=1) > inst.time_threshold).any():
            continue
        r = _result(inst, x, "exhaustive")
        if best is None or (r.dangerous, r.allocated) < (best.dangerous, best.allocated):
            best = r
    if best is None:
        raise TappInfeasible("time_threshold: no allocation meets every participant's time threshold")
    return best


METHODS = {"tapp": tapp, "baseline1": baseline1, "baseline2": baseline2, "exhaustive": exhaustive}


def allocate(inst: TappInstance, method: str = "tapp", seed: int = 0) -> TappAllocation:
    if method not in METHODS:
        raise TappError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return METHODS[method](inst, seed=seed)
