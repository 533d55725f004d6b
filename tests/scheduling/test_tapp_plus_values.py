"""Ours: tapp_plus (scheduling/allocation/tapp_plus.py) pinned on instances where its local search matters,
near the MILP's optimum; each local-search step against a loop that says what its vectorised form must
do; and the allocations themselves, pinned by digest.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from scheduling.allocation import tapp, tapp_plus
from scheduling.allocation.tapp_model import TappInstance, kl_disclosure

from allocation_cases import random_community


def medium_instances(theta: float, count: int = 30):
    """10 participants x 4 subregions, partly active, T in 1..5, work up to half of each subregion's time."""
    for seed in range(count):
        p, t, w = random_community(np.random.default_rng(1000 + seed), 10, 4)
        if w.sum() <= t.sum():  # the others are refused before any method runs
            yield TappInstance(p, t, w, np.full(10, theta))


# Pins depend on numpy's Generator stream for these seeds and on HiGHS's answers (pyproject pins neither
# exactly); a new version that moves them is checked against the optimum and re-pinned on purpose.
# (dangerous, allocated) summed over the 22 feasible ones of the 30 instances, and on how many tapp_plus equals the MILP's proven
# optimum; measured, and pinned so that a change to the local search shows (without its make-safe moves
# the totals were (103, 119, 17), (80, 126, 6), (47, 126, 8)); the paper's TAPP: (157, 161), (133, 153), (92, 144)
TAPP_PLUS_PINNED = {0.2: (98, 118, 21), 0.5: (60, 119, 20), 0.8: (23, 124, 16)}
OPTIMUM = {0.2: (97, 117), 0.5: (58, 118), 0.8: (21, 120)}


@pytest.mark.parametrize("theta", sorted(TAPP_PLUS_PINNED))
def test_tapp_plus_on_medium_instances_is_pinned_and_near_the_optimum(theta: float) -> None:
    d = a = at_optimum = 0
    best_d = best_a = 0
    for inst in medium_instances(theta):
        got, best = tapp.allocate(inst, "tapp_plus"), tapp.allocate(inst, "exact")
        d, a = d + got.dangerous, a + got.allocated
        best_d, best_a = best_d + best.dangerous, best_a + best.allocated
        at_optimum += (got.dangerous, got.allocated) == (best.dangerous, best.allocated)
    assert (best_d, best_a) == OPTIMUM[theta]
    assert (d, a, at_optimum) == TAPP_PLUS_PINNED[theta]


# --- ours: tapp_plus's local-search steps, each against a loop that says what its vectorised form must
# compute (the mutation gate found their details unpinned by the end-to-end totals) -----------------
def random_state(seed: int, n: int = 12, m: int = 4) -> tuple[tapp_plus._State, np.ndarray, np.ndarray]:
    """An instance, an allocation within each participant's time (some rows empty), a tier and work left."""
    rng = np.random.default_rng(seed)
    raw = rng.random((n, m)) * (rng.random((n, m)) < 0.6)
    raw[np.arange(n), rng.integers(0, m, n)] += 0.3
    p = raw / raw.sum(axis=1, keepdims=True)
    t = rng.integers(1, 6, n)
    inst = TappInstance(p, t, rng.integers(0, 8, m), rng.choice([0.05, 0.2, 0.5, 1.0, 2.0], n))
    x = np.zeros((n, m), dtype=np.int64)
    for i in range(n):
        if rng.random() < 0.6:
            cells = np.flatnonzero(inst.active[i])
            for _ in range(rng.integers(1, t[i] + 1)):
                x[i, rng.choice(cells)] += 1
    left = rng.integers(0, 4, m) * (rng.random(m) < 0.8)
    return tapp_plus._State(inst, x), rng.random(n) < 0.7, left


def takers_by_loop(state: tapp_plus._State, tier: np.ndarray, left: np.ndarray) -> list[int]:
    """Who may take a safe bundle of ``left``: an empty row if -ln c(its usable subregions) <= θ (the
    lowest disclosure any row on them can have), an allocated one if one more unit of some subregion
    still in ``left`` keeps it safe; most rest time first, ties by id."""
    inst = state.inst
    out = []
    for k in np.flatnonzero(tier):
        cells = [j for j in range(inst.n_subregions) if inst.active[k, j] and left[j] > 0]
        if state.load[k] == 0:
            ok = bool(cells) and -np.log(state.c[cells].sum()) <= inst.theta[k] + 1e-9
        else:
            ok = any(kl_disclosure(state.x[k] + np.eye(inst.n_subregions, dtype=np.int64)[j], state.c) <= inst.theta[k] + 1e-12
                     for j in cells)
        if ok:
            out.append(int(k))
    room = inst.time_threshold - state.load
    return sorted(out, key=lambda k: (-room[k], k))[: tapp_plus.MAX_TAKERS]


def bundle_by_loop(state: tapp_plus._State, k: int, avail: np.ndarray) -> np.ndarray:
    """Add, one unit at a time, the available unit that keeps k's disclosure lowest (the first such
    subregion on ties), while k has time; the bundle at the last safe step."""
    inst = state.inst
    m = inst.n_subregions
    room = int(inst.time_threshold[k] - state.load[k])
    b = np.zeros(m, dtype=np.int64)
    best = b.copy()
    for _ in range(max(room, 0)):
        options = [j for j in range(m) if inst.active[k, j] and b[j] < avail[j]]
        if not options:
            break
        values = [kl_disclosure(state.x[k] + b + np.eye(m, dtype=np.int64)[j], state.c) for j in options]
        b[options[int(np.argmin(values))]] += 1
        if min(values) <= inst.theta[k] + 1e-12:
            best = b.copy()
    return best


@pytest.mark.parametrize("seed", range(40))
def test_takers_are_those_who_can_stay_safe_most_rest_time_first(seed: int) -> None:
    state, tier, left = random_state(seed)
    assert tapp_plus._takers(state, tier, left).tolist() == takers_by_loop(state, tier, left)


def test_takers_of_an_empty_tier_and_at_most_max_takers() -> None:
    state, _, left = random_state(0)
    assert tapp_plus._takers(state, np.zeros(12, dtype=bool), left).tolist() == []
    n = tapp_plus.MAX_TAKERS + 6
    inst = TappInstance(np.full((n, 2), 0.5), np.arange(n) % 5 + 1, np.array([3, 3]), 1.0)
    many = tapp_plus._takers(tapp_plus._State(inst, np.zeros((n, 2), dtype=np.int64)), np.ones(n, dtype=bool), np.array([1, 1]))
    assert len(many) == tapp_plus.MAX_TAKERS and many.tolist() == sorted(range(n), key=lambda k: (-(k % 5), k))[: tapp_plus.MAX_TAKERS]


@pytest.mark.parametrize("seed", range(40))
def test_bundles_follow_the_lowest_disclosure_path_and_end_safe(seed: int) -> None:
    state, _, left = random_state(seed)
    avail = left + 1
    for k in range(state.inst.n_participants):
        got = tapp_plus._bundle(state, k, avail)
        assert got.tolist() == bundle_by_loop(state, k, avail).tolist(), k
        assert (got <= avail).all() and got[~state.inst.active[k]].sum() == 0
        if got.any():
            assert kl_disclosure(state.x[k] + got, state.c) <= state.inst.theta[k] + 1e-12


def test_a_bundle_of_one_unit_in_one_subregion() -> None:
    """Room for one unit, one subregion available: that unit, if it keeps the participant safe."""
    inst = TappInstance(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([1, 1]), np.array([1, 1]), np.array([1.0, 0.0]))
    state = tapp_plus._State(inst, np.zeros((2, 2), dtype=np.int64))
    assert tapp_plus._bundle(state, 0, np.array([1, 0])).tolist() == [1, 0]  # KL = ln 2 <= 1
    assert tapp_plus._bundle(state, 1, np.array([1, 0])).tolist() == [0, 0]  # KL = ln 2 > 0
    assert tapp_plus._bundle(state, 0, np.array([0, 1])).tolist() == [0, 0]  # 0 is not active in subregion 1


def test_a_bundle_in_the_communitys_own_proportions_is_safe_at_theta_zero() -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([4, 4]), np.array([2, 2]), 0.0)
    state = tapp_plus._State(inst, np.zeros((2, 2), dtype=np.int64))
    assert tapp_plus._bundle(state, 0, np.array([2, 2])).tolist() == [2, 2]  # KL exactly 0 after 2 and 4 units


def test_an_empty_row_whose_best_disclosure_is_exactly_theta_may_take() -> None:
    """Participant 0 can work only in subregion 0, half the community's profile: the lowest
    disclosure it can reach is -ln 0.5 = ln 2, so it may take at θ = ln 2 and not below."""
    profiles = np.array([[1.0, 0.0], [0.0, 1.0]])
    for theta, expected in ((float(np.log(2)), [0]), (float(np.log(2)) - 1e-6, [])):
        inst = TappInstance(profiles, np.array([2, 2]), np.array([1, 1]), np.array([theta, 0.0]))
        state = tapp_plus._State(inst, np.zeros((2, 2), dtype=np.int64))
        assert state.c.tolist() == [0.5, 0.5]
        assert tapp_plus._takers(state, np.array([True, False]), np.array([1, 1])).tolist() == expected


def varied_instances(count: int = 150):
    """6-15 participants x 2-5 subregions, partly active, T in 1..6, θ per participant from 0.05 to 1,
    work up to 70 % of each subregion's time (the infeasible draws are left out)."""
    for seed in range(count):
        rng = np.random.default_rng(5000 + seed)
        n, m = int(rng.integers(6, 16)), int(rng.integers(2, 6))
        raw = rng.random((n, m)) * (rng.random((n, m)) < 0.6)
        raw[np.arange(n), rng.integers(0, m, n)] += 0.3
        p = raw / raw.sum(axis=1, keepdims=True)
        t = rng.integers(1, 7, n)
        cap = np.array([t[p[:, j] > 1e-6].sum() for j in range(m)])
        w = np.array([rng.integers(0, max(1, int(c * 0.7)) + 1) for c in cap])
        if w.sum() <= t.sum():
            yield TappInstance(p, t, w, rng.choice([0.05, 0.2, 0.5, 1.0], n))


def test_tapp_plus_allocations_on_varied_instances_are_pinned() -> None:
    """Totals can stay the same while the local search moves different units; the allocations cannot.
    Measured from this implementation (numpy 2.4's Generator stream for these seeds; no solver
    involved; ties are broken exactly, so a numpy build whose logarithms differ in the last bit could
    move one), and pinned so that any change to a step shows: a change meant to be made is checked
    against the optimum (above) and re-pinned on purpose. Per instance, the first 4 hex digits of the
    allocation's sha256 ("-" for an infeasible draw)."""
    got = []
    for inst in varied_instances():
        try:
            a = tapp.allocate(inst, "tapp_plus")
        except tapp.TappInfeasible:
            got.append("-")
            continue
        assert (a.x.sum(axis=0) == inst.workload).all() and (a.x.sum(axis=1) <= inst.time_threshold).all()
        got.append(hashlib.sha256(a.x.astype(np.int64).tobytes()).hexdigest()[:4])
    pinned = TAPP_PLUS_DIGESTS.split()
    first = next((i for i, (g, p) in enumerate(zip(got, pinned)) if g != p), None)
    assert len(got) == len(pinned) and first is None, f"the allocation of instance {first} (counting from 0) moved"
    assert sum(d != "-" for d in got) == 91


TAPP_PLUS_DIGESTS = """
7ddd a572 57e2 cff0 aeb1 316e 2ae0 df06 2fdc 58cb 39f4 1cf9 d73e 80d5 0b65 - c431 18da 1b22 fe0f ad6d 535e 6383 ad21 5dfc
0785 a148 fbce e2d5 4d8d f451 f44e c42a 770f 7751 ee83 3668 7622 b9f0 15e2 d412 2aa7 4ea5 6297 c129 480e c345 b2a4 4857 7bfb
045e bb1b 15ea beab 1def 2296 ac77 f467 c41b 1241 4bb7 e6b6 bc3b e555 ad28 086f 68d5 edba 26e9 1981 cdbe bb1e 3cbe - ceac
2783 9951 b0fa b450 d47e 1a04 1cf8 84b3 9fd5 a8a6 3d62 7a6c a9a4 c46b d5ec 7ac1 20cc 83d0
"""
