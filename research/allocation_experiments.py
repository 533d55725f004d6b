"""``ecd experiment tapp|coverage|crowdpower``: the papers' experiments, CSV + PNG, fixed seeds.

Each ``run_*`` writes its CSVs and figures and returns its raw rows; the ``*_table`` /
``*_summary`` functions reduce those rows to the plain rows the CLI prints.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from scheduling.allocation import coverage, tapp
from scheduling.quality import Reports, assess, crowdpower
from research.tapp_areas import area_instance, load_areas

THETAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
EXTRA_THETAS = (1.0, 1.2, 1.5)  # beyond the paper's range: where our data becomes feasible
TAPP_METHODS = ("tapp", "baseline1", "baseline2", "tapp_plus")  # the paper's, its baselines, ours
COVERAGE_METHODS = ("proposed", "benchmark1", "benchmark2", "benchmark3", "brute_force")
COVERAGE_SWEEPS = {
    "users": [dict(k=k, n=4, m=4, rho=0.5) for k in (6, 8, 10, 12)],
    "subbands": [dict(k=12, n=n, m=4, rho=0.5) for n in (2, 3, 4, 5, 6)],
    "subareas": [dict(k=12, n=4, m=m, rho=0.5) for m in (2, 4, 6, 8)],
    "rho": [dict(k=12, n=4, m=4, rho=r) for r in (0.0, 0.25, 0.5, 0.75, 1.0)],
}


def _progress(label: str, done: int, total: int) -> None:
    print(f"\r[{'#' * (20 * done // total):<20}] {label} {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _write(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _plt():
    from research.plots import _pyplot

    return _pyplot()


# --- TAPP (paper 002, Figs. 2-5) --------------------------------------------------------------------


def run_tapp(checkins: str | Path, out: str | Path, exact_limit_s: float = 0.0) -> list[dict]:
    """Every area x workload distribution x θ x method on the Foursquare NYC check-in CSV; with
    ``exact_limit_s`` > 0 also the exact optimum (ours), given that many seconds per instance —
    recorded as "did not finish" where HiGHS cannot prove the fewest dangerous in time."""
    areas = load_areas(checkins)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    thetas = THETAS + EXTRA_THETAS
    methods = TAPP_METHODS + (("exact",) if exact_limit_s > 0 else ())
    jobs = [(a, dist, th) for a in range(len(areas)) for dist in ("com", "uni") for th in thetas]
    for n, (a, dist, th) in enumerate(jobs):
        inst = area_instance(areas[a], th, dist)
        for m in methods:
            try:
                r = tapp.exact(inst, time_limit_s=exact_limit_s) if m == "exact" else tapp.allocate(inst, m)
                row = {"dangerous": r.dangerous, "allocated": r.allocated, "utility": round(r.utility, 4), "infeasible": ""}
            except tapp.TappInfeasible as e:  # the method's own allocation loop fails (Algorithm 1, line 19)
                row = {"dangerous": None, "allocated": None, "utility": None, "infeasible": str(e)}
            except tapp.TappError as e:  # exact: no proof in time
                row = {"dangerous": None, "allocated": None, "utility": None, "infeasible": f"did not finish: {e}"}
            rows.append({"area": a, "distribution": dist, "theta": th, "method": m, "participants": inst.n_participants, **row})
        _progress("tapp", n + 1, len(jobs))
    _write(rows, out / "tapp.csv")
    plt = _plt()
    for dist in ("com", "uni"):
        fig, axes = plt.subplots(2, len(areas), figsize=(4 * len(areas), 6.5), squeeze=False)
        for a in range(len(areas)):
            for m in methods:
                sel = [r for r in rows if r["area"] == a and r["distribution"] == dist and r["method"] == m and r["dangerous"] is not None]
                axes[0][a].plot([r["theta"] for r in sel], [r["dangerous"] for r in sel], "o-", ms=3, label=m)
                axes[1][a].plot([r["theta"] for r in sel], [r["utility"] for r in sel], "o-", ms=3, label=m)
            axes[0][a].set_title(f"area {a + 1}: dangerous participants", fontsize=9)
            axes[1][a].set_title(f"area {a + 1}: utility 1 - n/N", fontsize=9)
            axes[1][a].set_xlabel("privacy threshold θ")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"TAPP on Foursquare NYC, {dist}-distribution workloads (paper 002 Figs. 2-5)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"tapp_{dist}.png", dpi=100)
        plt.close(fig)
    return rows


def tapp_table(rows: list[dict]) -> list[dict]:
    """One row per (distribution, method, area): the θ values and, per θ, the dangerous participants
    and utility (None where the method's allocation loop found the instance infeasible)."""
    table = []
    for dist in dict.fromkeys(r["distribution"] for r in rows):
        for m in dict.fromkeys(r["method"] for r in rows):
            for a in sorted({r["area"] for r in rows}):
                sel = [r for r in rows if r["method"] == m and r["distribution"] == dist and r["area"] == a]
                if sel:
                    table.append({"distribution": dist, "method": m, "area": a, "theta": [r["theta"] for r in sel],
                                  "dangerous": [r["dangerous"] for r in sel], "utility": [r["utility"] for r in sel]})
    return table


def tapp_reduction(rows: list[dict], low: float = 0.2, high: float = 0.4, method: str = "tapp") -> dict[str, float]:
    """Mean share of dangerous participants ``method`` avoids against each baseline, θ in [low, high]."""
    out = {}
    for base in ("baseline1", "baseline2"):
        shares = []
        for r in rows:
            if r["method"] == method and low <= r["theta"] <= high and r["dangerous"] is not None:
                b = next(x for x in rows if x["method"] == base and x["area"] == r["area"] and x["distribution"] == r["distribution"] and x["theta"] == r["theta"])
                if b["dangerous"]:
                    shares.append(1 - r["dangerous"] / b["dangerous"])
        out[base] = float(np.mean(shares)) if shares else float("nan")
    return out


# --- coverage (paper 004, Figs. 1-4) ----------------------------------------------------------------


def run_coverage(out: str | Path, draws: int = 100, seed: int = 0) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    points = [(sweep, p) for sweep, ps in COVERAGE_SWEEPS.items() for p in ps]
    for n, (sweep, p) in enumerate(points):
        for d in range(draws):
            inst = coverage.random_instance(p["k"], p["n"], p["m"], seed=seed + d, rho=p["rho"])
            for m in COVERAGE_METHODS:
                a = coverage.allocate(inst, m, seed=seed + d)
                rows.append({"sweep": sweep, "users": p["k"], "subbands": p["n"], "subareas": p["m"], "rho": p["rho"],
                             "draw": d, "method": m, "objective": a.objective, "latency_s": a.latency, "coverage": a.coverage})
        _progress("coverage", n + 1, len(points))
    _write(rows, out / "coverage.csv")
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    means = coverage_means(rows)
    for ax, sweep in zip(axes, COVERAGE_SWEEPS):
        for row in (r for r in means if r["sweep"] == sweep):
            ax.plot(row["x"], row["objective"], "o-" if row["method"] != "brute_force" else "k--", ms=3, label=row["method"])
        ax.set_xlabel(sweep)
        ax.set_ylabel("objective (mean of draws)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"coverage-aware allocation (paper 004 Figs. 1-4), {draws} channel draws per point", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=100)
    plt.close(fig)
    return rows


def coverage_means(rows: list[dict]) -> list[dict]:
    """One row per (sweep, method): the swept values ``x`` and the mean objective over the draws at each."""
    table = []
    for sweep in dict.fromkeys(r["sweep"] for r in rows):
        xs = sorted({r[sweep] for r in rows if r["sweep"] == sweep})
        for m in dict.fromkeys(r["method"] for r in rows):
            objective = [float(np.mean([r["objective"] for r in rows if r["sweep"] == sweep and r["method"] == m and r[sweep] == x])) for x in xs]
            table.append({"sweep": sweep, "method": m, "x": xs, "objective": objective})
    return table


def coverage_gap(rows: list[dict], method: str = "proposed") -> tuple[float, float, int]:
    """(mean, max) ratio of ``method``'s objective to brute force over every draw, and the count."""
    best = {(r["sweep"], r["users"], r["subbands"], r["subareas"], r["rho"], r["draw"]): r["objective"] for r in rows if r["method"] == "brute_force"}
    ratios = [r["objective"] / best[k] for r in rows if r["method"] == method
              for k in [(r["sweep"], r["users"], r["subbands"], r["subareas"], r["rho"], r["draw"])] if best[k] > 0]
    return float(np.mean(ratios)), float(np.max(ratios)), len(ratios)


# --- CrowdPower (paper 001, Figs. 20-22, 24-26) -----------------------------------------------------


def temperature_scenario(seed: int = 0) -> np.ndarray:
    """§5.2: 8 participants x 10 slots around 46°; four participants off by up to ±15° (two biased,
    two erratic); some readings missing (NaN). Table 7's values are not in the text: seeded stand-ins."""
    rng = np.random.default_rng(seed)
    d = rng.normal(46, 0.8, (8, 10))
    d[[3, 4]] += rng.uniform(5, 15, (2, 10))  # participants 4 and 5: high
    d[[1, 6]] += rng.uniform(-15, 15, (2, 10))  # participants 2 and 7: erratic
    d[rng.random(d.shape) < 0.1] = np.nan
    return d


def run_crowdpower(out: str | Path, seed: int = 0) -> dict:
    """Quality, reputation and outliers of the temperature scenario (through
    :func:`scheduling.quality.assess`) and the site-selection sweeps."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = temperature_scenario(seed)
    assessment = assess(Reports(data))
    q, rep, flags = assessment.quality, assessment.reputation, assessment.outliers
    n, slots = data.shape
    _write([{"participant": i + 1, **{f"slot{k + 1}": (None if np.isnan(data[i, k]) else round(float(data[i, k]), 2)) for k in range(slots)},
             "mean_quality": round(float(q[i].mean()), 4), "reputation": round(float(rep[i]), 4), "outlier_slots": int(flags[i].sum())}
            for i in range(n)], out / "crowdpower_temperature.csv")
    rows = []
    for event in crowdpower.EVENTS:
        sites = crowdpower.random_sites(16, 120, 0.02, seed)
        best, scores = crowdpower.select_site(sites, event, 5.0, 10.0, (10.0, 10.0))
        rows += [{"sweep": "event", "value": event, "site": s.site, "score": round(s.score, 2), "eligible": s.eligible, "chosen": best is not None and s.site == best.site} for s in scores]
    for share in (0.02, 0.05, 0.10, 0.25):
        sites = crowdpower.random_sites(4, 60, share, seed)
        best, scores = crowdpower.select_site(sites, "traffic_conditions", 5.0, 10.0, (10.0, 10.0))
        rows += [{"sweep": "malicious", "value": share, "site": s.site, "score": round(s.score, 2), "eligible": s.eligible, "chosen": best is not None and s.site == best.site} for s in scores]
    for level in (3, 4, 5, 6, 7, 8):
        sites = crowdpower.random_sites(9, 90, 0.0, seed)
        best, scores = crowdpower.select_site(sites, "fire", level, 10.0, (10.0, 10.0))
        rows += [{"sweep": "level", "value": level, "site": s.site, "score": round(s.score, 2), "eligible": s.eligible, "chosen": best is not None and s.site == best.site} for s in scores]
    _write(rows, out / "crowdpower_sites.csv")
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].bar(range(1, n + 1), q.mean(axis=1))
    axes[0].set_title("Fig. 24 analogue: mean data quality", fontsize=9)
    axes[1].bar(range(1, n + 1), rep)
    axes[1].axhline(crowdpower.W, color="grey", lw=0.8)
    axes[1].axhline(crowdpower.X, color="grey", lw=0.8)
    axes[1].set_title("Fig. 25 analogue: reputation in [W, X]", fontsize=9)
    axes[2].imshow(flags, cmap="Reds", aspect="auto")
    axes[2].set_title("Fig. 26 analogue: outliers per slot", fontsize=9)
    axes[2].set_yticks(range(n), [str(i + 1) for i in range(n)])
    for ax in axes[:2]:
        ax.set_xlabel("participant")
    axes[2].set_xlabel("time slot")
    fig.tight_layout()
    fig.savefig(out / "crowdpower_quality.png", dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for ax, sweep in zip(axes, ("event", "malicious", "level")):
        values = list(dict.fromkeys(r["value"] for r in rows if r["sweep"] == sweep))
        for v in values:
            sel = [r for r in rows if r["sweep"] == sweep and r["value"] == v]
            ax.plot(range(1, len(sel) + 1), [r["score"] for r in sel], "o-", ms=3, label=str(v))
        ax.set_xlabel("site")
        ax.set_ylabel("final selection score (0 = dropped)")
        ax.legend(fontsize=6)
    axes[0].set_title("Fig. 20 analogue: by event type", fontsize=9)
    axes[1].set_title("Fig. 21 analogue: by share of malicious participants", fontsize=9)
    axes[2].set_title("Fig. 22 analogue: by required quality level", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "crowdpower_sites.png", dpi=100)
    plt.close(fig)
    return {"quality": q, "reputation": rep, "outliers": flags, "sites": rows}


def participant_summary(result: dict) -> list[dict]:
    """One row per participant of :func:`run_crowdpower`'s result: mean quality, reputation and the
    number of slots where its reading was an outlier."""
    q, rep, flags = result["quality"], result["reputation"], result["outliers"]
    return [{"participant": i + 1, "mean_quality": float(q[i].mean()), "reputation": float(rep[i]), "outlier_slots": int(flags[i].sum())}
            for i in range(len(rep))]


def chosen_sites(site_rows: list[dict]) -> list[dict]:
    """One row per (sweep, value) of the site-selection sweeps, in run order: the chosen site (None
    when no site qualifies)."""
    chosen: dict[tuple, str | None] = {}
    for r in site_rows:
        key = (r["sweep"], r["value"])
        chosen.setdefault(key, None)
        if r["chosen"]:
            chosen[key] = r["site"]
    return [{"sweep": sweep, "value": value, "site": site} for (sweep, value), site in chosen.items()]


RUNNERS: dict[str, Callable] = {"tapp": run_tapp, "coverage": run_coverage, "crowdpower": run_crowdpower}
