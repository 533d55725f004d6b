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

**Ours, labelled ``exact``** (not in the paper): the optimum — fewest dangerous participants, then
fewest allocated — for small and medium instances. The KL threshold is *enumerated*, not
linearised: D_i depends on participant i only through its active subregions, its time threshold
and θ_i (c is shared), so participants agreeing on those three are interchangeable and form a
group. For each group we list every integer row with 1..T units on its active subregions (each
≤ the workload) and keep those with D ≤ θ (the floored KL above, exactly): these are the safe
rows. MILP (HiGHS, ``scipy.optimize.milp``): integer z_gr = members of group g taking safe row r;
integer n_g = members of g that are dangerous ("dumps"), with integer work y_gj on g's active
subregions, Σ_j y_gj ≤ T_g·n_g (any such total splits into n_g rows of ≤ T_g units, so the
aggregation is exact); Σ_r z_gr + n_g ≤ |g|; Σ_{g,r} r_j z_gr + Σ_g y_gj = w_j. Stage 1 minimises
Σ n_g (dangerous); stage 2 fixes that and minimises Σ z + Σ n (allocated). ``proven`` on the result
says which stages HiGHS closed within the time limit (stage 1 must, or it raises); a group with
more than 200,000 candidate rows is refused.

**Ours, labelled ``tapp_plus``** (not in the paper): a heuristic built on what the paper's phases
cannot do — phase 2 moves one unit at a time and only to a participant who is safe *after that one
unit*, so an unallocated participant (one unit = a one-subregion profile, KL = −ln c_j) qualifies
only in a subregion with c_j ≥ e^{−θ}, and phase 3 only merges whole allocations. tapp_plus takes the best, by (dangerous,
allocated), of three starts — the paper's TAPP, Baseline2, and a *safe-bundles-first*
construction (each participant's largest bundle of the remaining work that keeps it safe, found by
adding the unit that keeps its KL lowest; largest bundle first, lazily re-evaluated; the rest goes
to as few participants as possible) — each improved by a local search whose every accepted move
lowers (dangerous, allocated) lexicographically: (a) empty a dangerous participant into dangerous
ones' spare time and safe bundles of safe or new participants; (b) make a dangerous participant
safe by giving, taking or swapping single units with partners that stay as they were, lowest KL
first; (c) empty a safe participant into the others (merge). At most 64 safe takers are tried per
give-away. ``tapp_plus`` is never worse than the paper's TAPP on (dangerous, allocated).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from scheduling.errors import AllocationError

__all__ = ["TappError", "TappInfeasible", "TappInstance", "TappAllocation", "allocate", "METHODS", "kl_disclosure", "exact", "tapp_plus"]

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
    proven: tuple[str, ...] = ()  # method=exact: the metrics proven optimal ("dangerous", "allocated")

    def to_dict(self) -> dict:
        d = {
            "method": self.method,
            "allocation": self.x.tolist(),
            "disclosure": self.disclosure.tolist(),
            "dangerous": self.dangerous,
            "allocated": self.allocated,
            "utility": self.utility,
        }
        if self.method == "exact":
            d["proven_optimal"] = list(self.proven)
        return d


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


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way to write ``total`` as an ordered sum of ``parts`` non-negative integers, in
    lexicographic order (made directly: filtering all (total + 1)^parts tuples took minutes at 8 parts)."""
    if parts <= 1:
        if parts == 1 or total == 0:
            yield (total,) * parts
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def _n_compositions(total: int, parts: int) -> int:
    """How many :func:`_compositions` there are (stars and bars), counted before making any."""
    return math.comb(total + parts - 1, parts - 1) if parts else int(total == 0)


def exhaustive(inst: TappInstance, seed: int = 0) -> TappAllocation:
    """Every feasible allocation of a tiny instance; the fewest dangerous, then the fewest allocated."""
    _check_capacity(inst)
    whos = [np.flatnonzero(inst.active[:, j]) for j in range(inst.n_subregions)]
    total = math.prod(_n_compositions(int(w), len(who)) for w, who in zip(inst.workload, whos))
    if total > EXHAUSTIVE_MAX:
        raise TappError(f"method=exhaustive: {total} allocations; at most {EXHAUSTIVE_MAX} are searched")
    per_region = [(who, list(_compositions(int(w), len(who)))) for w, who in zip(inst.workload, whos)]
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




# --- ours: exact MILP ---------------------------------------------------------------------------------

EXACT_TIME_LIMIT_S = 60.0
EXACT_MAX_ROWS = 200_000  # rows enumerated per group of interchangeable participants


def _rows(cells: np.ndarray, m: int, limit: int) -> np.ndarray:
    """Every integer row with 1..limit unit tasks on ``cells`` (rows of an (R, m) array)."""
    out = []
    for total in range(1, limit + 1):
        for combo in itertools.combinations_with_replacement(range(len(cells)), total):
            out.append(np.bincount(combo, minlength=len(cells)))
    rows = np.zeros((len(out), m), dtype=np.int64)
    if out:
        rows[:, cells] = np.array(out)
    return rows


def exact(inst: TappInstance, seed: int = 0, time_limit_s: float = EXACT_TIME_LIMIT_S) -> TappAllocation:
    """Ours: the optimum — fewest dangerous participants, then fewest allocated — as two MILPs (HiGHS
    via ``scipy.optimize.milp``) with the KL threshold enumerated (module notes). Raises
    :class:`TappInfeasible` when no allocation meets the workloads and time thresholds, and a
    :class:`TappError` when a group's rows are too many to enumerate or HiGHS does not prove
    the fewest dangerous within ``time_limit_s``."""
    _check_capacity(inst)
    n, m = inst.profiles.shape
    c = inst.community
    keys = [(tuple(np.flatnonzero(inst.active[i])), int(inst.time_threshold[i]), float(inst.theta[i])) for i in range(n)]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    group_list = [(key, members) for key, members in groups.items() if key[1] > 0 and key[0]]
    # columns: per group its safe rows (count of members taking each), its dump count, its dump work per cell
    costs: list[float] = []
    upper: list[int] = []
    layout = []
    n_cols = 0
    cap_rows: list[tuple[list[int], list[float], float]] = []
    work_entries: list[tuple[int, int, float]] = []  # (cell, column, coefficient)
    for key, members in group_list:
        cells, t, th = np.array(key[0]), key[1], key[2]
        limit = min(t, int(inst.workload[cells].sum()))
        if math.comb(limit + len(cells), len(cells)) > EXACT_MAX_ROWS:
            raise TappError(f"method=exact: participants active in {len(cells)} subregions with time threshold {t} "
                            f"have more than {EXACT_MAX_ROWS} possible rows to enumerate")
        rows = _rows(cells, m, limit)
        rows = rows[(rows <= inst.workload).all(axis=1)]
        safe = rows[_disclosures(rows, c) <= th + 1e-12] if len(rows) else rows
        size = len(members)
        first = n_cols
        for r in safe:
            for j in np.flatnonzero(r):
                work_entries.append((int(j), n_cols, float(r[j])))
            costs.append(1.0)
            upper.append(size)
            n_cols += 1
        dump = n_cols
        costs.append(n + 2.0)  # lexicographic: a dangerous participant outweighs every allocation
        upper.append(size)
        n_cols += 1
        dump_work = n_cols
        for j in cells:
            work_entries.append((int(j), n_cols, 1.0))
            costs.append(0.0)
            upper.append(min(t * size, int(inst.workload[j])))
            n_cols += 1
        cap_rows.append((list(range(first, dump + 1)), [1.0] * (dump + 1 - first), float(size)))  # one role per member
        cap_rows.append(([dump] + list(range(dump_work, n_cols)), [-float(t)] + [1.0] * len(cells), 0.0))  # dumps' time
        layout.append((members, cells, t, safe, dump, dump_work))
    if n_cols == 0:  # nobody has time (so, past the capacity check, there is no work): nothing to solve
        return replace(_result(inst, np.zeros((n, m), dtype=np.int64), "exact"), proven=("dangerous", "allocated"))
    r_idx = [j for j, _, _ in work_entries]
    c_idx = [k for _, k, _ in work_entries]
    vals = [v for _, _, v in work_entries]
    lo = [float(w) for w in inst.workload]
    hi = list(lo)
    for r, (cols, coefs, bound) in enumerate(cap_rows):
        r_idx += [m + r] * len(cols)
        c_idx += cols
        vals += coefs
        lo.append(-np.inf)
        hi.append(bound)
    a_mat = sparse.csr_matrix((vals, (r_idx, c_idx)), shape=(len(lo), n_cols))
    dumps = np.zeros(n_cols)
    dumps[[d for *_, d, _ in layout]] = 1.0
    deadline = time.monotonic() + time_limit_s
    bounds = Bounds(np.zeros(n_cols), np.array(upper, dtype=float))
    # stage 1: the fewest dangerous participants
    res = milp(dumps, constraints=LinearConstraint(a_mat, lo, hi), integrality=np.ones(n_cols), bounds=bounds,
               options={"time_limit": time_limit_s, "mip_rel_gap": 0.0})
    if res.status == 2:
        raise TappInfeasible("time_threshold: no allocation meets every workload within the participants' time thresholds")
    if res.status != 0 or res.x is None:
        raise TappError(f"method=exact: no proof of the fewest dangerous participants within {time_limit_s:g} s ({res.message})")
    fewest = float(np.round(res.fun))
    # stage 2: with that many dangerous, the fewest allocated
    proven: tuple[str, ...] = ("dangerous",)
    left = deadline - time.monotonic()
    if left > 0:
        second = milp(np.array(costs), constraints=[LinearConstraint(a_mat, lo, hi), LinearConstraint(dumps[None, :], -np.inf, fewest)],
                      integrality=np.ones(n_cols), bounds=bounds, options={"time_limit": left, "mip_rel_gap": 0.0})
        if second.x is not None:
            res = second
            if second.status == 0:
                proven = ("dangerous", "allocated")
    values = np.round(res.x).astype(np.int64)
    x = np.zeros((n, m), dtype=np.int64)
    for members, cells, t, safe, dump, dump_work in layout:
        queue = iter(members)
        for k, r in enumerate(safe):
            for _ in range(int(values[dump - len(safe) + k])):
                x[next(queue)] = r
        dump_left = values[dump_work : dump_work + len(cells)].copy()
        for _ in range(int(values[dump])):  # split the dumps' work into rows of at most t
            i, room = next(queue), t
            for idx in range(len(cells)):
                take = min(room, int(dump_left[idx]))
                x[i, cells[idx]] += take
                dump_left[idx] -= take
                room -= take
    return replace(_result(inst, x, "exact"), proven=proven)


# --- ours: tapp_plus ----------------------------------------------------------------------------------


class _State:
    """An allocation under local search: rows, loads and who is dangerous, kept up to date."""

    def __init__(self, inst: TappInstance, x: np.ndarray) -> None:
        self.inst = inst
        self.c = inst.community
        self.x = x.copy()
        self.load = self.x.sum(axis=1)
        self.kl = _disclosures(self.x, self.c)

    def dangerous(self) -> np.ndarray:
        return (self.load > 0) & (self.kl > self.inst.theta + 1e-12)

    def key(self) -> tuple[int, int]:
        return int(self.dangerous().sum()), int((self.load > 0).sum())

    def set_row(self, i: int, row: np.ndarray) -> None:
        self.x[i] = row
        self.load[i] = int(row.sum())
        self.kl[i] = kl_disclosure(row, self.c)


def _bundle(state: _State, k: int, avail: np.ndarray) -> np.ndarray:
    """The largest bundle b ≤ ``avail`` that participant k can take and stay safe, found along the path
    that adds, one unit at a time, the unit keeping k's disclosure lowest."""
    inst = state.inst
    cells = np.flatnonzero(inst.active[k] & (avail > 0))
    room = int(inst.time_threshold[k] - state.load[k])
    best = np.zeros(inst.n_subregions, dtype=np.int64)
    if len(cells) == 0 or room <= 0:
        return best
    b = best.copy()
    row = state.x[k].astype(np.float64)
    theta = inst.theta[k] + 1e-12
    grid = np.eye(inst.n_subregions)[cells]
    for _ in range(min(room, int(avail[cells].sum()))):
        open_ = b[cells] < avail[cells]
        d = _disclosures(row[None, :] + grid[open_], state.c)
        pick = cells[open_][int(np.argmin(d))]
        row[pick] += 1
        b[pick] += 1
        if d.min() <= theta:
            best = b.copy()
    return best


MAX_TAKERS = 64  # safe participants tried per give-away (ours: bounds the search on large instances)


def _takers(state: _State, tier: np.ndarray, left: np.ndarray) -> np.ndarray:
    """The participants of ``tier`` that may take a safe bundle of ``left`` (a necessary condition,
    vectorised), most rest time first, at most :data:`MAX_TAKERS`."""
    inst = state.inst
    cands = np.flatnonzero(tier)
    if len(cands) == 0:
        return cands
    usable = inst.active[cands] & (left > 0)[None, :]
    empty = state.load[cands] == 0
    # an empty row can reach KL = -ln c(usable cells) at best; an allocated one must stay safe with one more unit
    reach = -np.log(np.maximum((usable * state.c[None, :]).sum(axis=1), 1e-300))
    ok = np.where(empty, reach <= inst.theta[cands] + 1e-9, False)
    rows = np.flatnonzero(~empty)
    if len(rows):
        ks = cands[rows]
        best = np.full(len(rows), np.inf)
        for j in np.flatnonzero(left > 0):
            on = inst.active[ks, j]
            if on.any():
                trial = state.x[ks[on]].copy()
                trial[:, j] += 1
                best[on] = np.minimum(best[on], _disclosures(trial, state.c))
        ok[rows] = best <= inst.theta[ks] + 1e-12
    cands = cands[ok]
    room = inst.time_threshold[cands] - state.load[cands]
    return cands[np.argsort(-room, kind="stable")][:MAX_TAKERS]


def _give_away(state: _State, g: int, units: np.ndarray, allow_new: bool) -> bool:
    """Move ``units`` (per subregion) of g's work to others without making anyone newly dangerous:
    dangerous participants first (their disclosure no longer matters), then safe allocated ones,
    then (``allow_new``) unallocated ones, each taking the largest bundle that keeps it safe.
    Applied only if every unit finds a taker; returns whether it was."""
    inst = state.inst
    left = units.copy()
    plan: list[tuple[int, np.ndarray]] = []
    others = np.arange(inst.n_participants) != g
    room = inst.time_threshold - state.load
    reach = inst.active[:, left > 0].any(axis=1) & others & (room > 0)
    dangerous = state.dangerous()
    for k in np.flatnonzero(reach & dangerous)[np.argsort(-room[reach & dangerous], kind="stable")]:
        take = np.zeros_like(left)
        free = int(room[k])
        for j in np.flatnonzero(inst.active[k] & (left > 0)):
            t = min(free, int(left[j]))
            take[j], free = t, free - t
        if take.any():
            plan.append((int(k), take))
            left -= take
        if not left.any():
            break
    tiers = [reach & ~dangerous & (state.load > 0)] + ([reach & (state.load == 0)] if allow_new else [])
    for tier in tiers:
        if not left.any():
            break
        for k in _takers(state, tier, left):
            take = _bundle(state, int(k), left)
            if take.any():
                plan.append((int(k), take))
                left -= take
                if not left.any():
                    break
    if left.any():
        return False
    for k, take in plan:
        state.set_row(k, state.x[k] + take)
    state.set_row(g, state.x[g] - units)
    return True


def _fix(state: _State, g: int) -> bool:
    """Make dangerous g safe: unit by unit, give one of its tasks away, take one from a participant
    who does not mind (a dangerous one, or a safe one that stays safe), or both — whichever lowers
    g's disclosure most — until g is safe. Undone if g cannot be made safe."""
    inst = state.inst
    saved = (state.x.copy(), state.load.copy(), state.kl.copy())
    theta = inst.theta[g] + 1e-12
    for _ in range(4 * int(inst.time_threshold[g]) + 4):
        if state.kl[g] <= theta or state.load[g] == 0:
            return True
        row = state.x[g]
        dangerous = state.dangerous()
        options = []  # (new disclosure, give cell or -1, take cell or -1)
        gives = np.flatnonzero(row > 0)
        takes = np.flatnonzero(inst.active[g])
        for j in [-1, *gives]:
            for lcell in [-1, *takes]:
                if j == lcell or (j < 0 and lcell < 0):
                    continue
                trial = row.copy()
                if j >= 0:
                    trial[j] -= 1
                if lcell >= 0:
                    trial[lcell] += 1
                if trial.sum() > inst.time_threshold[g] or trial.sum() == 0:
                    continue
                options.append((kl_disclosure(trial, state.c), j, lcell))
        options.sort()
        moved = False
        for value, j, lcell in options:
            if value >= state.kl[g] - 1e-12:
                break
            if _apply(state, g, j, lcell, dangerous):
                moved = True
                break
        if not moved:
            break
    if state.kl[g] <= theta or state.load[g] == 0:
        return True
    state.x, state.load, state.kl = saved
    return False


def _apply(state: _State, g: int, give: int, take: int, dangerous: np.ndarray) -> bool:
    """One unit out of g's subregion ``give`` and/or one into its subregion ``take``, with a partner who
    stays as it was (a dangerous one, or a safe one that stays safe): dangerous partners first."""
    inst = state.inst
    m = inst.n_subregions
    room = inst.time_threshold - state.load
    ok = np.arange(inst.n_participants) != g
    delta = np.zeros(m, dtype=np.int64)  # the partner's change
    if give >= 0:
        ok &= inst.active[:, give]
        delta[give] += 1
    if take >= 0:
        ok &= state.x[:, take] > 0
        delta[take] -= 1
    if give >= 0 and take < 0:
        ok &= (room > 0) & (state.load > 0)
    cands = np.flatnonzero(ok)
    if len(cands) == 0:
        return False
    trial = state.x[cands] + delta
    fine = dangerous[cands] | (_disclosures(trial, state.c) <= inst.theta[cands] + 1e-12) | (trial.sum(axis=1) == 0)
    if not fine.any():
        return False
    order = np.lexsort((cands, ~dangerous[cands]))
    k = int(cands[order[np.argmax(fine[order])]])
    state.set_row(k, state.x[k] + delta)
    state.set_row(g, state.x[g] - delta)
    return True


def _improve(inst: TappInstance, x: np.ndarray) -> np.ndarray:
    """Local search on (dangerous, allocated), lexicographically; every accepted move lowers it."""
    state = _State(inst, x)
    changed = True
    while changed:
        changed = False
        for g in sorted(np.flatnonzero(state.dangerous()), key=lambda i: (state.load[i], i)):  # empty a dangerous one
            if state.load[g] > 0 and state.kl[g] > inst.theta[g] + 1e-12:
                before = state.key()
                if _give_away(state, int(g), state.x[g].copy(), allow_new=True):
                    assert state.key() < before
                    changed = True
        for g in sorted(np.flatnonzero(state.dangerous()), key=lambda i: (-state.load[i], i)):  # make one safe
            if state.load[g] > 0 and state.kl[g] > inst.theta[g] + 1e-12:
                before = state.key()
                if _fix(state, int(g)):
                    if state.key() < before:
                        changed = True
        for g in sorted(np.flatnonzero((state.load > 0) & ~state.dangerous()), key=lambda i: (state.load[i], i)):  # merge
            if state.load[g] > 0:
                before = state.key()
                if _give_away(state, int(g), state.x[g].copy(), allow_new=False):
                    assert state.key() < before
                    changed = True
    return state.x


def _safe_first(inst: TappInstance) -> np.ndarray:
    """Construction: participants take the largest safe bundles of the remaining work (largest first,
    lazily re-evaluated); what no one can take safely goes to as few participants as possible."""
    state = _State(inst, np.zeros(inst.profiles.shape, dtype=np.int64))
    left = inst.workload.copy()
    heap = [(-int(_bundle(state, i, left).sum()), i) for i in range(inst.n_participants)]
    heap = [h for h in heap if h[0] < 0]
    heapq.heapify(heap)
    while heap and left.any():
        _, i = heapq.heappop(heap)
        b = _bundle(state, i, left)
        if not b.any():
            continue
        if heap and b.sum() < -heap[0][0]:
            heapq.heappush(heap, (-int(b.sum()), i))
            continue
        state.set_row(i, b)
        left -= b
    while left.any():
        room = inst.time_threshold - state.load
        reach = np.minimum(room, (inst.active * left[None, :]).sum(axis=1))
        k = int(np.lexsort((np.arange(inst.n_participants), state.load == 0, -reach))[0])
        if reach[k] <= 0:
            raise TappInfeasible("time_threshold: the remaining work fits no participant's rest time")
        take = np.zeros_like(left)
        free = int(room[k])
        for j in np.argsort(-left * inst.active[k], kind="stable"):
            if not inst.active[k, j] or free == 0:
                continue
            t = min(free, int(left[j]))
            take[j], free = t, free - t
        state.set_row(k, state.x[k] + take)
        left -= take
    return state.x


def tapp_plus(inst: TappInstance, seed: int = 0) -> TappAllocation:
    """Ours (module notes): the best of paper TAPP, Baseline2 and a safe-bundles-first construction,
    each improved by local search on (dangerous, allocated)."""
    _check_capacity(inst)
    starts = []
    for build in (lambda: phase3(inst, phase2(inst, phase1(inst))), lambda: baseline2(inst).x, lambda: _safe_first(inst)):
        try:
            starts.append(build())
        except TappInfeasible:
            continue
    if not starts:
        raise TappInfeasible("time_threshold: no construction meets every workload within the participants' time thresholds")
    best, best_key = None, None
    for x in starts:
        state = _State(inst, _improve(inst, x))
        if best_key is None or state.key() < best_key:
            best, best_key = state.x, state.key()
    return _result(inst, best, "tapp_plus")


#: the paper's TAPP and baselines, the exhaustive anchor, and ours (``tapp_plus``, ``exact``)
METHODS = {"tapp": tapp, "baseline1": baseline1, "baseline2": baseline2, "exhaustive": exhaustive,
           "tapp_plus": tapp_plus, "exact": exact}


def allocate(inst: TappInstance, method: str = "tapp", seed: int = 0) -> TappAllocation:
    if method not in METHODS:
        raise TappError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return METHODS[method](inst, seed=seed)
