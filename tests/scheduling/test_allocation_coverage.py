"""Coverage allocation (paper 004): Lemma 1 and the Hungarian matching, swapping against brute force and its
vectorised form against the reference loop, the exact coverage and the benchmarks, bad input.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hypothesis import given
from hypothesis import strategies as st

from scheduling.allocation import coverage
from scheduling.allocation.coverage import CoverageError, CoverageInstance

from allocation_cases import FAST

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
