"""TAPP, ours, labelled ``exact`` (not in paper 002): the optimum — fewest dangerous participants, then
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
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import replace
from typing import Callable

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from scheduling.allocation.tapp_model import TappAllocation, TappError, TappInfeasible, TappInstance, _check_capacity, _disclosures, _result


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


def exact(inst: TappInstance, seed: int = 0, time_limit_s: float = EXACT_TIME_LIMIT_S,
          clock: Callable[[], float] = time.monotonic) -> TappAllocation:
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
    deadline = clock() + time_limit_s
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
    left = deadline - clock()
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
