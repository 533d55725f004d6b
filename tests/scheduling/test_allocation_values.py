"""TAPP (paper 002) on instances where the privacy threshold θ matters, and its gap to the optimum.

``test_allocation_tapp.py`` checks TAPP only against Baseline1 (no worse) and the exhaustive optimum (no
better), and its pinned totals all use θ = 0.3 for everyone: a privacy phase that ignored θ passed.
Here θ varies per participant and across runs, the allocations are worked out by hand where the
instance is small, the paper's rules for phase 2 (a task only goes to a participant who stays safe)
are checked as invariants, and TAPP's excess of dangerous participants over the optimum is bounded.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import pytest

from scheduling.allocation import tapp, tapp_phases
from scheduling.allocation.tapp_model import EPS, TappError, TappInfeasible, TappInstance


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
