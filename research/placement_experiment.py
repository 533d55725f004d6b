"""``ecd experiment placement``: paper 003's sweeps (its Figs. 5–8) on real check-ins.

Instances come from the Foursquare NYC check-in CSV (read by :mod:`research.foursquare`):
venues are candidate edge-server sites, venue categories (``root_type``) are data types, a user is a
trajectory (``tid``) whose initial location is its first check-in and whose data types are the
categories it checked in at. Coordinates are projected to kilometres (equirectangular about the
mean latitude). As in the paper, facility costs are drawn uniformly: AC_j ~ U(20, 60) and
IPC_j(b) ~ U(2, 10), in kilometres of travel (our scale: the paper gives no range).
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from research.foursquare import read_checkins
from scheduling.placement import METHODS, solve
from scheduling.placement.problem import PlacementError, PlacementProblem

SWEEP_METHODS = ("otacs", "ttacs", "otacs_ls", "lf", "dis", "random", "bbo_pso", "apx2_standin", "cmsa_standin")
BASE = {"types": 5, "servers": 20, "users": 130}  # the paper's geolife / roma setting
SWEEPS = {"types": (2, 3, 4, 5, 6, 8, 10), "servers": (10, 20, 30, 40, 50), "users": (50, 100, 130, 200, 250)}


@dataclass(frozen=True)
class CheckIns:
    user_first: np.ndarray  # (U, 2) km
    user_categories: list[set[str]]
    venues: np.ndarray  # (V, 2) km
    categories: list[str]  # by frequency


def load_checkins(path: str | Path) -> CheckIns:
    first: dict[str, tuple[str, float, float]] = {}
    cats: dict[str, set[str]] = {}
    venues: set[tuple[float, float]] = set()
    counts: Counter = Counter()
    for c in read_checkins(path):
        if c.tid not in first or c.when < first[c.tid][0]:
            first[c.tid] = (c.when, c.lat, c.lon)
        cats.setdefault(c.tid, set()).add(c.category)
        venues.add((c.lat, c.lon))
        counts[c.category] += 1
    tids = sorted(first)
    lat0 = np.deg2rad(np.mean([first[t][1] for t in tids]))

    def km(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return np.stack([np.deg2rad(lon) * np.cos(lat0) * 6371.0, np.deg2rad(lat) * 6371.0], axis=1)

    u = np.array([(first[t][1], first[t][2]) for t in tids])
    v = np.array(sorted(venues))
    return CheckIns(km(u[:, 0], u[:, 1]), [cats[t] for t in tids], km(v[:, 0], v[:, 1]), [c for c, _ in counts.most_common()])


def build_instance(data: CheckIns, types: int, servers: int, users: int, seed: int) -> PlacementProblem:
    rng = np.random.default_rng(seed)
    chosen = data.categories[:types]
    eligible = [i for i, c in enumerate(data.user_categories) if c & set(chosen)]
    if users > len(eligible) or servers > len(data.venues):
        raise PlacementError(f"users, servers: at most {len(eligible)} users and {len(data.venues)} venues for {types} types")
    picked = rng.choice(eligible, size=users, replace=False)
    sites = rng.choice(len(data.venues), size=servers, replace=False)
    user_types = np.array([[c in data.user_categories[i] for c in chosen] for i in picked])
    return PlacementProblem(
        activation_cost=rng.uniform(20, 60, servers),
        processing_cost=rng.uniform(2, 10, (servers, types)),
        user_types=user_types,
        server_pos=data.venues[sites],
        user_pos=data.user_first[picked],
        type_names=tuple(chosen),
    )


def run(data_path: str | Path, out_dir: str | Path, seed: int = 0, methods: Sequence[str] = SWEEP_METHODS, repeats: int = 3) -> list[dict]:
    """Every sweep point × method × repeat (seeds seed..seed+repeats-1); writes CSV and PNGs."""
    data = load_checkins(data_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    points = [(name, v) for name, values in SWEEPS.items() for v in values]
    for k, (name, value) in enumerate(points):
        print(f"\r[{'#' * (20 * (k + 1) // len(points)):<20}] {name}={value}", end="", file=sys.stderr, flush=True)
        size = {**BASE, name: value}
        for r in range(repeats):
            problem = build_instance(data, size["types"], size["servers"], size["users"], seed + r)
            for method in methods:
                s = solve(problem, method, seed=seed + r)
                rows.append({"sweep": name, "value": value, "repeat": r, "method": method, "NAMES": s.names,
                             "TC": s.total_cost, "avgLBSU": s.avg_lbsu, "avgLBSD": s.avg_lbsd})
    print(file=sys.stderr)
    with open(out / "placement.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out, methods)
    return rows


def mean_table(rows: list[dict], metric: str, sweep: str, methods: Sequence[str]) -> dict[str, list[float]]:
    values = sorted({r["value"] for r in rows if r["sweep"] == sweep})
    return {m: [float(np.mean([r[metric] for r in rows if r["sweep"] == sweep and r["value"] == v and r["method"] == m])) for v in values] for m in methods}


def summary(rows: list[dict], methods: Sequence[str] = SWEEP_METHODS, balance_methods: Sequence[str] = ("otacs", "ttacs")) -> list[dict]:
    """One row per sweep: the swept ``values``, the mean total cost per method (``TC``) and the mean
    load-balance metrics of ``balance_methods`` (``avgLBSU``, ``avgLBSD``), each a method -> list."""
    present = {r["method"] for r in rows}
    methods = [m for m in methods if m in present]
    balance_methods = [m for m in balance_methods if m in present]
    return [
        {"sweep": sweep, "values": sorted({r["value"] for r in rows if r["sweep"] == sweep}),
         "TC": mean_table(rows, "TC", sweep, methods),
         "avgLBSU": mean_table(rows, "avgLBSU", sweep, balance_methods),
         "avgLBSD": mean_table(rows, "avgLBSD", sweep, balance_methods)}
        for sweep in SWEEPS if any(r["sweep"] == sweep for r in rows)
    ]


def plot(rows: list[dict], out: Path, methods: Sequence[str]) -> None:
    from research.plots import _pyplot

    plt = _pyplot()
    for sweep in SWEEPS:
        values = sorted({r["value"] for r in rows if r["sweep"] == sweep})
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
        for ax, metric in zip(axes, ("NAMES", "TC", "avgLBSU", "avgLBSD")):
            for m, ys in mean_table(rows, metric, sweep, methods).items():
                ax.plot(values, ys, "o-", ms=3, label=m)
            ax.set_xlabel(f"number of {sweep}")
            ax.set_title(metric, fontsize=9)
        axes[0].legend(fontsize=6)
        fig.suptitle(f"paper 003 sweep over {sweep} (Foursquare NYC; others at {BASE})", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"placement_{sweep}.png", dpi=100)
        plt.close(fig)


__all__ = ["load_checkins", "build_instance", "run", "mean_table", "summary", "METHODS"]
