"""Allocation (papers 001, 002, 004): property tests, exact anchors, bad input."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduling.allocation import coverage, tapp
from scheduling.quality import crowdpower
from scheduling.allocation.coverage import CoverageError, CoverageInstance
from scheduling.allocation.tapp import TappError, TappInfeasible, TappInstance

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
    ],
)
def test_coverage_bad_input(kwargs: dict, field: str) -> None:
    base = dict(sensing_rate=np.ones(3), rate=np.ones((3, 2)), subarea=np.array([0, 1, 1]), n_subareas=2, task_bits=1.0)
    with pytest.raises(CoverageError, match=field):
        CoverageInstance(**{**base, **kwargs})


# --- CrowdPower -------------------------------------------------------------------------------------


@FAST
@given(st.integers(0, 10_000), st.integers(3, 12), st.integers(2, 10))
def test_qualities_sum_to_one_and_reputations_stay_in_bounds(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(20, rng.uniform(0.1, 5), (n, k))
    data[rng.random((n, k)) < 0.2] = np.nan
    data[:, 0] = rng.normal(20, 1, n)  # nobody sends nothing at all
    q, _ = crowdpower.data_quality(data)
    assert np.allclose(q.sum(axis=0), 1.0)
    rep = crowdpower.reputation(q)
    assert ((rep >= crowdpower.W) & (rep <= crowdpower.X)).all()


def test_planted_outliers_are_caught_and_bad_data_gets_low_quality() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        values = rng.normal(46, 0.5, 8)
        planted = rng.choice(8, 1 + trial % 2, replace=False)  # one faulty phone, or a biased pair
        values[planted] += rng.choice([-1, 1]) * rng.uniform(10, 15)  # the same bias for a pair
        assert set(np.flatnonzero(crowdpower.outliers(values))) == set(planted)
    # the rule's known blind spot: two symmetric outliers inflate std so that r = 2 std reaches them
    symmetric = np.r_[np.full(6, 46.0), 36.0, 56.0]
    assert not crowdpower.outliers(symmetric)[6:].all()
    data = rng.normal(46, 0.5, (8, 10))
    data[[3, 4]] += 10
    q, _ = crowdpower.data_quality(data)
    assert q[[3, 4]].mean() < q[[0, 1, 2, 5, 6, 7]].mean()
    assert crowdpower.reputation(q)[[3, 4]].max() < crowdpower.reputation(q)[[0, 1, 2, 5, 6, 7]].min()


def test_sensor_score_partials() -> None:
    ts = np.arange(0, 1, 0.01)
    acc = np.column_stack([np.zeros(100), np.zeros(100), np.full(100, 9.80665) + np.tile([0, 0.01], 50)])
    s = crowdpower.sensor_score("accelerometer", ts, acc, np.arange(0, 0.5, 0.01))
    assert s["events"] == 100 and s["gravity"] == pytest.approx(4000, rel=1e-3) and s["unique"] == 0
    assert s["total"] == pytest.approx(sum(v for k, v in s.items() if k != "total"))
    light = crowdpower.sensor_score("light", ts, np.arange(100) % 7, np.arange(0, 0.5, 0.01))
    assert light["unique"] == 7 and light["gravity"] == 0


def test_site_selection_drops_malicious_and_respects_level() -> None:
    good = crowdpower.Participant({"camera": 9, "pulse": 9})
    sites = [
        crowdpower.Site("near-bad", (0, 0), [good, crowdpower.Participant({"camera": 9, "pulse": 9}, malicious=True)]),
        crowdpower.Site("far-good", (50, 0), [good]),
        crowdpower.Site("weak", (0, 0), [crowdpower.Participant({"camera": 2})]),
    ]
    best, scores = crowdpower.select_site(sites, "heart_attack", 5.0, 10.0, (0, 0))
    assert best.site == "far-good"
    assert [s.eligible for s in scores] == [False, True, False]
    best, _ = crowdpower.select_site(sites, "heart_attack", 9.5, 10.0, (0, 0))
    assert best is None
    with pytest.raises(crowdpower.CrowdPowerError, match="event"):
        crowdpower.select_site(sites, "earthquake", 5, 10, (0, 0))
    with pytest.raises(crowdpower.CrowdPowerError, match="sites"):
        crowdpower.select_site([], "fire", 5, 10, (0, 0))


def test_crowdpower_bad_input() -> None:
    with pytest.raises(crowdpower.CrowdPowerError, match="participant 1 sent nothing"):
        crowdpower.data_quality(np.array([[1.0, 2.0], [np.nan, np.nan]]))
    with pytest.raises(crowdpower.CrowdPowerError, match="quality"):
        crowdpower.reputation(np.array([[1.5]]))


# --- CLI --------------------------------------------------------------------------------------------


def ecd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecd_cli", *args], capture_output=True, text=True, timeout=120)


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
    sites = tmp_path / "s.json"
    sites.write_text(json.dumps({"event_position": [0, 0], "sites": [{"name": "A", "position": [1, 1], "participants": [{"sensor_quality": {"camera": 8, "pulse": 8}}]}]}))
    proc = ecd("allocate", "sites", "--instance", str(sites), "--event", "heart_attack", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["chosen"] == "A"
