"""Allocation schedulers: run time as instances grow, and distance to the optimum.

* Coverage-aware allocation (paper 004): every method at 4 subbands, 8 subareas, from 100 to
  10,000 users; the paper's swapping (``proposed``) and ours (``exact``) at 10,000 users for 2–6
  subbands (the paper's subband sweep); ``proposed`` / brute force over the coverage experiment's
  random draws (its four sweeps × 100 channel draws, seeds 0–99).
* TAPP (paper 002): the paper's TAPP, its baselines and ours (``tapp_plus``), 9 subregions, from
  500 participants x 500 unit tasks to 5,000 x 5,000 (time threshold 10, θ = 0.8); and every method
  against the exhaustive optimum on 200 tiny instances (3 participants x 3 subregions, T = 3,
  θ = 0.3) — mean excess dangerous participants and the share where the optimum is reached.
* With ``--checkins FILE`` (the Foursquare NYC check-ins; not part of the repository): dangerous and
  allocated participants per method on the real areas (com-distribution), exact included with
  ``--exact-limit`` seconds per instance.

    python benchmarks/allocation.py [--out results/allocation_bench.json] [--checkins FILE [--exact-limit 20]]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from scheduling.allocation import allocate, coverage, tapp

COVERAGE_USERS = (100, 1000, 5000, 10000)
COVERAGE_METHODS = ("proposed", "benchmark1", "benchmark2", "benchmark3", "exact")
SUBBANDS = (2, 3, 4, 5, 6)
TAPP_SIZES = ((500, 500), (1000, 1000), (2500, 2500), (5000, 5000))
TAPP_METHODS = ("tapp", "tapp_plus", "baseline1", "baseline2")
TINY_METHODS = ("tapp", "tapp_plus", "baseline1", "baseline2", "exact")
REAL_THETAS = (0.2, 0.3, 0.4, 0.6, 0.8)


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


def tiny_instance(seed: int) -> tapp.TappInstance:
    rng = np.random.default_rng(seed)
    return tapp.TappInstance(rng.dirichlet(np.ones(3), 3), np.full(3, 3), rng.integers(0, 3, 3), 0.3)


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def coverage_benchmark(results: dict) -> None:
    print("coverage-aware allocation: seconds (4 subbands, 8 subareas, seed 0)")
    print(f"{'users':>6} " + " ".join(f"{m:>11}" for m in COVERAGE_METHODS))
    for k in COVERAGE_USERS:
        inst = coverage.random_instance(k, 4, 8, seed=0)
        row = {m: timed(allocate, inst, m, 0)[0] for m in COVERAGE_METHODS}
        results["coverage"].append({"users": k, **row})
        print(f"{k:>6} " + " ".join(f"{row[m]:11.3f}" for m in COVERAGE_METHODS))

    print("\ncoverage-aware allocation at 10,000 users, 8 subareas, seed 0: the paper's subband sweep")
    print(f"{'subbands':>8} {'proposed s':>11} {'exact s':>9} {'proposed / exact':>17}")
    for n in SUBBANDS:
        inst = coverage.random_instance(10000, n, 8, seed=0)
        t_p, p = timed(allocate, inst, "proposed", 0)
        t_e, e = timed(allocate, inst, "exact", 0)
        results["coverage_10k"].append({"subbands": n, "proposed_s": t_p, "exact_s": t_e, "ratio": p.objective / e.objective})
        print(f"{n:>8} {t_p:11.3f} {t_e:9.3f} {p.objective / e.objective:17.4f}")

    from research.allocation_experiments import COVERAGE_SWEEPS

    ratios, exact_gap = [], 0.0
    for points in COVERAGE_SWEEPS.values():
        for p in points:
            for d in range(100):
                inst = coverage.random_instance(p["k"], p["n"], p["m"], seed=d, rho=p["rho"])
                best = coverage.allocate(inst, "brute_force").objective
                exact_gap = max(exact_gap, abs(coverage.allocate(inst, "exact").objective - best))
                if best > 0:
                    ratios.append(coverage.allocate(inst, "proposed", seed=d).objective / best)
    results["coverage_gap"] = {"draws": len(ratios), "mean": float(np.mean(ratios)), "max": float(np.max(ratios)),
                               "exact_max_abs_diff": exact_gap}
    print(f"\nproposed / brute force over the coverage experiment's {len(ratios)} draws with a non-zero optimum: "
          f"mean {np.mean(ratios):.4f}, max {np.max(ratios):.4f} (goal <= 1.01); exact - brute force: max |diff| {exact_gap:.1e}")


def tapp_benchmark(results: dict) -> None:
    print("\nTAPP: seconds (9 subregions, time threshold 10, theta 0.8, seed 0)")
    print(f"{'participants':>12} {'tasks':>6} " + " ".join(f"{m:>10}" for m in TAPP_METHODS) + "  dangerous (" + " / ".join(TAPP_METHODS) + ")")
    for n, w in TAPP_SIZES:
        inst = tapp_instance(n, w)
        runs = {m: timed(allocate, inst, m) for m in TAPP_METHODS}
        results["tapp"].append({"participants": n, "tasks": w, **{m: t for m, (t, _) in runs.items()},
                                **{f"{m}_dangerous": r.dangerous for m, (_, r) in runs.items()}})
        print(f"{n:>12} {w:>6} " + " ".join(f"{runs[m][0]:10.3f}" for m in runs) + "  " + " / ".join(str(runs[m][1].dangerous) for m in runs))

    print("\nTAPP vs the exhaustive optimum: 200 tiny instances (3 participants x 3 subregions, T = 3, theta = 0.3)")
    extra = {m: [] for m in TINY_METHODS}
    extra_alloc = {m: [] for m in TINY_METHODS}
    seconds = {m: 0.0 for m in TINY_METHODS}
    for seed in range(200):
        inst = tiny_instance(seed)
        best = allocate(inst, "exhaustive")
        for m in TINY_METHODS:
            t, r = timed(allocate, inst, m)
            seconds[m] += t
            extra[m].append(r.dangerous - best.dangerous)
            extra_alloc[m].append(r.allocated - best.allocated if r.dangerous == best.dangerous else np.nan)
    print(f"{'method':>10} {'excess dangerous':>17} {'optimum reached':>16} {'excess allocated*':>18} {'total s':>8}")
    results["tapp_gap"] = {}
    for m in TINY_METHODS:
        e = np.array(extra[m])
        results["tapp_gap"][m] = {"excess_dangerous": float(e.mean()), "optimum_share": float(np.mean(e == 0)),
                                  "excess_allocated": float(np.nanmean(extra_alloc[m])), "seconds": seconds[m]}
        print(f"{m:>10} {e.mean():17.3f} {np.mean(e == 0):16.1%} {np.nanmean(extra_alloc[m]):18.3f} {seconds[m]:8.2f}")
    print("  * where the method's dangerous count is optimal (goal for tapp_plus: excess <= 0.2, optimum on >= 80 %)")


def real_benchmark(results: dict, checkins: str, exact_limit: float) -> None:
    from research.tapp_areas import area_instance, load_areas

    methods = ("tapp", "baseline1", "baseline2", "tapp_plus") + (("exact",) if exact_limit > 0 else ())
    areas = load_areas(checkins)
    print(f"\nTAPP on the check-ins ({checkins}): dangerous (allocated) per area, com-distribution; exact: {exact_limit:g} s each")
    print(f"{'theta':>5} {'area':>4} " + " ".join(f"{m:>11}" for m in methods))
    results["real"] = []
    for th in REAL_THETAS:
        for a, profiles in enumerate(areas):
            inst = area_instance(profiles, th, "com")
            cells = {}
            for m in methods:
                try:
                    r = tapp.exact(inst, time_limit_s=exact_limit) if m == "exact" else allocate(inst, m)
                    cells[m] = (r.dangerous, r.allocated)
                except tapp.TappError:
                    cells[m] = None
            results["real"].append({"theta": th, "area": a, **{m: cells[m] for m in methods}})
            print(f"{th:>5} {a + 1:>4} " + " ".join(f"{'-':>11}" if cells[m] is None else f"{cells[m][0]:>5} ({cells[m][1]:>3})" for m in methods))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/allocation_bench.json")
    parser.add_argument("--checkins", help="the Foursquare NYC check-in CSV (optional: adds the real-data table)")
    parser.add_argument("--exact-limit", type=float, default=0.0, help="with --checkins: seconds for the exact optimum per instance (0: skip)")
    args = parser.parse_args()
    results: dict = {"coverage": [], "coverage_10k": [], "tapp": []}
    coverage_benchmark(results)
    tapp_benchmark(results)
    if args.checkins:
        real_benchmark(results, args.checkins, args.exact_limit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
