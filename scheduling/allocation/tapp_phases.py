"""TAPP's three phases (paper 002, §4.3–4.5, Algorithms 1–3) and its greedy Baseline2: the paper's
algorithm, as ``tapp``'s docstring describes it (``tapp_plus`` starts from them too)."""

from __future__ import annotations

import heapq
import math

import numpy as np

from scheduling.allocation.tapp_model import (TappAllocation, TappInfeasible, TappInstance, _check_capacity, _disclosures, _result, kl_disclosure)


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
