"""TAPP (paper 002) and ours: property tests against Baseline1, the exhaustive optimum and the exact MILP,
the paper's TAPP pinned, tapp_plus never worse than it, disclosure, bad input and infeasibility.
"""

from __future__ import annotations

import numpy as np
import pytest

from hypothesis import given
from hypothesis import strategies as st

from scheduling.allocation import tapp
from scheduling.allocation.tapp import TappAllocation, TappError, TappInfeasible, TappInstance

from allocation_cases import FAST, random_community, small_tapp


@st.composite
def tapp_instances(draw, max_n: int = 8, max_m: int = 4):
    n = draw(st.integers(2, max_n))
    m = draw(st.integers(2, max_m))
    p, t, w = random_community(np.random.default_rng(draw(st.integers(0, 10_000))), n, m)
    theta = draw(st.sampled_from([0.2, 0.5, 0.8, 1.5]))
    return TappInstance(p, t, w, np.full(n, theta))


def assert_valid(inst: TappInstance, x: np.ndarray) -> None:
    assert np.array_equal(x.sum(axis=0), inst.workload)  # workloads met
    assert (x.sum(axis=1) <= inst.time_threshold).all()  # time thresholds
    assert (x[~inst.active] == 0).all()  # only active subregions
    assert (x >= 0).all()



def allocated(inst: TappInstance, method: str) -> TappAllocation | None:
    """``method``'s allocation of ``inst``; None for an infeasible instance (the properties are of the others)."""
    try:
        return tapp.allocate(inst, method)
    except TappInfeasible:
        return None


@FAST
@given(tapp_instances())
def test_tapp_allocations_are_valid_and_no_worse_than_baseline1(inst: TappInstance) -> None:
    b1 = allocated(inst, "baseline1")
    if b1 is None:
        return
    t = tapp.allocate(inst, "tapp")
    assert_valid(inst, t.x)
    assert_valid(inst, b1.x)
    assert t.dangerous <= b1.dangerous
    assert t.utility == pytest.approx(1 - t.allocated / inst.n_participants)


@FAST
@given(tapp_instances())
def test_baseline2_is_valid(inst: TappInstance) -> None:
    try:
        assert_valid(inst, tapp.allocate(inst, "baseline2").x)
    except TappInfeasible:
        pass


def test_tapp_against_exhaustive_on_tiny_instances() -> None:
    gaps = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        p = rng.dirichlet(np.ones(3), 3)
        inst = TappInstance(p, np.full(3, 3), rng.integers(0, 3, 3), np.full(3, 0.3))
        best = allocated(inst, "exhaustive")
        if best is None:
            continue
        got = tapp.allocate(inst, "tapp")
        assert (best.dangerous, best.allocated) <= (got.dangerous, got.allocated)
        gaps.append(got.dangerous - best.dangerous)
    assert len(gaps) >= 10


def tiny_instances(count: int = 200):
    """The benchmark's tiny instances: 3 participants x 3 subregions, T = 3, θ = 0.3."""
    for seed in range(count):
        rng = np.random.default_rng(seed)
        yield TappInstance(rng.dirichlet(np.ones(3), 3), np.full(3, 3), rng.integers(0, 3, 3), 0.3)


def test_exact_equals_exhaustive_on_the_tiny_instances() -> None:
    for inst in tiny_instances(60):
        best = tapp.allocate(inst, "exhaustive")
        got = tapp.allocate(inst, "exact")
        assert_valid(inst, got.x)
        assert (got.dangerous, got.allocated) == (best.dangerous, best.allocated)
        assert got.proven == ("dangerous", "allocated")


@st.composite
def small_tapp_instances(draw):
    """Small enough for the exhaustive search: partly active profiles, uneven time thresholds."""
    n = draw(st.integers(2, 4))
    m = draw(st.integers(2, 3))
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    raw = rng.random((n, m)) * (rng.random((n, m)) < 0.7)
    raw[np.arange(n), rng.integers(0, m, n)] += 0.5
    p = raw / raw.sum(axis=1, keepdims=True)
    t = rng.integers(1, 4, n)
    cap = np.array([t[p[:, j] > 1e-6].sum() for j in range(m)])
    w = np.array([rng.integers(0, min(c, 3) + 1) for c in cap])
    return TappInstance(p, t, w, np.full(n, draw(st.sampled_from([0.1, 0.3, 0.6, 1.0]))))


@FAST
@given(small_tapp_instances())
def test_exact_equals_exhaustive_on_random_small_instances(inst: TappInstance) -> None:
    try:
        best = tapp.allocate(inst, "exhaustive")
    except TappInfeasible:
        with pytest.raises(TappInfeasible):
            tapp.allocate(inst, "exact")
        return
    got = tapp.allocate(inst, "exact")
    assert_valid(inst, got.x)
    assert (got.dangerous, got.allocated) == (best.dangerous, best.allocated)


def test_tapp_plus_meets_its_goal_on_the_tiny_instances() -> None:
    excess, optimal = [], 0
    for inst in tiny_instances():
        best = tapp.allocate(inst, "exhaustive")
        got = tapp.allocate(inst, "tapp_plus")
        assert_valid(inst, got.x)
        excess.append(got.dangerous - best.dangerous)
        optimal += got.dangerous == best.dangerous
    assert np.mean(excess) <= 0.2 and optimal >= 0.8 * 200


@FAST
@given(tapp_instances())
def test_tapp_plus_is_valid_and_never_worse_than_tapp(inst: TappInstance) -> None:
    paper = allocated(inst, "tapp")
    if paper is None:
        return
    ours = tapp.allocate(inst, "tapp_plus")
    assert_valid(inst, ours.x)
    assert (ours.dangerous, ours.allocated) <= (paper.dangerous, paper.allocated)
    assert ours.method == "tapp_plus" and paper.method == "tapp"


def test_the_papers_tapp_is_unchanged() -> None:
    """Phases 1-3 give the allocations they gave before ours was added (pinned: totals over the 200
    tiny instances, and four allocations)."""
    results = [tapp.allocate(inst, "tapp") for inst in tiny_instances()]
    assert (sum(r.dangerous for r in results), sum(r.allocated for r in results)) == (380, 434)
    pinned = {0: [[0, 1, 0], [1, 0, 0], [0, 1, 0]], 3: [[0, 0, 1], [0, 0, 0], [0, 0, 0]],
              7: [[0, 0, 0], [0, 0, 0], [0, 1, 2]], 11: [[1, 0, 0], [1, 0, 0], [0, 1, 0]]}
    for seed, x in pinned.items():
        assert results[seed].x.tolist() == x, seed


def test_exact_reports_infeasible_and_its_proof() -> None:
    with pytest.raises(TappInfeasible, match="subregion 1"):
        tapp.allocate(TappInstance(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1, 1]), np.array([1, 1]), 0.5), "exact")
    got = tapp.allocate(small_tapp(), "exact")
    assert got.to_dict()["proven_optimal"] == ["dangerous", "allocated"]
    assert "proven_optimal" not in tapp.allocate(small_tapp(), "tapp").to_dict()


def test_tapp_disclosure_is_kl_to_the_community() -> None:
    c = np.array([0.5, 0.25, 0.25])
    assert tapp.kl_disclosure(np.array([2, 1, 1]), c) == pytest.approx(0.0, abs=1e-5)
    assert tapp.kl_disclosure(np.array([4, 0, 0]), c) == pytest.approx(np.log(2), abs=1e-4)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(workload=np.array([-1, 1])), "workload"),
        (dict(profiles=np.array([[0.5, 0.6], [0.5, 0.5]])), "sum to 1"),
        (dict(profiles=np.array([[np.nan, 1.0], [0.5, 0.5]])), "profiles"),
        (dict(theta=-0.1), "theta"),
        (dict(time_threshold=np.array([1.5, 2])), "time_threshold"),
        (dict(profiles=np.zeros((0, 2)), time_threshold=np.zeros(0), theta=0.5), "profiles"),
        (dict(workload=np.array([np.nan, 1.0])), "workload"),
        (dict(workload=np.array([1, 1, 1])), r"workload: expected 2 values"),
        (dict(time_threshold=np.array([2, 2, 2])), r"time_threshold: expected 2 values"),
        (dict(time_threshold=np.array([2, -1])), "time_threshold"),
        (dict(theta=np.array([0.5, np.nan])), "theta"),
    ],
)
def test_tapp_bad_input(kwargs: dict, field: str) -> None:
    base = dict(profiles=np.array([[0.5, 0.5], [1.0, 0.0]]), time_threshold=np.array([2, 2]), workload=np.array([1, 1]), theta=0.5)
    with pytest.raises(TappError, match=field):
        TappInstance(**{**base, **kwargs})


def test_tapp_infeasible_names_the_subregion() -> None:
    inst = TappInstance(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([1, 1]), np.array([1, 1]), 0.5)
    with pytest.raises(TappInfeasible, match="subregion 1"):
        tapp.allocate(inst)
