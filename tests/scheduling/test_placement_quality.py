"""Placement quality (paper 003), not only feasibility: each heuristic's cost against the optimum
and against a random placement, on seeded instances.

``test_placement_heuristics.py`` checks that every method's placement is feasible and never beats the
exhaustive optimum; a method replaced by random choices passes both. Here, on the same kind of
seeded instances, each method's mean cost ratio to the optimum must stay within a bound a little
above what it achieves (measured here, the margin says how much), and OTACS must clearly beat
random (measured: OTACS ≈ 1.09× the optimum, random ≈ 1.37×). The deterministic baselines are
checked against what their definitions pick, worked out in the test.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scheduling.placement import PlacementProblem, evaluate, solve
from scheduling.placement.heuristics import ACOParams, cluster_users, kmeans, silhouette, star_cost

from placement_cases import random_problem

# mean cost / optimum over the tiny instances (star costs; tours): measured, and the bound tested


TINY_BOUNDS = {
    "otacs": 1.12,  # measured 1.093; 1.078
    "otacs_ls": 1.12,  # 1.091; 1.078
    "ttacs": 1.06,  # 1.022; 1.030
    "dis": 1.08,  # 1.053; 1.021
    "apx2_standin": 1.01,  # 1.000; 1.000
    "cmsa_standin": 1.09,  # 1.062; 1.019
    "bbo_pso": 1.08,  # 1.048; 1.055
}
RANDOM_AT_LEAST = 1.25  # random: 1.361; 1.383
LF_AT_LEAST = 1.4  # lf: 1.749; 1.551 (the cheapest processing ignores where users are)


@lru_cache(maxsize=None)
def tiny(seed: int, coordinates: bool) -> tuple[PlacementProblem, float]:
    problem = random_problem(np.random.default_rng(100 + seed), m=3, n=7, k=2, coordinates=coordinates)
    return problem, solve(problem, "exhaustive").total_cost


def mean_ratio(method: str, coordinates: bool) -> float:
    ratios = []
    for seed in range(6):
        problem, best = tiny(seed, coordinates)
        ratios.append(solve(problem, method, seed=seed).total_cost / best)
    return float(np.mean(ratios))


@pytest.mark.parametrize("coordinates", [False, True], ids=["star", "tours"])
def test_otacs_is_near_the_optimum_and_far_better_than_random(coordinates: bool) -> None:
    otacs, random = mean_ratio("otacs", coordinates), mean_ratio("random", coordinates)
    assert otacs <= TINY_BOUNDS["otacs"], otacs
    assert random >= RANDOM_AT_LEAST, random
    assert random - otacs >= 0.2, (otacs, random)


@pytest.mark.parametrize("coordinates", [False, True], ids=["star", "tours"])
@pytest.mark.parametrize("method", sorted(TINY_BOUNDS))
def test_each_method_stays_near_the_optimum(method: str, coordinates: bool) -> None:
    ratio = mean_ratio(method, coordinates)
    assert 1.0 - 1e-9 <= ratio <= TINY_BOUNDS[method], ratio


@pytest.mark.parametrize("coordinates", [False, True], ids=["star", "tours"])
def test_lowest_cost_first_ignores_distance(coordinates: bool) -> None:
    assert mean_ratio("lf", coordinates) >= LF_AT_LEAST


@lru_cache(maxsize=None)
def mid(seed: int) -> tuple[PlacementProblem, float]:
    """12 servers, 60 users, 3 types, star costs: the MILP gives the optimum."""
    problem = random_problem(np.random.default_rng(200 + seed), m=12, n=60, k=3, coordinates=False)
    return problem, solve(problem, "exact").total_cost


# measured on seeds 200, 201 (mean ratio), and the bound tested
MID_BOUNDS = {"otacs": (1.30, 1.45), "otacs_ls": (1.26, 1.40), "cmsa_standin": (1.03, 1.08), "apx2_standin": (1.03, 1.10)}


@pytest.mark.parametrize("method", sorted(MID_BOUNDS))
def test_larger_instances_against_the_milp_optimum_and_random(method: str) -> None:
    ratios, random = [], []
    for seed in range(2):
        problem, best = mid(seed)
        ratios.append(solve(problem, method, seed=seed).total_cost / best)
        random.append(solve(problem, "random", seed=seed).total_cost / best)
    assert 1.0 - 1e-9 <= np.mean(ratios) <= MID_BOUNDS[method][1], ratios
    assert np.mean(random) >= 3.0 and np.mean(ratios) * 2 < np.mean(random), (ratios, random)


# --- the deterministic baselines, by their definitions ---------------------------------------------


def three_by_two() -> PlacementProblem:
    """Server 0: cheap processing, far from everyone; server 1: dear, near; server 2: cannot do type 1.
    Users 0, 1 carry both types, user 2 only type 0."""
    return PlacementProblem(
        activation_cost=np.array([4.0, 3.0, 5.0]),
        processing_cost=np.array([[1.0, 1.0], [6.0, 6.0], [1.0, np.inf]]),
        user_types=np.array([[True, True], [True, True], [True, False]]),
        service_cost=np.array([[20.0, 1.0, 9.0], [20.0, 2.0, 9.0], [20.0, 3.0, 8.0]]),
    )


def test_lf_opens_the_cheapest_processing_server_per_type() -> None:
    p = solve(three_by_two(), "lf")
    # type 0: servers 0 and 2 both cost 1; the tie goes to the lower activation cost (server 0)
    assert p.open_.tolist() == [[True, True], [False, False], [False, False]]
    assert p.total_cost == pytest.approx(4 + 1 + 1 + 20 * 3)
    assert p.method == "lf"


def test_dis_opens_the_server_nearest_on_average_per_type() -> None:
    p = solve(three_by_two(), "dis")
    # type 0: mean star costs (20, 2, 8.67) → server 1; type 1 (users 0, 1): (20, 1.5, -) → server 1
    assert p.open_.tolist() == [[False, False], [True, True], [False, False]]
    assert p.total_cost == pytest.approx(3 + 6 + 6 + 1 + 2 + 3)
    assert p.method == "dis"


def test_dis_never_picks_a_server_that_cannot_process_the_type() -> None:
    problem = PlacementProblem(
        np.array([1.0, 1.0]), np.array([[1.0], [np.inf]]), np.ones((2, 1), bool),
        service_cost=np.array([[9.0, 0.0], [9.0, 0.0]]),
    )
    assert solve(problem, "dis").open_[:, 0].tolist() == [True, False]


def test_random_is_uniform_over_the_capable_servers() -> None:
    problem = three_by_two()
    picks = np.zeros((3, 2))
    for seed in range(600):
        p = solve(problem, "random", seed=seed)
        assert p.open_.sum(axis=0).tolist() == [1, 1] and p.method == "random"
        picks += p.open_
    assert picks[2, 1] == 0  # server 2 cannot process type 1
    assert picks[:, 0] / 600 == pytest.approx([1 / 3] * 3, abs=0.07)
    assert picks[:2, 1] / 600 == pytest.approx([0.5, 0.5], abs=0.07)
    assert solve(problem, "random", seed=3).open_.tolist() == solve(problem, "random", seed=3).open_.tolist()


def test_star_cost_by_hand() -> None:
    problem = three_by_two()
    open_ = np.array([[False, False], [True, True], [True, False]])
    # type 0: users go to their cheaper of servers 1, 2: 1, 2, 3 → all server 1; server 2 unused
    # type 1: server 1 for users 0, 1. Cost: AC_1 + IPC_1(0) + IPC_1(1) + star 1 + 2 + 3
    assert star_cost(problem, open_) == pytest.approx(3 + 6 + 6 + 6)
    assert star_cost(problem, np.zeros((3, 2), bool)) == np.inf  # a carried type with no server
    # a cluster's objective: only user 2 counts (server 1 for type 0: 3 + 6 + 3)
    assert star_cost(problem, open_, users=np.array([2])) == pytest.approx(12)


# --- phase 1: clustering -------------------------------------------------------------------------------


def two_blobs(rng: np.random.Generator, n: int = 20) -> np.ndarray:
    return np.vstack([rng.normal(0, 0.3, (n, 2)), rng.normal(10, 0.3, (n, 2))])


def test_kmeans_separates_two_blobs() -> None:
    points = two_blobs(np.random.default_rng(1))
    labels = kmeans(points, 2, np.random.default_rng(2))
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]


def test_silhouette_by_hand() -> None:
    # clusters {0, 1} and {10, 11} on a line: a = 1; b = mean distance to the other cluster
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    b = [10.5, 9.5, 9.5, 10.5]
    assert silhouette(points, labels) == pytest.approx(np.mean([(bi - 1) / bi for bi in b]))
    assert silhouette(points, np.zeros(4, dtype=int)) == -1.0  # one cluster: no silhouette
    # {0, 1, 10} and {11}: a = 5.5, 5, 9.5; b = 11, 10, 1; the singleton scores 0
    assert silhouette(points, np.array([0, 0, 0, 1])) == pytest.approx(
        np.mean([(11 - 5.5) / 11, (10 - 5) / 10, (1 - 9.5) / 9.5, 0.0]))


def test_cluster_users_gives_each_blob_its_nearby_servers() -> None:
    rng = np.random.default_rng(3)
    users = two_blobs(rng)
    servers = np.array([[0.5, 0.0], [0.0, 0.5], [10.0, 10.5], [9.5, 10.0]])
    problem = PlacementProblem(np.ones(4), np.ones((4, 1)), np.ones((40, 1), bool), server_pos=servers, user_pos=users)
    labels, per_cluster = cluster_users(problem, ACOParams(), np.random.default_rng(4))
    assert sorted(map(sorted, (s.tolist() for s in per_cluster))) == [[0, 1], [2, 3]]
    first = labels[0]
    assert (labels[:20] == first).all() and (labels[20:] != first).all()
    assert per_cluster[first].tolist() == [0, 1]


def test_evaluate_closes_unused_pairs_and_counts_load() -> None:
    problem = PlacementProblem(
        np.array([10.0, 20.0, 30.0]), np.array([[1.0], [2.0], [3.0]]), np.ones((3, 1), bool),
        service_cost=np.array([[1.0, 9.0, 9.0], [2.0, 9.0, 9.0], [9.0, 3.0, 9.0]]),
        user_items=np.array([[1.0], [4.0], [2.0]]),
    )
    p = evaluate(problem, np.array([[True], [True], [True]]))
    assert p.open_[:, 0].tolist() == [True, True, False]  # nobody uses server 2: it is closed, not paid
    assert p.activated.tolist() == [0, 1] and p.names == 2
    assert p.facility_cost == pytest.approx(10 + 1 + 20 + 2) and p.service_cost == pytest.approx(1 + 2 + 3)
    assert p.avg_lbsu == pytest.approx((2 - 1) / 2) and p.avg_lbsd == pytest.approx((5 - 2) / 2)
    assert p.to_dict(problem) == {
        "method": "", "total_cost": 39.0, "facility_cost": 33.0, "service_cost": 6.0, "activated_servers": [0, 1],
        "types_per_server": {0: ["0"], 1: ["0"]}, "assignment": [[0], [0], [1]],
        "metrics": {"NAMES": 2, "TC": 39.0, "avgLBSU": 0.5, "avgLBSD": 1.5},
    }


def test_a_placement_names_its_types_and_leaves_unused_types_out() -> None:
    problem = PlacementProblem(
        np.array([1.0, 2.0]), np.array([[1.0, 1.0, 1.0], [1.0, np.inf, 1.0]]),
        np.array([[True, True, False], [True, False, True]]), service_cost=np.array([[0.0, 5.0], [5.0, 0.0]]),
        type_names=("noise", "air"),  # the third type has no name: shown by its index
    )
    p = evaluate(problem, np.array([[True, True, False], [True, False, True]]), method="by-hand")
    d = p.to_dict(problem)
    assert d["method"] == "by-hand" and d["assignment"] == [[0, 0, -1], [1, -1, 1]]
    assert d["types_per_server"] == {0: ["noise", "air"], 1: ["noise", "2"]}


# --- every method pinned on seeded instances ------------------------------------------------------------
# Total cost summed over three instances (8 servers, 30 users, 2 types; instance seeds 500..502, method seed
# = instance index), measured and pinned: the ant colonies, the local searches and the baselines are
# stochastic or greedy, and the quality bounds above pass for many of their variants; these catch any
# change of behaviour (a change on purpose updates them). They also depend on numpy's Generator stream
# for these seeds and on HiGHS's answers: a new numpy or scipy that moves them is re-pinned on purpose.
PINNED_TOTALS = {
    ("otacs", False): 475.2293402153406, ("ttacs", False): 479.59595969252985, ("otacs_ls", False): 475.2293402153406,
    ("lf", False): 1133.0434450182142, ("dis", False): 825.655297250031, ("random", False): 1131.8665047871987,
    ("apx2_standin", False): 478.2060096800432, ("cmsa_standin", False): 448.0820197937665, ("bbo_pso", False): 642.9629498932635,
    ("otacs", True): 681.8558502968235, ("ttacs", True): 621.0886101097293, ("otacs_ls", True): 681.8558502968235,
    ("lf", True): 1250.913181422613, ("dis", True): 921.3568119965253, ("random", True): 1255.6820001872188,
    ("apx2_standin", True): 606.4530322172101, ("cmsa_standin", True): 606.4530322172101, ("bbo_pso", True): 833.1084372958323,
}


@pytest.mark.parametrize("method, coordinates", sorted(PINNED_TOTALS))
def test_every_method_is_pinned_on_seeded_instances(method: str, coordinates: bool) -> None:
    placements = [solve(random_problem(np.random.default_rng(500 + s), m=8, n=30, k=2, coordinates=coordinates), method, seed=s)
                  for s in range(3)]
    assert sum(p.total_cost for p in placements) == pytest.approx(PINNED_TOTALS[method, coordinates], rel=1e-9)
    assert {p.method for p in placements} == {method}  # what reports and metrics call it


def test_apx2_opens_the_largest_lp_share_of_a_type_no_server_holds_half_of(monkeypatch: pytest.MonkeyPatch) -> None:
    """APX2's rounding: every (server, type) with q >= 1/2 opens; a carried type below 1/2 everywhere
    opens at its largest q. (The LP is replaced so that the second rule is reached.)"""
    from scheduling.placement import baselines

    problem = random_problem(np.random.default_rng(3), m=3, n=6, k=2, coordinates=False)
    q = np.array([[0.6, 0.2], [0.1, 0.45], [0.5, 0.35]])
    monkeypatch.setattr(baselines, "lp_relaxation", lambda _: q)
    p = baselines.apx2_standin(problem)
    assert p.method == "apx2_standin"
    used = p.open_  # evaluate then closes pairs nobody uses; what was opened is a superset
    assert not used[1, 0] and not used[0, 1] and not used[2, 1]  # never opened: below 1/2, not the largest
    assert used[:, 1].tolist() == [False, True, False]  # type 1 opens at its largest q, 0.45


@pytest.mark.parametrize("coordinates, otacs_total, otacs_ls_total", [
    (False, 172.72820310479838, 153.70808554745), (True, 242.84233360061876, 233.15025678423845)])
def test_otacs_ls_improves_on_otacs_where_ws_is_small(coordinates: bool, otacs_total: float, otacs_ls_total: float) -> None:
    """One type, 15 servers: OTACS's WS holds few servers, and our local search over all of them gains."""
    problem = random_problem(np.random.default_rng(7), m=15, n=40, k=1, coordinates=coordinates)
    assert solve(problem, "otacs", seed=0).total_cost == pytest.approx(otacs_total, rel=1e-9)
    assert solve(problem, "otacs_ls", seed=0).total_cost == pytest.approx(otacs_ls_total, rel=1e-9)


# BBO-PSO stopped after 1, 2 and 4 generations (method seeds 0..2), and run with its defaults, on one
# instance of 40 servers, 80 users and 6 types (instance seed 700, tours): measured and pinned. On the
# small instances above its swarm reaches the same placement under many variants of its update rules
# (immigration, emigration, mutation, the velocity terms), so its final cost cannot tell them apart;
# after a generation or two, the placement it holds can. (Its fitness is the star cost; the cost
# reported here is the placement's, with tours, so a later generation may report more.)
BBO_PSO_SHORT = [1340.1493715248632, 1405.1738902956756, 1443.5126399769742, 1372.1877704463243, 1372.1877704463243,
                 1224.689429746898, 1478.6762024325558, 1354.2622517975342, 1354.2622517975342]
BBO_PSO_DEFAULTS = 1181.6426685743577


def test_bbo_pso_is_pinned_generation_by_generation_and_with_its_defaults() -> None:
    from scheduling.placement.baselines import bbo_pso

    problem = random_problem(np.random.default_rng(700), m=40, n=80, k=6, coordinates=True)
    got = [bbo_pso(problem, seed=s, generations=g).total_cost for s in range(3) for g in (1, 2, 4)]
    assert got == pytest.approx(BBO_PSO_SHORT, rel=1e-9)
    assert bbo_pso(problem).total_cost == pytest.approx(BBO_PSO_DEFAULTS, rel=1e-9)
