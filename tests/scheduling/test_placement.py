"""Paper 003's placement: exact anchors, heuristics' feasibility and gaps, metrics, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scheduling.placement import InfeasibleError, PlacementError, PlacementProblem, evaluate, read_orlib, solve
from scheduling.placement.problem import _tour_length

ORLIB = Path(__file__).resolve().parents[2] / "data" / "orlib"  # shipped with the repository (see its README.md)
OPTIMA = {
    "cap71": 932615.750, "cap72": 977799.400, "cap73": 1010641.450, "cap74": 1034976.975,
    "cap101": 796648.437, "cap102": 854704.200, "cap103": 893782.112, "cap104": 928941.750,
    "cap131": 793439.562, "cap132": 851495.325, "cap133": 893076.712, "cap134": 928941.750,
}
HEURISTICS = ["otacs", "ttacs", "otacs_ls", "lf", "dis", "random", "apx2_standin", "cmsa_standin"]


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
    placement = solve(read_orlib(ORLIB / f"{name}.txt"), "exact")
    assert abs(placement.total_cost - OPTIMA[name]) / OPTIMA[name] <= 1e-6


def test_orlib_files_ship_with_the_repository() -> None:
    assert sorted(p.stem for p in ORLIB.glob("cap*.txt")) == sorted(OPTIMA)
    readme = (ORLIB / "README.md").read_text()
    assert "Beasley" in readme and all(f"{v:.3f}" in readme for v in OPTIMA.values())


def test_cli_solves_a_shipped_orlib_file() -> None:
    proc = cli("--orlib", str(ORLIB / "cap71.txt"), "--method", "exact", "--json")
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout)["total_cost"] - OPTIMA["cap71"]) / OPTIMA["cap71"] <= 1e-6


@pytest.mark.parametrize("seed", range(12))
def test_milp_equals_exhaustive_on_tiny_star_instances(seed: int) -> None:
    problem = random_problem(np.random.default_rng(seed), m=3, n=6, k=2, coordinates=False)
    assert solve(problem, "exact").total_cost == pytest.approx(solve(problem, "exhaustive").total_cost, rel=1e-9)


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
    bad = tmp_path / "bad.txt"
    bad.write_text("2 1\n 0 10\n 0 20\n 1 5\n")  # one cost missing
    with pytest.raises(PlacementError, match="expected 9 numbers for 2 sites and 1 customers, found 8"):
        read_orlib(bad)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecd_cli", "placement", "solve", *args], capture_output=True, text=True, timeout=120)


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
    proc = cli("--instance", str(path), "--method", "exhaustive", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert set(d["metrics"]) == {"NAMES", "TC", "avgLBSU", "avgLBSD"}
    assert d["total_cost"] == pytest.approx(d["facility_cost"] + d["service_cost"])
    instance["servers"][0]["processing_cost"].pop("air")
    path.write_text(json.dumps(instance))
    proc = cli("--instance", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "'air'" in proc.stderr
    instance["users"][0].pop("x")
    path.write_text(json.dumps(instance))
    proc = cli("--instance", str(path))
    assert proc.returncode != 0 and "users[0]: no location" in proc.stderr
    proc = cli("--orlib", str(tmp_path / "missing.txt"))
    assert proc.returncode != 0 and "no such file" in proc.stderr
