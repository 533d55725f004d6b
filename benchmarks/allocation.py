"""Allocation schedulers' run time as instances grow.

* Coverage-aware allocation (paper 004): proposed (swapping) and the benchmarks, 4 subbands,
  8 subareas, from 100 to 10,000 users.
* TAPP (paper 002): TAPP and its baselines, 9 subregions, from 500 participants x 500 unit tasks
  to 5,000 x 5,000 (each participant has a 10-task time threshold; θ = 0.8).

    python benchmarks/allocation.py [--out results/allocation_bench.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from scheduling.allocation import allocate, coverage, tapp

COVERAGE_USERS = (100, 1000, 5000, 10000)
TAPP_SIZES = ((500, 500), (1000, 1000), (2500, 2500), (5000, 5000))


def tapp_instance(participants: int, tasks: int, seed: int = 0) -> tapp.TappInstance:
    rng = np.random.default_rng(seed)
    raw = rng.dirichlet(np.full(9, 0.7), participants)
    raw[raw < 0.05] = 0
    raw[np.arange(participants), raw.argmax(axis=1)] += 1e-3
    p = raw / raw.sum(axis=1, keepdims=True)
    shares = p.mean(axis=0)
    work = np.floor(shares / shares.sum() * tasks).astype(int)
    work[np.argmax(shares)] += tasks - work.sum()
    return tapp.TappInstance(p, np.full(participants, 10), work, 0.8)


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/allocation_bench.json")
    args = parser.parse_args()
    results: dict = {"coverage": [], "tapp": []}

    methods = ("proposed", "benchmark1", "benchmark2", "benchmark3")
    print("coverage-aware allocation: seconds (4 subbands, 8 subareas, seed 0)")
    print(f"{'users':>6} " + " ".join(f"{m:>11}" for m in methods))
    for k in COVERAGE_USERS:
        inst = coverage.random_instance(k, 4, 8, seed=0)
        row = {m: timed(allocate, inst, m, 0)[0] for m in methods}
        results["coverage"].append({"users": k, **row})
        print(f"{k:>6} " + " ".join(f"{row[m]:11.3f}" for m in methods))

    print("\nTAPP: seconds (9 subregions, time threshold 10, theta 0.8, seed 0)")
    print(f"{'participants':>12} {'tasks':>6} " + " ".join(f"{m:>10}" for m in ("tapp", "baseline1", "baseline2")) + "  dangerous (tapp / b1 / b2)")
    for n, w in TAPP_SIZES:
        inst = tapp_instance(n, w)
        runs = {m: timed(allocate, inst, m) for m in ("tapp", "baseline1", "baseline2")}
        results["tapp"].append({"participants": n, "tasks": w, **{m: t for m, (t, _) in runs.items()},
                                **{f"{m}_dangerous": r.dangerous for m, (_, r) in runs.items()}})
        print(f"{n:>12} {w:>6} " + " ".join(f"{runs[m][0]:10.3f}" for m in runs) + "  " + " / ".join(str(runs[m][1].dangerous) for m in runs))
    print("\nTAPP vs the exhaustive optimum: 200 tiny instances (3 participants x 3 subregions, T = 3, θ = 0.3)")
    extra = {m: [] for m in ("tapp", "baseline1", "baseline2")}
    optimal = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        inst = tapp.TappInstance(rng.dirichlet(np.ones(3), 3), np.full(3, 3), rng.integers(0, 3, 3), 0.3)
        best = allocate(inst, "exhaustive")
        for m in extra:
            extra[m].append(allocate(inst, m).dangerous - best.dangerous)
        optimal += extra["tapp"][-1] == 0
    results["tapp_gap"] = {m: float(np.mean(v)) for m, v in extra.items()} | {"tapp_optimal_share": optimal / 200}
    print("  mean extra dangerous participants: " + ", ".join(f"{m} {np.mean(v):.3f}" for m, v in extra.items())
          + f"; TAPP reaches the optimum on {optimal / 200:.1%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
