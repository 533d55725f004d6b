"""Allocation (papers 002, 004): property tests, exact anchors, bad input; the facade, JSON I/O and CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from cli import ecd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecd.errors import EcdError
from scheduling import allocation
from scheduling.allocation import coverage, io, tapp
from scheduling.allocation.coverage import CoverageError, CoverageInstance
from scheduling.allocation.tapp import TappError, TappInfeasible, TappInstance
from scheduling.errors import AllocationError

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- TAPP -------------------------------------------------------------------------------------------


@st.composite
def tapp_instances(draw, max_n: int = 8, max_m: int = 4):
    n = draw(st.integers(2, max_n))
    m = draw(st.integers(2, max_m))
    rng = np.random.default_rng(draw(st.integers(0, 10_000)))
    raw = rng.random((n, m)) * (rng.random((n, m)) < 0.7)
    raw[np.arange(n), rng.integers(0, m, n)] += 0.5  # everyone is active somewhere
    p = raw / raw.sum(axis=1, keepdims=True)
    t = rng.integers(1, 6, n)
    cap = np.array([t[p[:, j] > 1e-6].sum() for j in range(m)])
    w = np.array([rng.integers(0, max(1, c // 2) + 1) for c in cap])
    theta = draw(st.sampled_from([0.2, 0.5, 0.8, 1.5]))
    return TappInstance(p, t, w, np.full(n, theta))


def assert_valid(inst: TappInstance, x: np.ndarray) -> None:
    assert np.array_equal(x.sum(axis=0), inst.workload)  # workloads met
    assert (x.sum(axis=1) <= inst.time_threshold).all()  # time thresholds
    assert (x[~inst.active] == 0).all()  # only active subregions
    assert (x >= 0).all()


@FAST
@given(tapp_instances())
def test_tapp_allocations_are_valid_and_no_worse_than_baseline1(inst: TappInstance) -> None:
    try:
        b1 = tapp.allocate(inst, "baseline1")
    except TappInfeasible:
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
        try:
            best = tapp.allocate(inst, "exhaustive")
        except TappInfeasible:
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
    try:
        paper = tapp.allocate(inst, "tapp")
    except TappInfeasible:
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


# --- coverage ---------------------------------------------------------------------------------------


# The paper's swapping (Algorithm 2) as first written, one swap scored at a time: the reference the
# vectorised coverage.proposed must follow swap for swap.
def swap_reference(instance: CoverageInstance, seed: int, rho: float | None = None, method: str = "proposed") -> coverage.CoverageAllocation:
    rng = np.random.default_rng(seed)
    n = instance.n_subbands
    start = np.argsort(-instance.weight.max(axis=1), kind="stable")[:n]
    best = coverage._optimal(instance, np.sort(start), method, rho)
    improved = True
    while improved:
        improved = False
        outside = np.setdiff1d(np.arange(instance.n_users), best.scheduled)
        pairs = [(i, u) for i in range(n) for u in outside]
        for idx in rng.permutation(len(pairs)):
            i, u = pairs[idx]
            trial = best.scheduled.copy()
            trial[i] = u
            candidate = coverage._optimal(instance, trial, method, rho)
            if candidate.objective < best.objective - 1e-12:
                best, improved = candidate, True
                break
    return best



@FAST
@given(st.integers(0, 10_000), st.integers(4, 9), st.integers(2, 3), st.integers(1, 5))
def test_lemma1_equalises_latencies_and_hungarian_equals_brute_matching(seed: int, k: int, n: int, m: int) -> None:
    inst = coverage.random_instance(k, n, m, seed)
    scheduled = np.sort(np.random.default_rng(seed).choice(k, n, replace=False))
    subband, total = coverage.match_subbands(inst, scheduled)
    w = inst.weight[scheduled]
    brute = max(sum(w[i, perm[i]] for i in range(n)) for perm in itertools.permutations(range(n)))
    assert total == pytest.approx(brute)
    bits, latency = coverage.lemma1_split(w[np.arange(n), subband], inst.task_bits)
    per_user = bits * (1 / inst.sensing_rate[scheduled] + 1 / inst.rate[scheduled, subband])
    assert np.allclose(per_user, latency)
    assert bits.sum() == pytest.approx(inst.task_bits)


@FAST
@given(st.integers(0, 10_000))
def test_swapping_never_ends_worse_than_its_start_and_benchmark1_at_rho_1(seed: int) -> None:
    inst = coverage.random_instance(9, 3, 3, seed)
    start = np.sort(np.argsort(-inst.weight.max(axis=1), kind="stable")[:3])
    subband, _ = coverage.match_subbands(inst, start)
    _, latency = coverage.lemma1_split(inst.weight[start, subband], inst.task_bits)
    assert coverage.allocate(inst, "proposed", seed).objective <= inst.objective(start, latency) + 1e-12
    latency_only = coverage.random_instance(9, 3, 3, seed, rho=1.0)
    assert coverage.allocate(latency_only, "proposed", seed).objective == pytest.approx(coverage.allocate(latency_only, "benchmark1", seed).objective)


def test_swapping_matches_brute_force_on_small_instances() -> None:
    ratios = [coverage.allocate(inst, "proposed", s).objective / coverage.allocate(inst, "brute_force").objective
              for s in range(100) for inst in [coverage.random_instance(8, 3, 3, s)]]
    assert np.mean(ratios) <= 1.01
    assert min(ratios) >= 1.0 - 1e-12  # brute force is the optimum


def test_vectorised_swapping_takes_the_reference_swaps() -> None:
    """The paper's swapping, vectorised, against the pair-by-pair loop it replaced: same result."""
    for s in range(25):
        for k, n, m, rho in ((8, 3, 3, 0.5), (12, 4, 4, 0.0), (40, 5, 6, 1.0), (150, 4, 8, 0.5), (60, 2, 3, 0.25)):
            inst = coverage.random_instance(k, n, m, s, rho=rho)
            for method, rho_choice in (("proposed", None), ("benchmark1", 1.0)):
                fast = coverage.allocate(inst, method, s)
                ref = swap_reference(inst, s, rho_choice, method)
                if method == "benchmark1":
                    ref = coverage._optimal(inst, ref.scheduled, "benchmark1")
                assert np.array_equal(fast.scheduled, ref.scheduled) and fast.objective == ref.objective, (s, k, method)


def test_exact_coverage_is_brute_force_and_never_worse_than_swapping() -> None:
    for s in range(30):
        inst = coverage.random_instance(11, 1 + s % 5, 1 + s % 6, s, rho=(0.0, 0.25, 0.5, 0.75, 1.0)[s % 5])
        assert coverage.allocate(inst, "exact").objective == pytest.approx(coverage.allocate(inst, "brute_force").objective, abs=1e-12)
    for s in range(3):
        inst = coverage.random_instance(3000, 4, 8, s)
        ours = coverage.allocate(inst, "exact")
        assert ours.objective <= coverage.allocate(inst, "proposed", s).objective + 1e-12
        assert len(ours.scheduled) == 4 and sorted(ours.subband.tolist()) == [0, 1, 2, 3]


def test_benchmarks_are_never_better_than_brute_force() -> None:
    for s in range(20):
        inst = coverage.random_instance(8, 3, 3, s)
        best = coverage.allocate(inst, "brute_force").objective
        for m in ("benchmark1", "benchmark2", "benchmark3"):
            assert coverage.allocate(inst, m, s).objective >= best - 1e-12


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(rate=np.ones((3, 3))), "fewer subbands than users"),
        (dict(sensing_rate=np.array([1.0, np.nan, 1.0])), "sensing_rate"),
        (dict(rate=-np.ones((3, 2))), "rate"),
        (dict(rho=1.5), "rho"),
        (dict(task_bits=-1.0), "task_bits"),
        (dict(subarea=np.array([0, 1, 5])), "subarea"),
        (dict(sensing_rate=np.zeros(0), rate=np.zeros((0, 2)), subarea=np.zeros(0, int)), "empty"),
        (dict(rate=np.array([[1.0, np.nan], [1.0, 1.0], [1.0, 1.0]])), "rate: rates must be finite"),
        (dict(rate=np.ones((4, 2))), r"rate: expected shape \(3, N >= 1\)"),
        (dict(subarea=np.array([0, 1])), "subarea: expected 3 integers"),
        (dict(task_bits=float("nan")), "task_bits"),
        (dict(n_subareas=0), "n_subareas"),
    ],
)
def test_coverage_bad_input(kwargs: dict, field: str) -> None:
    base = dict(sensing_rate=np.ones(3), rate=np.ones((3, 2)), subarea=np.array([0, 1, 1]), n_subareas=2, task_bits=1.0)
    with pytest.raises(CoverageError, match=field):
        CoverageInstance(**{**base, **kwargs})


# --- the facade -----------------------------------------------------------------------------------


def small_tapp() -> TappInstance:
    return TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)


def test_facade_dispatches_on_the_instance_type() -> None:
    t = small_tapp()
    c = coverage.random_instance(8, 3, 3, seed=1)
    assert set(allocation.METHODS) == set(allocation.PROBLEMS) == {"tapp", "coverage"}
    assert allocation.METHODS["tapp"] is tapp.METHODS and allocation.METHODS["coverage"] is coverage.METHODS
    assert allocation.problem_of(t) == "tapp" and allocation.problem_of(c) == "coverage"
    for method in allocation.METHODS["tapp"]:
        got = allocation.allocate(t, method)
        assert isinstance(got, tapp.TappAllocation) and got.method == method
        assert np.array_equal(got.x, tapp.allocate(t, method).x)
    for method in allocation.METHODS["coverage"]:
        got = allocation.allocate(c, method, seed=2)
        assert isinstance(got, coverage.CoverageAllocation) and got.method == method
        assert got.objective == coverage.allocate(c, method, seed=2).objective
    # the default method is the problem's own
    assert allocation.allocate(t).method == allocation.DEFAULT_METHOD["tapp"] == "tapp"
    assert allocation.allocate(c).method == allocation.DEFAULT_METHOD["coverage"] == "proposed"


def test_facade_wrong_method_names_method_and_lists_the_known_ones() -> None:
    with pytest.raises(TappError, match=r"^method: expected one of tapp, baseline1, baseline2, exhaustive, tapp_plus, exact, got 'proposed'$"):
        allocation.allocate(small_tapp(), "proposed")
    with pytest.raises(CoverageError, match=r"^method: expected one of proposed, benchmark1, .*brute_force, exact, got 'greedy'$"):
        allocation.allocate(coverage.random_instance(8, 3, 3, seed=1), "greedy")
    with pytest.raises(AllocationError, match="instance: expected one of TappInstance, CoverageInstance, got dict"):
        allocation.allocate({"profiles": []})  # type: ignore[call-overload]


def test_errors_share_one_base() -> None:
    for cls in (TappError, TappInfeasible, CoverageError):
        assert issubclass(cls, AllocationError) and issubclass(cls, EcdError) and issubclass(cls, ValueError)


def test_tapp_theta_of_the_wrong_length_is_a_clean_error() -> None:
    with pytest.raises(TappError, match=r"theta: expected one value or 3 values, got shape \[2\]"):
        TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), np.array([0.1, 0.2]))


# --- JSON I/O ---------------------------------------------------------------------------------------


def test_tapp_json_round_trip(tmp_path: Path) -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), np.array([0.4, 0.5, 0.6]))
    path = io.write_json(tmp_path / "tapp.json", io.tapp_to_dict(inst))
    back = io.read_tapp(path)
    for name in ("profiles", "time_threshold", "workload", "theta"):
        assert np.array_equal(getattr(back, name), getattr(inst, name)), name
    assert back.time_threshold.dtype == np.int64 and back.workload.dtype == np.int64
    assert np.array_equal(allocation.allocate(back).x, allocation.allocate(inst).x)


def test_tapp_json_theta_default_and_precedence() -> None:
    d = {"profiles": [[0.5, 0.5], [1.0, 0.0]], "time_threshold": [2, 2], "workload": [1, 1]}
    assert io.tapp_from_dict(d, theta=0.7).theta.tolist() == [0.7, 0.7]
    assert io.tapp_from_dict({**d, "theta": 0.3}, theta=0.7).theta.tolist() == [0.3, 0.3]  # the file's own wins
    with pytest.raises(TappError, match=r"^instance: missing field 'theta'$"):
        io.tapp_from_dict(d)


def test_coverage_json_round_trip(tmp_path: Path) -> None:
    inst = coverage.random_instance(7, 3, 4, seed=5, rho=0.25, eta=2.0)
    path = io.write_json(tmp_path / "coverage.json", io.coverage_to_dict(inst))
    back = io.read_coverage(path)
    for name in ("sensing_rate", "rate", "subarea"):
        assert np.array_equal(getattr(back, name), getattr(inst, name)), name
    assert (back.n_subareas, back.task_bits, back.rho, back.eta) == (inst.n_subareas, inst.task_bits, inst.rho, inst.eta)
    assert np.issubdtype(back.subarea.dtype, np.integer)
    assert allocation.allocate(back, seed=3).objective == allocation.allocate(inst, seed=3).objective


def test_coverage_json_defaults() -> None:
    d = {"sensing_rate": [1.0, 2.0, 3.0], "rate": [[1.0], [2.0], [3.0]], "subarea": [0, 1, 1], "n_subareas": 2, "task_bits": 10}
    assert (io.coverage_from_dict(d).rho, io.coverage_from_dict(d).eta) == (0.5, 1.0)
    assert io.coverage_from_dict(d, rho=0.9).rho == 0.9
    assert io.coverage_from_dict({**d, "rho": 0.1}, rho=0.9).rho == 0.1


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, AllocationError)
    return msg


TAPP_OK = {"profiles": [[0.5, 0.5], [1.0, 0.0]], "time_threshold": [2, 2], "workload": [1, 1], "theta": 0.5}
COVERAGE_OK = {"sensing_rate": [1.0, 2.0, 3.0], "rate": [[1.0], [2.0], [3.0]], "subarea": [0, 1, 1], "n_subareas": 2, "task_bits": 10}


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(workload=None), "missing field 'workload'"),
        (dict(profiles=None), "missing field 'profiles'"),
        (dict(time_threshold=None), "missing field 'time_threshold'"),
        (dict(profiles="abc"), "profiles: expected a rectangular array of numbers"),
        (dict(profiles=[[0.5, 0.5], [1.0]]), "profiles: expected a rectangular array of numbers"),
        (dict(time_threshold=[2, "x"]), "time_threshold: expected a rectangular array of numbers"),
        (dict(workload=[1, 1, 1]), "workload: expected 2 values"),
        (dict(profiles=[[0.5, 0.6], [1.0, 0.0]]), "sum to 1"),
    ],
)
def test_tapp_json_bad_field(tmp_path: Path, change: dict, needle: str) -> None:
    d = {k: v for k, v in {**TAPP_OK, **change}.items() if v is not None}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(d))
    with pytest.raises(TappError) as e:
        io.read_tapp(path)
    msg = _one_line(e)
    assert msg.startswith(f"{path}: ") and needle in msg


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(task_bits=None), "missing field 'task_bits'"),
        (dict(rate=None), "missing field 'rate'"),
        (dict(n_subareas=2.5), "n_subareas: expected a whole number"),
        (dict(n_subareas="two"), "n_subareas: expected a whole number"),
        (dict(task_bits="big"), "task_bits: expected a number"),
        (dict(rho="high"), "rho: expected a number"),
        (dict(subarea=[0, 1.5, 1]), "subarea: expected whole numbers"),
        (dict(rate=[[1.0], [2.0]]), "rate: expected shape"),
        (dict(rho=2.0), "rho: expected a value in [0, 1]"),
    ],
)
def test_coverage_json_bad_field(tmp_path: Path, change: dict, needle: str) -> None:
    d = {k: v for k, v in {**COVERAGE_OK, **change}.items() if v is not None}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(d))
    with pytest.raises(CoverageError) as e:
        io.read_coverage(path)
    msg = _one_line(e)
    assert msg.startswith(f"{path}: ") and needle in msg


@pytest.mark.parametrize("reader,error", [(io.read_tapp, TappError), (io.read_coverage, CoverageError)])
def test_json_bad_files(tmp_path: Path, reader, error: type) -> None:
    with pytest.raises(error, match="no such file") as e:
        reader(tmp_path / "missing.json")
    _one_line(e)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(error, match="not valid JSON") as e:
        reader(bad)
    _one_line(e)
    bad.write_text("[1, 2]")
    with pytest.raises(error, match="expected a JSON object, got list") as e:
        reader(bad)
    _one_line(e)


# --- CLI --------------------------------------------------------------------------------------------



def test_allocate_cli(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"profiles": [[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]], "time_threshold": [3, 3, 3], "workload": [3, 3], "theta": 0.4}))
    proc = ecd("allocate", "tapp", "--instance", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert np.array(d["allocation"]).sum(axis=0).tolist() == [3, 3]
    proc = ecd("allocate", "coverage", "--random", "8", "3", "3", "--json")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["scheduled"]) == 3
    path.write_text(json.dumps({"profiles": [[0.5, 0.6]], "time_threshold": [1], "workload": [1, 0]}))
    proc = ecd("allocate", "tapp", "--instance", str(path))
    assert proc.returncode != 0 and "sum to 1" in proc.stderr and "Traceback" not in proc.stderr
    proc = ecd("allocate", "coverage", "--random", "3", "3", "2")
    assert proc.returncode != 0 and "fewer subbands than users" in proc.stderr


def test_allocate_cli_reads_coverage_files_and_rejects_mismatched_sources(tmp_path: Path) -> None:
    path = io.write_json(tmp_path / "c.json", io.coverage_to_dict(coverage.random_instance(6, 2, 3, seed=4)))
    proc = ecd("allocate", "coverage", "--instance", str(path), "--method", "brute_force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["method"] == "brute_force"
    proc = ecd("allocate", "coverage", "--instance", str(path), "--method", "tapp")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "method: expected one of proposed" in proc.stderr
    proc = ecd("allocate", "coverage", "--checkins", str(tmp_path / "x.csv"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "--checkins" in proc.stderr
    proc = ecd("allocate", "tapp", "--instance", str(tmp_path / "missing.json"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "no such file" in proc.stderr
    path.write_text(json.dumps({"profiles": [[1.0]], "time_threshold": [1]}))
    proc = ecd("allocate", "tapp", "--instance", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "missing field 'workload'" in proc.stderr
