"""Paper 003's placement: exact anchors, heuristics' feasibility and gaps, metrics, bad input."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli import ecd

from scheduling.placement import (
    METHODS,
    InfeasibleError,
    PlacementError,
    PlacementProblem,
    evaluate,
    exact,
    read_orlib,
    solve,
)
from scheduling.placement.exact import solve_milp
from scheduling.placement.heuristics import _load_imbalance
from scheduling.placement.io import instance_from_dict
from scheduling.placement.problem import _tour_length

ORLIB = Path(__file__).resolve().parents[2] / "data" / "orlib"  # shipped with the repository (see its README.md)
OPTIMA = {
    "cap71": 932615.750, "cap72": 977799.400, "cap73": 1010641.450, "cap74": 1034976.975,
    "cap101": 796648.437, "cap102": 854704.200, "cap103": 893782.112, "cap104": 928941.750,
    "cap131": 793439.562, "cap132": 851495.325, "cap133": 893076.712, "cap134": 928941.750,
}


def orlib_file(name: str) -> Path:
    """The shipped OR-Library instance ``name``; a missing file FAILS the test (never a skip): CI must
    not go green on the exact solver's anchors because the data was not checked out."""
    path = ORLIB / f"{name}.txt"
    if not path.is_file():
        pytest.fail(f"OR-Library data missing: {path} (shipped in data/orlib, see data/orlib/README.md); "
                    "the exact-optimum tests cannot run without it", pytrace=False)
    return path


HEURISTICS = ["otacs", "ttacs", "otacs_ls", "lf", "dis", "random", "apx2_standin", "cmsa_standin", "bbo_pso"]


def random_problem(rng: np.random.Generator, m: int, n: int, k: int, coordinates: bool) -> PlacementProblem:
    ipc = rng.uniform(1, 5, (m, k))
    ipc[rng.random((m, k)) < 0.2] = np.inf
    for b in range(k):
        ipc[rng.integers(m), b] = rng.uniform(1, 5)  # every type has a capable server
    types = rng.random((n, k)) < 0.5
    types[np.arange(n), rng.integers(0, k, n)] = True
    if coordinates:
        return PlacementProblem(rng.uniform(5, 20, m), ipc, types, server_pos=rng.uniform(0, 10, (m, 2)), user_pos=rng.uniform(0, 10, (n, 2)))
    return PlacementProblem(rng.uniform(5, 20, m), ipc, types, service_cost=rng.uniform(0, 15, (n, m)))


@pytest.mark.parametrize("name", sorted(OPTIMA))
def test_exact_reproduces_orlib_optimum(name: str) -> None:
    placement = solve(read_orlib(orlib_file(name)), "exact")
    assert abs(placement.total_cost - OPTIMA[name]) / OPTIMA[name] <= 1e-6


def test_orlib_files_ship_with_the_repository() -> None:
    assert ORLIB.is_dir(), f"OR-Library data missing: {ORLIB} (shipped with the repository, see data/orlib/README.md)"
    assert sorted(p.stem for p in ORLIB.glob("cap*.txt")) == sorted(OPTIMA)
    readme = (ORLIB / "README.md").read_text()
    assert "Beasley" in readme and all(f"{v:.3f}" in readme for v in OPTIMA.values())


def test_missing_orlib_data_fails_the_test_not_skips_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ORLIB", tmp_path / "orlib")  # a checkout without data/orlib
    outcome: BaseException | None = None
    try:
        orlib_file("cap71")
    except BaseException as e:  # a skip (pytest.skip.Exception) must not escape: it would mark this test skipped
        outcome = e
    assert type(outcome) is pytest.fail.Exception, f"expected a failure, got {outcome!r}"
    assert "OR-Library data missing" in str(outcome) and str(tmp_path / "orlib" / "cap71.txt") in str(outcome)


def test_orlib_tests_fail_in_a_checkout_without_the_data(tmp_path: Path) -> None:
    """This very file, run where data/orlib does not exist: its OR-Library tests fail, none skips."""
    copy = tmp_path / "tests" / "scheduling" / "test_placement.py"  # ORLIB = parents[2] / "data" / "orlib"
    copy.parent.mkdir(parents=True)
    copy.write_text(Path(__file__).read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", "-k", "exact_reproduces_orlib or shipped_orlib or capa_format_file or ship_with",
         "-o", "addopts=", str(copy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")]))},
    )
    summary = proc.stdout.strip().splitlines()[-1]
    n = len(OPTIMA)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert re.fullmatch(rf"{2 * n + 3 + 1} failed, \d+ deselected in .*", summary), proc.stdout[-2000:]  # no skip, no pass
    assert "OR-Library data missing" in proc.stdout


@pytest.mark.parametrize("name", sorted(OPTIMA))
def test_cli_reproduces_every_shipped_orlib_optimum(name: str) -> None:
    proc = ecd("placement", "solve", "--orlib", str(orlib_file(name)), "--method", "exact", "--json")
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout)["total_cost"] - OPTIMA[name]) / OPTIMA[name] <= 1e-6


def capa_format(source: Path, target: Path) -> Path:
    """A file in the format of OR-Library's large capa-capc instances, made from a small one: the word
    'capacity' in the capacity column, each customer's costs wrapped seven to a line."""
    tokens = source.read_text().split()
    m, n = int(tokens[0]), int(tokens[1])
    lines = [f" {m} {n}"]
    lines += [f" capacity {tokens[2 + 2 * j + 1]}" for j in range(m)]
    rest = tokens[2 + 2 * m :]
    for i in range(n):
        record = rest[i * (m + 1) : (i + 1) * (m + 1)]
        lines.append(f" {record[0]}")
        lines += [" " + " ".join(record[1 + k : 1 + k + 7]) for k in range(0, m, 7)]
    target.write_text("\n".join(lines) + "\n")
    return target


@pytest.mark.parametrize("name", ["cap71", "cap101", "cap134"])
def test_cli_reproduces_the_optimum_from_a_capa_format_file(tmp_path: Path, name: str) -> None:
    path = capa_format(orlib_file(name), tmp_path / f"{name}_capa.txt")
    assert "capacity" in path.read_text()
    proc = ecd("placement", "solve", "--orlib", str(path), "--method", "exact", "--json")
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout)["total_cost"] - OPTIMA[name]) / OPTIMA[name] <= 1e-6
    a, b = read_orlib(path), read_orlib(orlib_file(name))
    assert np.array_equal(a.activation_cost, b.activation_cost) and np.array_equal(a.service_cost, b.service_cost)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "line 1: the file ends where the number of sites m"),
        ("2.5 1\n", "line 1: the number of sites m (first line: 'm n'): expected a whole number >= 1, got '2.5'"),
        ("2 1\n 0 10\n 0 twenty\n 1 5 6\n", "line 3: the fixed cost of site 2: expected a number, got 'twenty'"),
        ("2 1\n 0 10\n cap 20\n 1 5 6\n", "line 3: the capacity of site 2 (a number or the word 'capacity'): expected a number, got 'cap'"),
        ("2 1\n 0 10\n 0 20\n 1 5\n nan\n", "line 5: the cost of serving customer 1 from site 2: expected a finite number >= 0, got 'nan'"),
        ("2 1\n 0 10\n 0 -20\n 1 5 6\n", "line 3: the fixed cost of site 2: expected a finite number >= 0, got '-20'"),
        ("2 1\n 0 10\n 0 20\n 1 5\n", "line 4: the file ends where the cost of serving customer 1 from site 2 was expected"),
        ("2 1\n 0 10\n 0 20\n 1 5 6\n 7\n", "line 5: unexpected '7' after the last customer"),
    ],
)
def test_malformed_orlib_files_name_the_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(PlacementError) as e:
        read_orlib(path)
    assert str(e.value).startswith(f"{path}, line ") and needle in str(e.value) and "\n" not in str(e.value)
    proc = ecd("placement", "solve", "--orlib", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and needle in proc.stderr


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


@pytest.mark.parametrize("coordinates", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_heuristics_are_feasible_and_never_beat_exhaustive(seed: int, coordinates: bool) -> None:
    problem = random_problem(np.random.default_rng(100 + seed), m=3, n=7, k=2, coordinates=coordinates)
    best = solve(problem, "exhaustive").total_cost
    for method in HEURISTICS:
        p = solve(problem, method, seed=seed)
        rows, cols = np.nonzero(problem.user_types)
        servers = p.assignment[rows, cols]
        assert (servers >= 0).all(), method
        assert p.open_[servers, cols].all(), method  # every upload goes to a server that processes it
        assert np.isfinite(problem.processing_cost[servers, cols]).all(), method
        assert p.total_cost == pytest.approx(p.facility_cost + p.service_cost)
        assert p.total_cost >= best - 1e-9, method
        assert p.names == len(p.activated)


def test_seeded_methods_are_reproducible() -> None:
    problem = random_problem(np.random.default_rng(7), m=12, n=60, k=3, coordinates=True)
    for method in ("otacs", "ttacs", "random", "cmsa_standin"):
        assert solve(problem, method, seed=3).total_cost == solve(problem, method, seed=3).total_cost


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


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    ok = dict(activation_cost=np.ones(2), processing_cost=np.ones((2, 2)), user_types=np.ones((2, 2), bool),
              server_pos=np.zeros((2, 2)), user_pos=np.zeros((2, 2)))
    with pytest.raises(InfeasibleError, match="no server can process data type '1'"):
        PlacementProblem(**{**ok, "processing_cost": np.array([[1.0, np.inf], [1.0, np.inf]])})
    with pytest.raises(PlacementError, match="activation_cost"):
        PlacementProblem(**{**ok, "activation_cost": np.array([1.0, -1.0])})
    with pytest.raises(PlacementError, match="processing_cost"):
        PlacementProblem(**{**ok, "processing_cost": np.array([[1.0, np.nan], [1.0, 1.0]])})
    with pytest.raises(PlacementError, match="user_pos: entry 1 has no valid location"):
        PlacementProblem(**{**ok, "user_pos": np.array([[0.0, 0.0], [np.nan, 1.0]])})
    with pytest.raises(PlacementError, match="server set is empty"):
        PlacementProblem(**{**ok, "activation_cost": np.ones(0), "processing_cost": np.ones((0, 2))})
    with pytest.raises(PlacementError, match="method"):
        solve(PlacementProblem(**ok), "greedy")
    with pytest.raises(PlacementError, match="no data types"):
        PlacementProblem(**{**ok, "processing_cost": np.ones((2, 0)), "user_types": np.ones((2, 0), bool)})
    with pytest.raises(PlacementError, match="user set is empty"):
        PlacementProblem(**{**ok, "user_types": np.ones((0, 2), bool), "user_pos": np.zeros((0, 2))})
    with pytest.raises(PlacementError, match=r"service_cost: expected shape \(2, 2\)"):
        PlacementProblem(**{**ok, "service_cost": np.ones((3, 2))})
    with pytest.raises(PlacementError, match="service_cost: costs must be finite"):
        PlacementProblem(**{**ok, "service_cost": np.array([[1.0, np.nan], [1.0, 1.0]])})
    with pytest.raises(PlacementError, match=r"server_pos: expected shape \(2, 2\)"):
        PlacementProblem(**{**ok, "server_pos": np.zeros((3, 2))})


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda d: d.update(types=[]), "types: the list of data types is empty"),
        (lambda d: d.update(servers=[]), "servers: the server set is empty"),
        (lambda d: d.update(users="all"), "users: expected a list"),
        (lambda d: d["servers"][0].update(activation_cost=float("nan")), "activation_cost: costs must be finite and >= 0"),
        (lambda d: d["servers"][0].update(activation_cost=-1), "activation_cost: costs must be finite and >= 0"),
        (lambda d: d["servers"][1]["processing_cost"].update(noise=-2), "processing_cost: costs must be finite and >= 0"),
        (lambda d: d["servers"][0].pop("activation_cost"), "missing field 'activation_cost'"),
        (lambda d: d["users"][0].update(types=["heat"]), "users[0].types: unknown data type 'heat'"),
    ],
)
def test_instance_from_dict_bad_input_names_the_field(change, needle: str) -> None:
    d = {"types": ["noise"], "servers": [{"x": 0, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1}},
                                          {"x": 1, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1}}],
         "users": [{"x": 0, "y": 1, "types": ["noise"]}]}
    change(d)
    with pytest.raises(PlacementError, match=re.escape(needle)):
        instance_from_dict(d)


def test_bbo_pso_fitness_is_the_star_cost() -> None:
    from scheduling.placement.baselines import single_server_cost
    from scheduling.placement.heuristics import star_cost

    rng = np.random.default_rng(9)
    for coordinates in (False, True):
        problem = random_problem(rng, m=9, n=50, k=3, coordinates=coordinates)
        types = np.flatnonzero(problem.user_types.any(axis=0))
        for _ in range(20):
            chosen = np.array([rng.choice(np.flatnonzero(np.isfinite(problem.processing_cost[:, b]))) for b in types])
            open_ = np.zeros(problem.processing_cost.shape, dtype=bool)
            open_[chosen, types] = True
            assert single_server_cost(problem, types, chosen, problem.user_server_cost()) == pytest.approx(star_cost(problem, open_))


def test_bbo_pso_picks_one_server_per_type_and_is_seeded() -> None:
    problem = random_problem(np.random.default_rng(5), m=8, n=40, k=3, coordinates=True)
    p = solve(problem, "bbo_pso", seed=1)
    assert p.method == "bbo_pso" and (p.open_.sum(axis=0) <= 1).all() and p.open_[:, problem.user_types.any(axis=0)].any(axis=0).all()
    assert p.total_cost == solve(problem, "bbo_pso", seed=1).total_cost
    assert p.total_cost <= solve(problem, "random", seed=1).total_cost * 1.5


def test_cli_json_and_errors(tmp_path: Path) -> None:
    instance = {
        "types": ["noise", "air"],
        "servers": [
            {"x": 0, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1, "air": 2}},
            {"x": 4, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1}},
        ],
        "users": [{"x": 0, "y": 1, "types": ["noise", "air"]}, {"x": 4, "y": 1, "types": ["noise"]}],
    }
    path = tmp_path / "i.json"
    path.write_text(json.dumps(instance))
    proc = ecd("placement", "solve", "--instance", str(path), "--method", "exhaustive", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert set(d["metrics"]) == {"NAMES", "TC", "avgLBSU", "avgLBSD"}
    assert d["total_cost"] == pytest.approx(d["facility_cost"] + d["service_cost"])
    instance["servers"][0]["processing_cost"].pop("air")
    path.write_text(json.dumps(instance))
    proc = ecd("placement", "solve", "--instance", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "'air'" in proc.stderr
    instance["users"][0].pop("x")
    path.write_text(json.dumps(instance))
    proc = ecd("placement", "solve", "--instance", str(path))
    assert proc.returncode != 0 and "users[0]: no location" in proc.stderr
    proc = ecd("placement", "solve", "--orlib", str(tmp_path / "missing.txt"))
    assert proc.returncode != 0 and "no such file" in proc.stderr


def test_exact_methods_without_scipy_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecd.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now raises ImportError
    problem = random_problem(np.random.default_rng(0), m=3, n=4, k=1, coordinates=False)
    for method in ("exact", "apx2_standin"):
        with pytest.raises(MissingExtraError, match=r"^method: the exact and LP-based placement methods need scipy: "
                                                    r"pip install 'ecd-runtime\[cloud\]'$"):
            solve(problem, method)


# --- seeds, names, limits and units --------------------------------------------------------------------


SEEDED = ["otacs", "ttacs", "otacs_ls", "random", "cmsa_standin", "bbo_pso"]


def test_a_method_called_without_a_seed_uses_seed_0() -> None:
    """Each seeded method's own default seed is 0, as ``solve``'s is; on this instance seed 1 gives
    another placement, so a different default would show."""
    problem = random_problem(np.random.default_rng(500), m=8, n=30, k=2, coordinates=False)
    for name in SEEDED:
        own, zero, one = METHODS[name](problem), solve(problem, name, seed=0), solve(problem, name, seed=1)
        assert own.total_cost == zero.total_cost != one.total_cost, name
        assert own.open_.tolist() == zero.open_.tolist(), name


@pytest.mark.parametrize("method", SEEDED + ["lf", "dis"])
def test_a_placement_does_not_depend_on_the_unit_of_cost(method: str) -> None:
    """Every cost divided by 1024 (exact in binary floating point): the same placement at 1/1024 of
    the cost. The ant colonies' deposit Q/f and the annealing temperature are relative to the costs
    met, so no constant of the algorithms may assume a unit (a local search that ignores gains under
    1 would stop early here)."""
    problem = random_problem(np.random.default_rng(500), m=8, n=30, k=2, coordinates=False)
    s = 2.0 ** -10
    scaled = PlacementProblem(problem.activation_cost * s, problem.processing_cost * s, problem.user_types,
                              service_cost=problem.service_cost * s)
    a, b = solve(problem, method, seed=2), solve(scaled, method, seed=2)
    assert b.total_cost == a.total_cost * s and b.open_.tolist() == a.open_.tolist()


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
    # imported here, not at the top: test_orlib_tests_fail_in_a_checkout_without_the_data copies this file alone
    import scipy.optimize
    from solver_spy import record_milp

    calls = record_milp(monkeypatch, scipy.optimize)  # exact.py imports milp from scipy.optimize when it runs
    solve(random_problem(np.random.default_rng(3), m=3, n=6, k=2, coordinates=False), "exact")
    assert [c["options"] for c in calls] == [{"time_limit": 300.0, "mip_rel_gap": 1e-9}]


def test_ttacs_load_imbalance_by_hand() -> None:
    """Two servers open for both types. Type 0: users 0 and 1 go to server 0, user 2 to server 1;
    type 1: user 0 to server 0. Users per server, counted per type: 2 and 1; items per server: what
    they upload there. The imbalance is (u_max − u_min)/N + (d_max − d_min)/Σ items; with one server
    active it is 0."""
    types = np.array([[True, True], [True, False], [True, False]])
    problem = PlacementProblem(np.ones(2), np.ones((2, 2)), types, service_cost=np.array([[1.0, 5.0], [1.0, 5.0], [5.0, 1.0]]))
    items, cost_us = problem.user_items, problem.user_server_cost()
    users_per = np.array([2.0, 1.0])
    items_per = np.array([items[0, 0] + items[1, 0] + items[0, 1], items[2, 0]])
    want = (users_per.max() - users_per.min()) / 3 + (items_per.max() - items_per.min()) / items.sum()
    assert want > 0 and _load_imbalance(problem, np.ones((2, 2), dtype=bool), cost_us) == pytest.approx(want)
    assert _load_imbalance(problem, np.array([[True, True], [False, False]]), cost_us) == 0.0


@pytest.mark.parametrize("method", ["otacs", "otacs_ls", "ttacs"])
def test_a_placement_that_costs_nothing_is_found_not_a_division_by_zero(method: str) -> None:
    """No activation, processing or service cost: every ant's choice costs 0, and the pheromone
    deposit Q/f divided by it (found by the cloud core's tests, where an operator may set the
    activation cost to 0 and a device may stand at its edge node)."""
    problem = PlacementProblem(np.zeros(2), np.zeros((2, 1)), np.ones((2, 1), bool), service_cost=np.zeros((2, 2)))
    p = solve(problem, method)
    assert p.total_cost == 0.0 and p.method == method
