"""Placement (paper 003): quality against the OR-Library optima, and run time as instances grow.

1. Every method on the twelve OR-Library ``cap`` instances (uncapacitated reading): ratio of its
   total cost to the MILP optimum, per instance and on average; the MILP against the published
   optimum.
2. Run time on seeded synthetic instances (users and candidate servers uniform on a 50 km square,
   5 data types) from 50 servers x 500 users up to 1,000 servers x 10,000 users.

    python benchmarks/placement.py [--orlib data/orlib] [--out results/placement_bench.json]

The OR-Library files ship in ``data/orlib`` (source, format and optima in its README.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from scheduling.placement import PlacementProblem, read_orlib, solve

ORLIB_METHODS = ("otacs", "ttacs", "otacs_ls", "lf", "dis", "random", "bbo_pso", "apx2_standin", "cmsa_standin")
SCALING_METHODS = ("otacs", "ttacs", "lf", "dis", "bbo_pso")
SIZES = ((50, 500), (100, 1000), (250, 2500), (500, 5000), (1000, 10000))
ORLIB = Path(__file__).resolve().parents[1] / "data" / "orlib"


def synthetic(m: int, n: int, k: int, seed: int) -> PlacementProblem:
    rng = np.random.default_rng(seed)
    types = rng.random((n, k)) < 0.3
    types[np.arange(n), rng.integers(0, k, n)] = True
    return PlacementProblem(
        activation_cost=rng.uniform(20, 60, m), processing_cost=rng.uniform(2, 10, (m, k)), user_types=types,
        server_pos=rng.uniform(0, 50, (m, 2)), user_pos=rng.uniform(0, 50, (n, 2)),
    )


def _published(readme: Path) -> dict[str, float]:
    """The optima table of data/orlib/README.md: {"cap71": 932615.75, ...}."""
    out: dict[str, float] = {}
    if not readme.exists():
        return out
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("cap") and cells[0].endswith("x"):
            for k, value in enumerate(cells[1:], start=1):
                try:
                    out[f"{cells[0][:-1]}{k}"] = float(value)
                except ValueError:
                    pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orlib", default=str(ORLIB), help="folder of OR-Library cap*.txt files (default: the repository's data/orlib)")
    parser.add_argument("--out", default="results/placement_bench.json")
    parser.add_argument("--max-servers", type=int, default=1000)
    args = parser.parse_args()
    results: dict = {"orlib": {}, "scaling": []}

    print("ratio to the OR-Library optimum (MILP), seed 0")
    print(f"{'instance':<9} " + " ".join(f"{m:>12}" for m in ORLIB_METHODS))
    ratios = {m: [] for m in ORLIB_METHODS}
    paths = sorted(Path(args.orlib).glob("cap*.txt"), key=lambda p: (len(p.stem), p.stem))
    if not paths:
        parser.error(f"--orlib: no cap*.txt files in {args.orlib}")
    published = _published(Path(args.orlib) / "README.md")
    worst = 0.0
    for path in paths:
        problem = read_orlib(path)
        optimum = solve(problem, "exact").total_cost
        if path.stem in published:
            worst = max(worst, abs(optimum - published[path.stem]) / published[path.stem])
        row = {m: solve(problem, m, seed=0).total_cost / optimum for m in ORLIB_METHODS}
        for m, r in row.items():
            ratios[m].append(r)
        results["orlib"][path.stem] = {"optimum": optimum, **row}
        print(f"{path.stem:<9} " + " ".join(f"{row[m]:12.4f}" for m in ORLIB_METHODS))
    print(f"{'mean':<9} " + " ".join(f"{np.mean(ratios[m]):12.4f}" for m in ORLIB_METHODS))
    print(f"MILP vs the published optima ({len(published)} in {Path(args.orlib) / 'README.md'}): worst relative difference {worst:.1e}")

    print("\nrun time (s) on synthetic instances, 5 data types, seed 0")
    print(f"{'servers':>8} {'users':>7} " + " ".join(f"{m:>9}" for m in SCALING_METHODS))
    for m_servers, n_users in SIZES:
        if m_servers > args.max_servers:
            break
        problem = synthetic(m_servers, n_users, 5, seed=0)
        times = {}
        for method in SCALING_METHODS:
            t0 = time.perf_counter()
            solve(problem, method, seed=0)
            times[method] = time.perf_counter() - t0
        results["scaling"].append({"servers": m_servers, "users": n_users, **times})
        print(f"{m_servers:>8} {n_users:>7} " + " ".join(f"{times[m]:9.2f}" for m in SCALING_METHODS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
