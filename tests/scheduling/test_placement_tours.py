"""Paper 003's placement, the problem's costs (scheduling/placement/problem.py): tours and metrics by hand,
exact tours up to four servers, two-opt beyond.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from scheduling.placement import PlacementProblem, evaluate
from scheduling.placement.problem import _tour_length


def test_tour_and_metrics_by_hand() -> None:
    square = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], dtype=float)
    assert _tour_length(square) == pytest.approx(4.0)
    assert _tour_length(square[[0, 2, 1, 3]]) == pytest.approx(4.0)  # the best order, not the given one
    # two servers, three users: users 0, 1 on server 0, user 2 on server 1
    problem = PlacementProblem(
        np.array([10.0, 20.0]), np.array([[1.0], [2.0]]), np.ones((3, 1), bool),
        service_cost=np.array([[1.0, 9.0], [2.0, 9.0], [9.0, 3.0]]),
    )
    p = evaluate(problem, np.array([[True], [True]]))
    assert p.total_cost == pytest.approx(10 + 20 + 1 + 2 + 6)
    assert (p.names, p.avg_lbsu, p.avg_lbsd) == (2, 0.5, 0.5)  # (2 - 1) / 2 users, items


def brute_force_tour(points: np.ndarray) -> float:
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    tours = ((0, *perm, 0) for perm in itertools.permutations(range(1, len(points))))
    return min(sum(d[a, b] for a, b in zip(order, order[1:])) for order in tours)


def nearest_neighbour_tour(points: np.ndarray, two_opt: bool = False) -> float:
    """The heuristic the module documents beyond four servers: nearest neighbour, then (``two_opt``)
    first-improvement 2-opt until no move shortens the tour."""
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    order, left = [0], set(range(1, len(points)))
    while left:
        order.append(min(left, key=lambda j: d[order[-1], j]))
        left.remove(order[-1])
    order.append(0)
    improved = two_opt
    while improved:
        improved = False
        for a in range(1, len(order) - 2):
            for b in range(a + 1, len(order) - 1):
                if d[order[a - 1], order[b]] + d[order[a], order[b + 1]] - d[order[a - 1], order[a]] - d[order[b], order[b + 1]] < -1e-12:
                    order[a : b + 1] = order[a : b + 1][::-1]
                    improved = True
    return sum(d[a, b] for a, b in zip(order, order[1:]))


def test_tours_of_none_one_and_two_servers() -> None:
    assert _tour_length(np.array([[3.0, 4.0]])) == 0.0  # the user alone
    assert _tour_length(np.array([[0.0, 0.0], [3.0, 4.0]])) == 10.0  # there and back
    assert _tour_length(np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]])) == pytest.approx(12.0)


@pytest.mark.parametrize("seed", range(8))
def test_tours_of_up_to_four_servers_are_the_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k in (2, 3, 4):
        points = rng.uniform(0, 10, (k + 1, 2))
        assert _tour_length(points) == pytest.approx(brute_force_tour(points), rel=1e-12)


def test_four_servers_are_enumerated_five_or_more_take_the_heuristic() -> None:
    """The boundary is where the module says: at four servers the optimum even where 2-opt falls
    short; from five, 2-opt's tour even where it is not the optimum (enumeration would be slow)."""
    short_at_4 = short_at_5 = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        for k in (4, 5, 6):
            points = rng.uniform(0, 10, (k + 1, 2))
            heuristic = nearest_neighbour_tour(points, two_opt=True)
            if k == 4:
                assert _tour_length(points) == pytest.approx(brute_force_tour(points), rel=1e-12)
                short_at_4 += heuristic > brute_force_tour(points) + 1e-9
            else:
                assert _tour_length(points) == pytest.approx(heuristic, rel=1e-12)
                short_at_5 += k == 5 and heuristic > brute_force_tour(points) + 1e-9
    assert short_at_4 >= 1 and short_at_5 >= 1  # both boundaries were put to the test


def test_longer_tours_are_untangled_by_two_opt() -> None:
    """Points in convex position: a tour without crossings is the optimum (the hull's perimeter), and
    2-opt removes every crossing; nearest neighbour alone is longer on some of these instances."""
    nn_was_longer = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        k = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k + 1))
        hull = np.c_[np.cos(angles), np.sin(angles)] * rng.uniform(1, 10)
        perimeter = float(np.linalg.norm(hull - np.roll(hull, 1, axis=0), axis=1).sum())
        points = hull[rng.permutation(k + 1)]
        assert _tour_length(points) == pytest.approx(perimeter, rel=1e-12), seed
        nn_was_longer += nearest_neighbour_tour(points) > perimeter * (1 + 1e-9)
    assert nn_was_longer >= 5  # the 2-opt phase was exercised
