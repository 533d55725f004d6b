"""Paper 003's placement, the exact methods (scheduling/placement/exact.py): the MILP against exhaustive
search on tiny instances, its integrality, its time limit and refusals, and exhaustive search's limit.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from scheduling.placement import InfeasibleError, PlacementError, PlacementProblem, exact, solve
from scheduling.placement.exact import solve_milp

from placement_cases import random_problem


@pytest.mark.parametrize("seed", range(12))
def test_milp_equals_exhaustive_on_tiny_star_instances(seed: int) -> None:
    problem = random_problem(np.random.default_rng(seed), m=3, n=6, k=2, coordinates=False)
    exact, exhaustive = solve(problem, "exact"), solve(problem, "exhaustive")
    assert exact.total_cost == pytest.approx(exhaustive.total_cost, rel=1e-9)
    assert exact.assignment.tolist() == exhaustive.assignment.tolist()  # -1 where a user lacks a type


@pytest.mark.parametrize("seed", range(4))
def test_milp_with_coordinates_and_one_type_is_the_round_trip_optimum(seed: int) -> None:
    problem = random_problem(np.random.default_rng(50 + seed), m=4, n=6, k=1, coordinates=True)
    exact, exhaustive = solve(problem, "exact"), solve(problem, "exhaustive")
    assert exact.total_cost == pytest.approx(exhaustive.total_cost, rel=1e-9)
    assert exact.method == "exact" and exact.assignment.tolist() == exhaustive.assignment.tolist()


def test_milp_keeps_a_users_types_on_a_server_it_already_pays_for() -> None:
    """User 0 carries a and b; sending b to server 0 too (which it reaches anyway) costs 1 of processing
    where server 1 would add 3 of service: the optimum, 11, has both of its types on server 0."""
    problem = PlacementProblem(np.array([1.0, 1.0]), np.array([[1.0, 1.0], [np.inf, 1.0]]),
                               np.array([[True, True], [False, True]]), service_cost=np.array([[5.0, 3.0], [10.0, 1.0]]))
    p = solve(problem, "exact")
    assert p.total_cost == 11.0 and p.assignment.tolist() == [[0, 0], [-1, 1]]
    assert p.open_.tolist() == [[True, True], [False, True]]
    assert solve(problem, "exhaustive").total_cost == 11.0


def test_milp_is_integral_where_the_lp_relaxation_is_not() -> None:
    """The classic facility-location gap: three users each near two of three servers. The LP opens
    every server by half (15); a placement must open two (20)."""
    far = 100.0
    cost = np.array([[0.0, 0.0, far], [far, 0.0, 0.0], [0.0, far, 0.0]])
    problem = PlacementProblem(np.full(3, 10.0), np.zeros((3, 1)), np.ones((3, 1), bool), service_cost=cost)
    assert solve(problem, "exact").total_cost == 20.0 == solve(problem, "exhaustive").total_cost


def test_milp_with_a_user_who_carries_nothing() -> None:
    problem = PlacementProblem(np.array([2.0, 3.0]), np.array([[1.0, 1.0], [1.0, 1.0]]),
                               np.array([[True, False], [True, True], [False, False]]),
                               service_cost=np.array([[1.0, 4.0], [2.0, 1.0], [1.0, 1.0]]))
    p = solve(problem, "exact")
    assert p.assignment.tolist()[2] == [-1, -1]
    assert p.total_cost == pytest.approx(solve(problem, "exhaustive").total_cost)  # exhaustive crashed on such a user
    toured = PlacementProblem(problem.activation_cost, problem.processing_cost, problem.user_types,
                              server_pos=np.array([[0.0, 0.0], [3.0, 4.0]]), user_pos=np.zeros((3, 2)))
    assert solve(toured, "exhaustive").assignment.tolist()[2] == [-1, -1]


def test_milp_out_of_time_is_an_error_not_a_placement() -> None:
    with pytest.raises(InfeasibleError, match=r"^method=exact: HiGHS found no solution \(.*[Tt]ime limit"):
        solve_milp(random_problem(np.random.default_rng(2), m=4, n=6, k=2, coordinates=False), time_limit_s=0.0)


def test_milp_refuses_tours_through_several_types() -> None:
    problem = random_problem(np.random.default_rng(1), m=3, n=4, k=2, coordinates=True)
    with pytest.raises(PlacementError, match=r"^method=exact: the MILP needs star service costs .*; tour costs with several types are not linear — use method='exhaustive' on a tiny instance$"):
        solve(problem, "exact")


def test_exact_methods_without_scipy_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecd.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now raises ImportError
    problem = random_problem(np.random.default_rng(0), m=3, n=4, k=1, coordinates=False)
    for method in ("exact", "apx2_standin"):
        with pytest.raises(MissingExtraError, match=r"^method: the exact and LP-based placement methods need scipy: "
                                                    r"pip install 'ecd-runtime\[cloud\]'$"):
            solve(problem, method)


def test_exhaustive_names_itself_and_searches_up_to_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(np.random.default_rng(100), m=3, n=7, k=2, coordinates=False)
    pairs = int(np.isfinite(problem.processing_cost).sum())
    monkeypatch.setattr(exact, "EXHAUSTIVE_MAX_PAIRS", pairs)
    p = solve(problem, "exhaustive")
    assert p.method == "exhaustive" and p.total_cost == solve(problem, "exact").total_cost
    monkeypatch.setattr(exact, "EXHAUSTIVE_MAX_PAIRS", pairs - 1)
    with pytest.raises(PlacementError, match=rf"^method=exhaustive: {pairs} \(server, type\) pairs; at most {pairs - 1} are searched$"):
        solve(problem, "exhaustive")


def test_a_user_who_carries_nothing_does_not_stop_the_others_assignment() -> None:
    problem = PlacementProblem(np.array([2.0, 3.0]), np.array([[1.0, 1.0], [1.0, 1.0]]),
                               np.array([[False, False], [True, False], [True, True]]),
                               service_cost=np.array([[1.0, 1.0], [1.0, 4.0], [2.0, 1.0]]))
    for method in ("exhaustive", "exact"):
        p = solve(problem, method)
        assert p.assignment.tolist()[0] == [-1, -1] and (p.assignment[1:][problem.user_types[1:]] >= 0).all(), method


def test_milp_asks_highs_for_a_proven_optimum_within_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    # imported here, not at the top: scipy is the exact extra (see test_exact_methods_without_scipy_name_the_extra)
    import scipy.optimize
    from solver_spy import record_milp

    calls = record_milp(monkeypatch, scipy.optimize)  # exact.py imports milp from scipy.optimize when it runs
    solve(random_problem(np.random.default_rng(3), m=3, n=6, k=2, coordinates=False), "exact")
    assert [c["options"] for c in calls] == [{"time_limit": 300.0, "mip_rel_gap": 1e-9}]
