"""TAPP, ours, labelled ``tapp_plus`` (not in paper 002): a heuristic built on what the paper's phases
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

import numpy as np

from scheduling.allocation.tapp_model import TappAllocation, TappInfeasible, TappInstance, _check_capacity, _disclosures, _result, kl_disclosure
from scheduling.allocation.tapp_phases import baseline2, phase1, phase2, phase3


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
