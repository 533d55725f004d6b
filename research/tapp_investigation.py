"""Why our TAPP numbers on real check-ins are far from paper 002's 76 % (``ecd experiment tapp-gap``).

The paper (§5.1) reports that TAPP has on average 76.23 % fewer dangerous participants than both
baselines for θ ∈ [0.2, 0.4], on Yelp reviewers with > 30 reviews in three cities on 3×3 grids. On
Foursquare NYC we measured 0 % against Baseline1. This module varies what the paper leaves open or
what differs between the two data sets, one factor at a time from our base setting, and reports
for each variant:

* the data's shape: participants, mean active cells, and how many participants *can* be safe at
  all — with active cells A_i, the lowest disclosure any allocation can give i is −ln c(A_i) (all of
  i's work spread over A_i in proportion to c);
* dangerous participants and allocated participants for the paper's TAPP, Baseline1, Baseline2,
  ours (``tapp_plus``) and, where it finishes within the time limit, the exact optimum;
* the paper's metric: the share of Baseline1's and Baseline2's dangerous participants a method
  avoids, averaged over θ ∈ {0.2, 0.3, 0.4}, the areas and the variant's workloads.

Variants (ours): ``base`` (three latitude areas, 3×3 regular grid over the 2nd–98th percentiles,
T = 10, work = 30 % of the time); ``one_area`` (the whole city as one area); ``grid2`` (2×2);
``quantile`` (3×3 equal-count cells); ``full_extent`` (the grid over the full extent, outliers
included, which piles most check-ins into few cells); ``work10`` (work = 10 % of the time);
``time20`` (T = 20); ``uni`` (uni-distribution workloads).

Why the paper's phases matter here: phase 2 moves one unit at a time, and only to a participant who
is safe right after it; a participant without tasks who receives one unit in subregion j has the
one-cell profile, KL = −ln c_j, so it qualifies only where c_j ≥ e^{−θ} (0.82 at θ = 0.2, 0.67 at
θ = 0.4). ``c_max`` (the largest community share) is reported for that reason.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from research.tapp_areas import area_instance, load_areas
from scheduling.allocation import tapp, tapp_model

__all__ = ["VARIANTS", "METHODS", "THETAS", "data_shape", "run", "reductions"]

THETAS = (0.2, 0.3, 0.4)
METHODS = ("tapp", "baseline1", "baseline2", "tapp_plus", "exact")
#: variant -> (load_areas keyword arguments, area_instance keyword arguments)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "one_area": ({"areas": 1}, {}),
    "grid2": ({"grid": 2}, {}),
    "quantile": ({"cells": "quantile"}, {}),
    "full_extent": ({"margin": 0.0}, {}),
    "work10": ({}, {"work_share": 0.1}),
    "time20": ({}, {"time_threshold": 20}),
    "uni": ({}, {"distribution": "uni"}),
}


def data_shape(profiles: np.ndarray, thetas: Sequence[float] = THETAS) -> dict:
    """Participants, mean active cells, and per θ how many participants can be safe at all."""
    active = profiles > tapp_model.EPS
    floored = np.maximum(profiles, tapp_model.EPS)
    community = (floored / floored.sum(axis=1, keepdims=True)).mean(axis=0)
    best = -np.log((active * community[None, :]).sum(axis=1))
    return {"participants": len(profiles), "active_cells": float(active.sum(axis=1).mean()), "c_max": float(community.max()),
            **{f"can_be_safe@{t}": int((best <= t).sum()) for t in thetas}}


def run(checkins: str | Path, out: str | Path, variants: Sequence[str] = tuple(VARIANTS), thetas: Sequence[float] = THETAS,
        methods: Sequence[str] = METHODS, exact_limit_s: float = 30.0) -> list[dict]:
    """Every variant × area × θ × method; writes ``tapp_gap.csv`` under ``out`` and returns the rows."""
    out = Path(out)
    rows: list[dict] = []
    loaded: dict[str, list[np.ndarray]] = {}
    for v in variants:
        if v not in VARIANTS:
            raise tapp.TappError(f"variant: expected one of {', '.join(VARIANTS)}, got {v!r}")
        key = repr(sorted(VARIANTS[v][0].items()))
        if key not in loaded:
            loaded[key] = load_areas(checkins, **VARIANTS[v][0])
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, a, th) for v in variants for a in range(len(loaded[repr(sorted(VARIANTS[v][0].items()))])) for th in thetas]
    for n, (v, a, th) in enumerate(jobs):
        profiles = loaded[repr(sorted(VARIANTS[v][0].items()))][a]
        inst = area_instance(profiles, th, **VARIANTS[v][1])
        shape = data_shape(profiles, (th,))
        for m in methods:
            row = {"variant": v, "area": a, "theta": th, "method": m, "participants": shape["participants"],
                   "active_cells": round(shape["active_cells"], 3), "c_max": round(shape["c_max"], 3),
                   "can_be_safe": shape[f"can_be_safe@{th}"],
                   "work": int(inst.workload.sum())}
            try:
                r = tapp.exact(inst, time_limit_s=exact_limit_s) if m == "exact" else tapp.allocate(inst, m)
                row |= {"dangerous": r.dangerous, "allocated": r.allocated, "note": "+".join(r.proven) if m == "exact" else ""}
            except tapp.TappInfeasible as e:
                row |= {"dangerous": None, "allocated": None, "note": f"infeasible: {e}"}
            except tapp.TappError as e:
                row |= {"dangerous": None, "allocated": None, "note": f"did not finish: {e}"}
            rows.append(row)
        print(f"\r[{'#' * (20 * (n + 1) // len(jobs)):<20}] tapp-gap {n + 1}/{len(jobs)}", end="" if n + 1 < len(jobs) else "\n",
              file=sys.stderr, flush=True)
    with open(out / "tapp_gap.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def reductions(rows: list[dict]) -> list[dict]:
    """Per variant and method: mean dangerous and allocated over its (area, θ) cells, the participants
    who can be safe, and the mean share of Baseline1's / Baseline2's dangerous participants avoided
    (cells where the method or the baseline has no result, or the baseline has none dangerous, are
    left out; ``cells`` counts the cells with a result)."""
    table = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == v]
        for m in dict.fromkeys(r["method"] for r in sel):
            mine = [r for r in sel if r["method"] == m and r["dangerous"] is not None]
            entry = {"variant": v, "method": m, "cells": len(mine),
                     "dangerous": float(np.mean([r["dangerous"] for r in mine])) if mine else math.nan,
                     "allocated": float(np.mean([r["allocated"] for r in mine])) if mine else math.nan,
                     "can_be_safe": float(np.mean([r["can_be_safe"] for r in sel if r["method"] == m])),
                     "c_max": float(np.mean([r["c_max"] for r in sel if r["method"] == m]))}
            for base in ("baseline1", "baseline2"):
                shares = []
                for r in mine:
                    b = next((x for x in sel if x["method"] == base and x["area"] == r["area"] and x["theta"] == r["theta"]), None)
                    if b is not None and b["dangerous"]:
                        shares.append(1 - r["dangerous"] / b["dangerous"])
                entry[f"vs_{base}"] = float(np.mean(shares)) if shares else math.nan
            table.append(entry)
    return table
