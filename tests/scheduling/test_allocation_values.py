"""TAPP (paper 002) on instances where the privacy threshold θ matters, and its gap to the optimum.

``test_allocation.py`` checks TAPP only against Baseline1 (no worse) and the exhaustive optimum (no
better), and its pinned totals all use θ = 0.3 for everyone: a privacy phase that ignored θ passed.
Here θ varies per participant and across runs, the allocations are worked out by hand where the
instance is small, the paper's rules for phase 2 (a task only goes to a participant who stays safe)
are checked as invariants, and TAPP's excess of dangerous participants over the optimum is bounded.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from functools import lru_cache

import numpy as np
import pytest
from solver_spy import record_milp, unproven_milp

from scheduling.allocation import tapp, tapp_exact, tapp_phases, tapp_plus
from scheduling.allocation.tapp_model import (
    EPS,
    TappError,
    TappInfeasible,
    TappInstance,
    kl_disclosure,
)

THETAS = (0.1, 0.3, 0.6, 1.0)


def spread_instances(theta: float, count: int = 60):
    """3 participants x 3 subregions, T = 3, with θ = (θ, 2θ, θ/2): each participant its own."""
    for seed in range(count):
        rng = np.random.default_rng(seed)
        yield TappInstance(rng.dirichlet(np.ones(3), 3), np.full(3, 3), rng.integers(0, 3, 3), np.array([theta, 2 * theta, theta / 2]))


@lru_cache(maxsize=None)
def totals(theta: float) -> dict[str, tuple[int, int]]:
    out = {}
    for method in ("tapp", "baseline1", "exhaustive"):
        rs = [tapp.allocate(inst, method) for inst in spread_instances(theta)]
        out[method] = (sum(r.dangerous for r in rs), sum(r.allocated for r in rs))
    return out


# (dangerous, allocated) summed over the 60 instances, per θ: pinned from the paper's phases
PINNED = {
    0.1: {"tapp": (128, 139), "baseline1": (151, 151), "exhaustive": (58, 84)},
    0.3: {"tapp": (67, 107), "baseline1": (142, 151), "exhaustive": (35, 84)},
    0.6: {"tapp": (39, 97), "baseline1": (110, 151), "exhaustive": (10, 84)},
    1.0: {"tapp": (5, 86), "baseline1": (68, 151), "exhaustive": (2, 84)},
}


@pytest.mark.parametrize("theta", THETAS)
def test_tapp_totals_follow_each_participants_theta(theta: float) -> None:
    assert totals(theta) == PINNED[theta]


def test_a_larger_theta_leaves_fewer_dangerous() -> None:
    dangerous = [totals(theta)["tapp"][0] for theta in THETAS]
    assert dangerous == sorted(dangerous, reverse=True) and dangerous[0] > 10 * dangerous[-1]


# mean excess of dangerous participants over the optimum, per θ (measured: 1.17, 0.53, 0.48, 0.05)
GAP_BOUND = {0.1: 1.25, 0.3: 0.6, 0.6: 0.55, 1.0: 0.1}


@pytest.mark.parametrize("theta", THETAS)
def test_tapp_gap_to_the_optimum_is_bounded(theta: float) -> None:
    gaps = []
    for inst in spread_instances(theta):
        got, best = tapp.allocate(inst, "tapp"), tapp.allocate(inst, "exhaustive")
        assert (best.dangerous, best.allocated) <= (got.dangerous, got.allocated)
        gaps.append(got.dangerous - best.dangerous)
    assert np.mean(gaps) <= GAP_BOUND[theta]
    assert max(gaps) <= 3


def test_merging_happens_only_where_theta_allows_it() -> None:
    # A is active in subregion 0 only, B in both; c = mean of the floored profiles ≈ (0.75, 0.25).
    # Phase 1: subregion 1 has the least excess (B's 2 units for 1 task) → B gets [0, 1]; then A,
    # with fewer active subregions, gets [1, 0]. D_A = ln(1/0.75) = 0.288; D_B = ln(1/0.25) = 1.386.
    # Phase 2 finds no one else active in subregion 1. Phase 3 may merge A into B: B's row [1, 1]
    # has D = ½ ln(0.5/0.75) + ½ ln(0.5/0.25) = 0.144 — allowed when θ_B ≥ 0.144.
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    c = np.array([(1 + 0.5) / 2, (EPS + 0.5) / 2])
    merged_kl = 0.5 * math.log(0.5 / c[0]) + 0.5 * math.log(0.5 / c[1])
    assert merged_kl == pytest.approx(0.1438, abs=1e-4)
    loose = tapp.allocate(TappInstance(p, np.array([1, 2]), np.array([1, 1]), np.array([0.5, 0.5])), "tapp")
    assert loose.x.tolist() == [[0, 0], [1, 1]]
    assert (loose.dangerous, loose.allocated) == (0, 1) and loose.utility == pytest.approx(0.5)
    assert loose.disclosure[1] == pytest.approx(merged_kl, abs=1e-5)
    strict = tapp.allocate(TappInstance(p, np.array([1, 2]), np.array([1, 1]), np.array([0.5, 0.1])), "tapp")
    assert strict.x.tolist() == [[1, 0], [0, 1]]
    assert (strict.dangerous, strict.allocated) == (1, 2)
    assert strict.disclosure == pytest.approx([math.log(1 / c[0]), math.log(1 / c[1])], abs=1e-4)  # ε floors o
    assert tapp.allocate(TappInstance(p, np.array([1, 2]), np.array([1, 1]), np.array([0.5, 0.1])), "baseline1").x.tolist() == [[1, 0], [0, 1]]


def test_phase2_moves_work_to_a_participant_who_stays_safe() -> None:
    # Everyone is active in both subregions; c = (0.5, 0.5). Phase 1 gives the single task of
    # subregion 0 to participant 0: D = ln 2 = 0.693. Participant 1 already holds a subregion-1
    # task... no: phase 1 places tasks one by one; the row that results is checked, not assumed.
    p = np.full((3, 2), 0.5)
    inst = TappInstance(p, np.array([2, 2, 2]), np.array([1, 1]), np.array([0.1, 0.1, 0.1]))
    x1 = tapp_phases.phase1(inst)
    assert x1.sum() == 2 and (x1.sum(axis=1) <= 1).all()  # one unit each to two participants
    after = tapp_phases.phase2(inst, x1)
    # a single-subregion row has D = ln 2 > 0.1 for anyone; only a [1, 1] row (D = 0) is safe.
    # Phase 2 cannot reach it one unit at a time (a taker must be safe after each unit): nothing moves
    assert np.array_equal(after, x1)
    merged = tapp_phases.phase3(inst, after)
    assert sorted(merged.sum(axis=1).tolist()) == [0, 0, 2]  # phase 3 merges into a safe [1, 1]
    result = tapp.allocate(inst, "tapp")
    assert (result.dangerous, result.allocated) == (0, 1)
    # with θ = 1 the single rows were never dangerous: phase 2 has nothing to do, phase 3 still merges
    relaxed = TappInstance(p, np.array([2, 2, 2]), np.array([1, 1]), np.array([1.0, 1.0, 1.0]))
    assert (tapp.allocate(relaxed, "tapp").dangerous, tapp.allocate(relaxed, "tapp").allocated) == (0, 1)


# participants that gained work in phase 2 over the first 40 instances, per θ (pinned): θ decides it
MOVED = {0.1: 0, 0.3: 6, 0.6: 23, 1.0: 31}


def test_phase2_gives_work_only_to_participants_who_stay_safe() -> None:
    """Whoever gains work in phase 2 is safe under its own θ afterwards, and the workloads, time
    thresholds and active subregions still hold."""
    moved = {}
    for theta in THETAS:
        moved[theta] = 0
        for inst in spread_instances(theta, 40):
            c = inst.community
            before = tapp_phases.phase1(inst)
            after = tapp_phases.phase2(inst, before)
            assert np.array_equal(after.sum(axis=0), before.sum(axis=0))  # the workloads are unchanged
            assert (after.sum(axis=1) <= inst.time_threshold).all() and (after[~inst.active] == 0).all()
            gained = np.flatnonzero(after.sum(axis=1) > before.sum(axis=1))
            moved[theta] += len(gained)
            for k in gained:
                assert tapp.kl_disclosure(after[k], c) <= inst.theta[k] + 1e-12
    assert moved == MOVED, moved


def test_candidate_prefers_allocated_then_rest_time() -> None:
    # everyone active in both; c = (0.5, 0.5); θ = 1 so one more unit keeps anyone safe
    inst = TappInstance(np.full((4, 2), 0.5), np.array([3, 3, 5, 4]), np.array([2, 2]), np.full(4, 1.0))
    x = np.array([[1, 0], [0, 0], [0, 0], [1, 0]])
    # allocated participants (0 and 3) come first; of them the most rest time: 3 (rest 3) over 0 (rest 2)
    assert tapp_phases._candidate(inst, x, 1, exclude=set()) == 3
    assert tapp_phases._candidate(inst, x, 1, exclude={3}) == 0
    # without allocated ones: the most rest time (participant 2: 5)
    assert tapp_phases._candidate(inst, x, 1, exclude={0, 3}) == 2
    full = np.array([[3, 0], [0, 0], [0, 0], [4, 0]])
    assert tapp_phases._candidate(inst, full, 1, exclude={1, 2}) is None  # no rest time left
    strict = TappInstance(np.full((4, 2), 0.5), np.array([3, 3, 5, 4]), np.array([2, 2]), np.full(4, 0.1))
    # θ = 0.1: an empty row that takes one unit has D = ln 2; [1, 0] + [0, 1] = [1, 1] has D = 0
    assert tapp_phases._candidate(strict, x, 1, exclude=set()) == 3
    assert tapp_phases._candidate(strict, x, 0, exclude=set()) is None  # [2, 0] has D = ln 2 too


def test_kl_disclosure_by_hand() -> None:
    c = np.array([0.5, 0.25, 0.25])
    assert tapp.kl_disclosure(np.zeros(3), c) == 0.0
    # [1, 0, 0]: o = (1, ε, ε) renormalised; D ≈ ln(1/0.5)
    assert tapp.kl_disclosure(np.array([1, 0, 0]), c) == pytest.approx(math.log(2), abs=1e-4)
    assert tapp.kl_disclosure(np.array([0, 3, 1]), c) == pytest.approx(0.75 * math.log(3) + 0.25 * math.log(1), abs=1e-4)


def test_result_counts_dangerous_by_each_participants_theta() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    x = np.array([[1, 0], [0, 1], [0, 0]])
    c = TappInstance(p, np.array([2, 2, 2]), np.array([1, 1]), 1.0).community
    d0, d1 = tapp.kl_disclosure(x[0], c), tapp.kl_disclosure(x[1], c)
    inst = TappInstance(p, np.array([2, 2, 2]), np.array([1, 1]), np.array([d0 - 0.01, d1 + 0.01, 0.0]))
    r = tapp._result(inst, x, "m")
    assert (r.dangerous, r.allocated, r.method) == (1, 2, "m")
    assert r.disclosure.tolist() == pytest.approx([d0, d1, 0.0])
    assert r.utility == pytest.approx(1 / 3)
    on_the_line = TappInstance(p, np.array([2, 2, 2]), np.array([1, 1]), np.array([d0, d1, 0.0]))
    assert tapp._result(on_the_line, x, "m").dangerous == 0  # D = θ is safe


def test_baseline2_fills_the_largest_time_thresholds_first() -> None:
    p = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    inst = TappInstance(p, np.array([2, 3, 3]), np.array([4, 2]), 1.0)
    # order by time threshold (3, 3, 2), ties by index: 1, 2, 0. Subregion 0: 1 takes 3, 2 takes 1;
    # subregion 1: 1 has no rest time, 2 is inactive there, 0 takes 2
    assert tapp.allocate(inst, "baseline2").x.tolist() == [[0, 2], [3, 0], [1, 0]]


def test_exhaustive_enumerates_each_regions_splits_in_order_and_counts_them_first() -> None:
    for total in range(6):
        for parts in range(5):
            expected = [s for s in itertools.product(range(total + 1), repeat=parts) if sum(s) == total]
            assert list(tapp._compositions(total, parts)) == expected, (total, parts)
            assert tapp._n_compositions(total, parts) == len(expected), (total, parts)


def test_exhaustive_refuses_too_large_instances() -> None:
    n, m = 8, 3
    inst = TappInstance(np.full((n, m), 1 / m), np.full(n, 9), np.full(m, 9), 0.5)
    with pytest.raises(TappError, match=r"^method=exhaustive: \d+ allocations; at most 200000 are searched$"):
        tapp.allocate(inst, "exhaustive")


def test_infeasible_instances_name_the_constraint() -> None:
    p = np.array([[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(TappInfeasible, match=r"^workload: the total work exceeds the participants' total time$"):
        tapp.allocate(TappInstance(p, np.array([1, 1]), np.array([2, 1]), 0.5), "tapp")
    with pytest.raises(TappInfeasible, match=r"^workload: subregion 1 needs 3 unit tasks but its active participants have 2 units of time$"):
        tapp.allocate(TappInstance(np.array([[1.0, 0.0], [0.5, 0.5], [0.5, 0.5]]), np.array([5, 1, 1]), np.array([0, 3]), 0.5), "baseline2")


# --- ours: the exact MILP, on values (issue 19's mutation gate) -----------------------------------


def test_exact_takes_a_row_shaped_like_the_community_at_theta_zero() -> None:
    """A row in the community's own proportions discloses nothing (KL = 0): safe even at θ = 0."""
    inst = TappInstance(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([2, 2]), np.array([1, 1]), 0.0)
    got = tapp.allocate(inst, "exact")
    assert got.x.tolist() == [[1, 1], [0, 0]] and (got.dangerous, got.allocated) == (0, 1)


def test_exact_finds_a_joint_shortage_the_capacity_check_misses() -> None:
    # every subregion, and the whole, has enough time; but A is needed in 0 and B in 2, so 1 has nobody
    profiles = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    inst = TappInstance(profiles, np.array([1, 1, 1]), np.array([1, 1, 1, 0]), 0.5)
    with pytest.raises(TappInfeasible, match=r"^time_threshold: no allocation meets every workload within the participants' time thresholds$"):
        tapp.allocate(inst, "exact")


def test_exact_refuses_a_group_with_too_many_rows_to_enumerate() -> None:
    inst = TappInstance(np.full((1, 6), 1 / 6), np.array([30]), np.full(6, 5), 0.5)
    with pytest.raises(TappError, match=r"^method=exact: participants active in 6 subregions with time threshold 30 "
                                        r"have more than 200000 possible rows to enumerate$"):
        tapp.allocate(inst, "exact")


def test_exact_out_of_time_after_the_first_stage_proves_only_the_fewest_dangerous(monkeypatch: pytest.MonkeyPatch) -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    best = tapp.allocate(inst, "exact")
    assert best.proven == ("dangerous", "allocated")
    clock = itertools.chain([0.0], itertools.repeat(1e9))  # the deadline is set, then stage 1 has taken all the time
    hurried = tapp.exact(inst, clock=lambda: next(clock))
    assert hurried.proven == ("dangerous",) and hurried.to_dict()["proven_optimal"] == ["dangerous"]
    assert hurried.dangerous == best.dangerous


def test_allocations_as_dicts() -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([2, 2]), np.array([1, 1]), 0.0)
    got = tapp.allocate(inst, "exact")
    assert got.to_dict() == {
        "method": "exact", "allocation": [[1, 1], [0, 0]], "disclosure": got.disclosure.tolist(), "dangerous": 0,
        "allocated": 1, "utility": got.utility, "proven_optimal": ["dangerous", "allocated"],
    }
    b = tapp.allocate(inst, "baseline2")
    assert b.to_dict() == {"method": "baseline2", "allocation": b.x.tolist(), "disclosure": b.disclosure.tolist(),
                           "dangerous": b.dangerous, "allocated": b.allocated, "utility": b.utility}


def test_exact_without_time_to_prove_anything_says_so() -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    with pytest.raises(TappError, match=r"^method=exact: no proof of the fewest dangerous participants within 0 s \(.*Time limit"):
        tapp.exact(inst, time_limit_s=0.0)


# --- ours: tapp_plus, pinned on instances where its local search matters --------------------------


def medium_instances(theta: float, count: int = 30):
    """10 participants x 4 subregions, partly active, T in 1..5, work up to half of each subregion's time."""
    for seed in range(count):
        rng = np.random.default_rng(1000 + seed)
        n, m = 10, 4
        raw = rng.random((n, m)) * (rng.random((n, m)) < 0.7)
        raw[np.arange(n), rng.integers(0, m, n)] += 0.5
        p = raw / raw.sum(axis=1, keepdims=True)
        t = rng.integers(1, 6, n)
        cap = np.array([t[p[:, j] > 1e-6].sum() for j in range(m)])
        w = np.array([rng.integers(0, max(1, c // 2) + 1) for c in cap])
        if w.sum() <= t.sum():  # the others are refused before any method runs
            yield TappInstance(p, t, w, np.full(n, theta))


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


def test_exact_asks_highs_for_a_proven_integer_optimum_within_its_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes it exact: integer columns, a zero MIP gap, and the caller's time limit on each
    stage. The solver's own result still decides; the calls are only recorded."""
    calls = record_milp(monkeypatch, tapp_exact)
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    tapp.exact(inst)
    assert len(calls) == 2 and calls[0]["options"] == {"time_limit": tapp_exact.EXACT_TIME_LIMIT_S, "mip_rel_gap": 0.0}
    assert calls[1]["options"]["mip_rel_gap"] == 0.0 and 0 < calls[1]["options"]["time_limit"] <= tapp_exact.EXACT_TIME_LIMIT_S
    assert all(np.array_equal(c["integrality"], np.ones(len(c["integrality"]))) for c in calls)
    calls.clear()
    tapp.exact(inst, time_limit_s=7.5)
    assert calls[0]["options"]["time_limit"] == 7.5


def test_exact_refuses_a_first_stage_answer_highs_did_not_prove(monkeypatch: pytest.MonkeyPatch) -> None:
    """HiGHS out of time with an incumbent (status 1, x set; doctored) is no proof of the fewest dangerous."""
    unproven_milp(monkeypatch, tapp_exact, "Time limit reached. (HiGHS Status 13: message: Time limit reached)")
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    with pytest.raises(TappError, match=r"^method=exact: no proof of the fewest dangerous participants within 60 s \(Time limit"):
        tapp.exact(inst)


def test_exact_uses_what_is_left_of_its_time_for_the_second_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Half a second left after stage 1: stage 2 runs, with that half second as its limit (recorded;
    whether HiGHS proves it in that time is not asked, so a loaded machine cannot fail this)."""
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)
    clock = itertools.chain([0.0], itertools.repeat(59.5))  # the deadline is set at 0; stage 1 ends at 59.5 s
    calls = record_milp(monkeypatch, tapp_exact)
    tapp.exact(inst, clock=lambda: next(clock))
    assert [c["options"]["time_limit"] for c in calls] == [tapp_exact.EXACT_TIME_LIMIT_S, 0.5]


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


# --- every step together: the allocations themselves, pinned ---------------------------------------


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


def test_every_method_allocates_nothing_when_nobody_has_time_and_there_is_no_work() -> None:
    """exact used to hand HiGHS a problem with no columns, and fail with scipy's own error."""
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([0, 0]), np.array([0, 0]), 0.5)
    for method in tapp.METHODS:
        got = tapp.allocate(inst, method)
        assert got.x.tolist() == [[0, 0], [0, 0]] and (got.dangerous, got.allocated) == (0, 0), method
    assert tapp.allocate(inst, "exact").proven == ("dangerous", "allocated")


def test_exhaustive_names_a_joint_shortage_the_capacity_check_misses() -> None:
    profiles = np.array([[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]])
    inst = TappInstance(profiles, np.array([1, 1, 1]), np.array([1, 1, 1, 0]), 0.5)
    with pytest.raises(TappInfeasible, match=r"^time_threshold: no allocation meets every participant's time threshold$"):
        tapp.allocate(inst, "exhaustive")
