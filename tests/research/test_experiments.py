"""The papers' experiments (research/): check-in readers, the runs, and the summary rows the CLI
prints; the ``ecd experiment`` commands' argument handling. Everything runs on small synthetic
check-in files — the real Foursquare CSV is not part of the repository."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cli import ecd

from ecd.errors import ConfigError
from research import allocation_experiments as experiments
from research import placement_experiment, tapp_investigation
from research.foursquare import read_checkins
from research.tapp_areas import checkin_instance, load_areas
from scheduling.allocation.tapp import TappError, TappInstance
from scheduling.placement import PlacementError
from scheduling.quality import Reports, assess

CATEGORIES = ("Food", "Shop & Service", "Travel & Transport", "Residence", "Nightlife Spot")


def write_checkins(path: Path, users: int = 6, per_user: int = 40, seed: int = 0) -> Path:
    """A check-in CSV in the Foursquare NYC layout (extra columns are ignored by the reader)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tid", "lat_lon", "date_time", "time", "root_type"])
        for u in range(users):
            for k in range(per_user):
                lat, lon = 40.60 + 0.05 * u + rng.normal(0, 0.01), -74.0 + rng.normal(0, 0.02)
                w.writerow([f"u{u}", f"{lat:.5f} {lon:.5f}", f"2012-04-{1 + k % 28:02d} {k % 24:02d}:00:00", "x",
                            CATEGORIES[int(rng.integers(len(CATEGORIES)))]])
    return path



# --- readers ----------------------------------------------------------------------------------------


def test_checkin_reader_and_tapp_areas(tmp_path: Path) -> None:
    path = write_checkins(tmp_path / "c.csv")
    assert len(list(read_checkins(path))) == 240
    areas = load_areas(path)
    assert [a.shape for a in areas] == [(2, 9)] * 3
    assert all(np.allclose(a.sum(axis=1), 1) for a in areas)
    inst = checkin_instance(path, 2, theta=0.7)
    assert isinstance(inst, TappInstance) and inst.n_participants == 2 and inst.theta.tolist() == [0.7, 0.7]
    assert inst.workload.sum() == int(0.3 * 2 * 10)
    with pytest.raises(TappError, match=r"^area: expected 0\.\.2, got 3$"):
        checkin_instance(path, 3, theta=0.5)
    with pytest.raises(TappError, match="distribution"):
        checkin_instance(path, 0, theta=0.5, distribution="zipf")


def test_checkin_reader_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        list(read_checkins(tmp_path / "missing.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("tid,lat_lon,date_time,root_type\nu1,40.7 -74.0,2012-04-01 10:00:00,Food\nu1,north,2012-04-01 11:00:00,Food\n")
    with pytest.raises(ConfigError, match=r"line 3: expected tid, lat_lon") as e:
        list(read_checkins(bad))
    assert "\n" not in str(e.value)
    few = write_checkins(tmp_path / "few.csv", users=2, per_user=10)
    with pytest.raises(TappError, match="only 0 participants have more than 30 check-ins"):
        load_areas(few)


# --- TAPP -------------------------------------------------------------------------------------------


def test_run_tapp_and_its_table(tmp_path: Path) -> None:
    rows = experiments.run_tapp(write_checkins(tmp_path / "c.csv"), tmp_path / "out")
    thetas = list(experiments.THETAS + experiments.EXTRA_THETAS)
    assert len(rows) == 3 * 2 * len(thetas) * len(experiments.TAPP_METHODS)
    assert (tmp_path / "out" / "tapp.csv").exists() and (tmp_path / "out" / "tapp_com.png").exists()
    table = experiments.tapp_table(rows)
    assert [(r["distribution"], r["method"], r["area"]) for r in table] == [
        (d, m, a) for d in ("com", "uni") for m in experiments.TAPP_METHODS for a in range(3)]
    for r in table:
        assert r["theta"] == thetas and len(r["dangerous"]) == len(r["utility"]) == len(thetas)
        sel = [x for x in rows if (x["distribution"], x["method"], x["area"]) == (r["distribution"], r["method"], r["area"])]
        assert r["dangerous"] == [x["dangerous"] for x in sel]


def test_run_tapp_with_the_exact_optimum(tmp_path: Path) -> None:
    rows = experiments.run_tapp(write_checkins(tmp_path / "c.csv"), tmp_path / "out", exact_limit_s=10.0)
    assert {r["method"] for r in rows} == set(experiments.TAPP_METHODS) | {"exact"}
    for r in rows:
        if r["method"] != "exact" or r["dangerous"] is None:
            continue
        others = [x for x in rows if (x["area"], x["distribution"], x["theta"]) == (r["area"], r["distribution"], r["theta"])
                  and x["dangerous"] is not None]
        assert all((r["dangerous"], r["allocated"]) <= (x["dangerous"], x["allocated"]) for x in others)
    red = experiments.tapp_reduction([r for r in rows if r["distribution"] == "com"], method="tapp_plus")
    assert set(red) == {"baseline1", "baseline2"}


def test_tapp_investigation_variants_and_reductions(tmp_path: Path) -> None:
    path = write_checkins(tmp_path / "c.csv", users=12)
    assert [a.shape for a in load_areas(path, areas=1)] == [(12, 9)]
    assert [a.shape for a in load_areas(path, grid=2)] == [(4, 4)] * 3
    quantile = load_areas(path, areas=1, cells="quantile")[0]
    assert quantile.shape == (12, 9) and np.allclose(quantile.sum(axis=1), 1)
    with pytest.raises(TappError, match="cells"):
        load_areas(path, cells="hex")
    shape = tapp_investigation.data_shape(quantile, (0.2, 5.0))
    assert shape["participants"] == 12 and shape["can_be_safe@5.0"] == 12 and 0 <= shape["can_be_safe@0.2"] <= 12
    rows = tapp_investigation.run(path, tmp_path / "gap", variants=("base", "grid2"), thetas=(0.3,), exact_limit_s=5.0)
    assert (tmp_path / "gap" / "tapp_gap.csv").exists()
    assert len(rows) == 2 * 3 * len(tapp_investigation.METHODS)
    table = tapp_investigation.reductions(rows)
    assert [(r["variant"], r["method"]) for r in table] == [(v, m) for v in ("base", "grid2") for m in tapp_investigation.METHODS]
    b1 = next(r for r in table if r["variant"] == "base" and r["method"] == "baseline1")
    assert b1["vs_baseline1"] in (0.0,) or np.isnan(b1["vs_baseline1"])
    with pytest.raises(TappError, match="variant"):
        tapp_investigation.run(path, tmp_path / "gap", variants=("hexagons",))


def test_tapp_table_keeps_infeasible_cells() -> None:
    rows = [{"area": a, "distribution": "com", "theta": th, "method": m, "dangerous": d, "utility": u}
            for a in (0, 1) for th in (0.2, 0.4) for m, d, u in (("tapp", 1, 0.5), ("baseline1", 4, 0.25), ("baseline2", None, None))]
    table = experiments.tapp_table(rows)
    assert len(table) == 6
    assert table[-1] == {"distribution": "com", "method": "baseline2", "area": 1, "theta": [0.2, 0.4],
                         "dangerous": [None, None], "utility": [None, None]}
    assert experiments.tapp_reduction(rows)["baseline1"] == pytest.approx(0.75)


# --- coverage ---------------------------------------------------------------------------------------


def test_run_coverage_and_its_means(tmp_path: Path) -> None:
    rows = experiments.run_coverage(tmp_path, draws=1, seed=3)
    means = experiments.coverage_means(rows)
    assert [(r["sweep"], r["method"]) for r in means] == [
        (s, m) for s in experiments.COVERAGE_SWEEPS for m in experiments.COVERAGE_METHODS]
    for r in means:
        assert r["x"] == sorted(p[{"users": "k", "subbands": "n", "subareas": "m", "rho": "rho"}[r["sweep"]]]
                                for p in experiments.COVERAGE_SWEEPS[r["sweep"]])
        best = next(b for b in means if b["sweep"] == r["sweep"] and b["method"] == "brute_force")
        assert all(v >= o - 1e-12 for v, o in zip(r["objective"], best["objective"]))  # brute force is the optimum
    mean, worst, count = experiments.coverage_gap(rows)
    assert count <= 18 and 1.0 - 1e-12 <= mean <= worst


def test_coverage_means_by_hand() -> None:
    rows = [{"sweep": "rho", "rho": x, "method": m, "objective": v}
            for x, m, v in ((0.5, "a", 1.0), (0.5, "a", 3.0), (0.0, "a", 5.0), (0.0, "b", 1.0), (0.5, "b", 2.0))]
    assert experiments.coverage_means(rows) == [
        {"sweep": "rho", "method": "a", "x": [0.0, 0.5], "objective": [5.0, 2.0]},
        {"sweep": "rho", "method": "b", "x": [0.0, 0.5], "objective": [1.0, 2.0]},
    ]


# --- CrowdPower -------------------------------------------------------------------------------------


def test_run_crowdpower_and_its_summaries(tmp_path: Path) -> None:
    res = experiments.run_crowdpower(tmp_path, seed=0)
    a = assess(Reports(experiments.temperature_scenario(0)))
    summary = experiments.participant_summary(res)
    assert [r["participant"] for r in summary] == list(range(1, 9))
    assert [r["reputation"] for r in summary] == a.reputation.tolist()
    assert [r["outlier_slots"] for r in summary] == a.outliers.sum(axis=1).tolist()
    chosen = experiments.chosen_sites(res["sites"])
    assert [r["sweep"] for r in chosen] == ["event"] * 6 + ["malicious"] * 4 + ["level"] * 6
    for r in chosen:
        picked = [s["site"] for s in res["sites"] if s["sweep"] == r["sweep"] and s["value"] == r["value"] and s["chosen"]]
        assert picked == ([r["site"]] if r["site"] else [])
    rows = list(csv.DictReader(open(tmp_path / "crowdpower_temperature.csv")))
    assert len(rows) == 8 and len([k for k in rows[0] if k.startswith("slot")]) == 10


def test_participant_summary_follows_the_data_shape() -> None:
    data = np.random.default_rng(1).normal(20, 1, (5, 4))
    a = assess(Reports(data))
    rows = experiments.participant_summary({"quality": a.quality, "reputation": a.reputation, "outliers": a.outliers})
    assert len(rows) == 5 and rows[4]["mean_quality"] == pytest.approx(a.quality[4].mean())


# --- placement --------------------------------------------------------------------------------------


def test_placement_instances_from_checkins(tmp_path: Path) -> None:
    data = placement_experiment.load_checkins(write_checkins(tmp_path / "c.csv", users=12, per_user=5))
    assert data.user_first.shape == (12, 2) and len(data.categories) <= len(CATEGORIES)
    problem = placement_experiment.build_instance(data, types=2, servers=5, users=4, seed=0)
    assert problem.processing_cost.shape == (5, 2) and problem.user_types.shape == (4, 2)
    with pytest.raises(PlacementError, match="users, servers"):
        placement_experiment.build_instance(data, types=2, servers=5, users=500, seed=0)


def test_placement_summary() -> None:
    rows = [{"sweep": "types", "value": v, "repeat": r, "method": m, "TC": tc + r, "avgLBSU": 1.0, "avgLBSD": 2.0 * r}
            for v in (3, 2) for r in (0, 1) for m, tc in (("otacs", 10.0 * v), ("lf", 20.0 * v))]
    (s,) = placement_experiment.summary(rows)
    assert s["sweep"] == "types" and s["values"] == [2, 3]
    assert s["TC"] == {"otacs": [20.5, 30.5], "lf": [40.5, 60.5]}
    assert s["avgLBSU"] == {"otacs": [1.0, 1.0]} and s["avgLBSD"] == {"otacs": [1.0, 1.0]}


# --- the CLI ----------------------------------------------------------------------------------------


def test_experiment_commands_need_their_data_and_fail_cleanly(tmp_path: Path) -> None:
    proc = ecd("experiment", "tapp", "--out", str(tmp_path / "o"))
    assert proc.returncode != 0 and "--checkins" in proc.stderr and "Traceback" not in proc.stderr
    proc = ecd("experiment", "placement", "--out", str(tmp_path / "o"))
    assert proc.returncode != 0 and "--data" in proc.stderr and "Traceback" not in proc.stderr
    for args in (["tapp", "--checkins"], ["placement", "--data"]):
        proc = ecd("experiment", *args, str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"))
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("ecd: error: ") and proc.stderr.count("\n") == 1 and "no such file" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing written before the data was read


def test_experiment_tapp_and_crowdpower_print_their_tables(tmp_path: Path) -> None:
    proc = ecd("experiment", "tapp", "--checkins", str(write_checkins(tmp_path / "c.csv")), "--out", str(tmp_path / "t"))
    assert proc.returncode == 0, proc.stderr
    assert "com-distribution" in proc.stdout and "uni-distribution" in proc.stdout and "baseline2 area 3" in proc.stdout
    assert "tapp_plus area 1" in proc.stdout and "tapp_plus (ours) avoids" in proc.stdout
    proc = ecd("experiment", "tapp-gap", "--checkins", str(write_checkins(tmp_path / "c.csv")), "--out", str(tmp_path / "g"),
               "--variants", "base", "--exact-limit", "5")
    assert proc.returncode == 0, proc.stderr
    assert "base         tapp_plus" in proc.stdout and (tmp_path / "g" / "tapp_gap.csv").exists()
    proc = ecd("experiment", "crowdpower", "--out", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("participant") and [line.split()[0] for line in lines[1:9]] == [str(i) for i in range(1, 9)]
    assert sum(line.startswith("chosen site by ") for line in lines) == 3
