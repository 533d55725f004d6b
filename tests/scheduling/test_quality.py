"""Quality (paper 001, CrowdPower): qualities, reputations, outliers, SensMark, site selection; the
facade, JSON I/O and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli import ecd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecd.errors import EcdError
from scheduling import quality
from scheduling.errors import QualityError
from scheduling.quality import Reports, assess, crowdpower, io

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])



# --- CrowdPower -------------------------------------------------------------------------------------


@FAST
@given(st.integers(0, 10_000), st.integers(3, 12), st.integers(2, 10))
def test_qualities_sum_to_one_and_reputations_stay_in_bounds(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.normal(20, rng.uniform(0.1, 5), (n, k))
    data[rng.random((n, k)) < 0.2] = np.nan
    data[:, 0] = rng.normal(20, 1, n)  # nobody sends nothing at all
    q, _ = crowdpower.data_quality(data)
    assert np.allclose(q.sum(axis=0), 1.0)
    rep = crowdpower.reputation(q)
    assert ((rep >= crowdpower.W) & (rep <= crowdpower.X)).all()


def test_planted_outliers_are_caught_and_bad_data_gets_low_quality() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        values = rng.normal(46, 0.5, 8)
        planted = rng.choice(8, 1 + trial % 2, replace=False)  # one faulty phone, or a biased pair
        values[planted] += rng.choice([-1, 1]) * rng.uniform(10, 15)  # the same bias for a pair
        assert set(np.flatnonzero(crowdpower.outliers(values))) == set(planted)
    # the rule's known blind spot: two symmetric outliers inflate std so that r = 2 std reaches them
    symmetric = np.r_[np.full(6, 46.0), 36.0, 56.0]
    assert not crowdpower.outliers(symmetric)[6:].all()
    data = rng.normal(46, 0.5, (8, 10))
    data[[3, 4]] += 10
    q, _ = crowdpower.data_quality(data)
    assert q[[3, 4]].mean() < q[[0, 1, 2, 5, 6, 7]].mean()
    assert crowdpower.reputation(q)[[3, 4]].max() < crowdpower.reputation(q)[[0, 1, 2, 5, 6, 7]].min()


def test_sensor_score_partials() -> None:
    ts = np.arange(0, 1, 0.01)
    acc = np.column_stack([np.zeros(100), np.zeros(100), np.full(100, 9.80665) + np.tile([0, 0.01], 50)])
    s = crowdpower.sensor_score("accelerometer", ts, acc, np.arange(0, 0.5, 0.01))
    assert s["events"] == 100 and s["gravity"] == pytest.approx(4000, rel=1e-3) and s["unique"] == 0
    assert s["total"] == pytest.approx(sum(v for k, v in s.items() if k != "total"))
    light = crowdpower.sensor_score("light", ts, np.arange(100) % 7, np.arange(0, 0.5, 0.01))
    assert light["unique"] == 7 and light["gravity"] == 0


def test_the_robust_rule_catches_symmetric_outliers() -> None:
    symmetric = np.r_[np.full(6, 46.0), 36.0, 56.0]
    assert crowdpower.outliers_mad(symmetric).tolist() == [False] * 6 + [True, True]
    assert not crowdpower.outliers(symmetric)[6:].any()  # the paper's rule misses both
    rng = np.random.default_rng(4)
    for _ in range(20):
        values = rng.normal(46, 0.5, 8)
        values[[6, 7]] = 46 - 10, 46 + 10  # the pair the paper's rule misses
        assert set(np.flatnonzero(crowdpower.outliers_mad(values))) == {6, 7}
    # on clean slots (8 normal readings) it raises far fewer false alarms than the paper's rule
    clean = rng.normal(46, 0.5, (300, 8))
    ours = np.mean([crowdpower.outliers_mad(v).any() for v in clean])
    paper = np.mean([crowdpower.outliers(v).any() for v in clean])
    assert ours < 0.25 and paper > 0.4
    with pytest.raises(crowdpower.CrowdPowerError, match="values"):
        crowdpower.outliers_mad(np.array([1.0, np.nan]))


RANGES = {"std": (0.0, crowdpower.SENSMARK_MAX), "step": (0.0, crowdpower.SENSMARK_MAX),
          "time_continuity": (0.0, crowdpower.SENSMARK_MAX), "gravity": (0.0, crowdpower.SENSMARK_MAX)}


@FAST
@given(st.integers(0, 10_000), st.sampled_from(["accelerometer", "gravity", "light", "proximity", "gyroscope"]),
       st.integers(3, 60), st.integers(1, 3), st.sampled_from([0.0, 1e-12, 1e-6, 0.01, 1.0, 50.0]),
       st.sampled_from([0.0, 1e-9, 1e-3, 0.5]), st.booleans())
def test_every_sensmark_partial_stays_in_its_documented_range(seed: int, kind: str, n: int, axes: int, spread: float,
                                                              jitter: float, quantised: bool) -> None:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(np.abs(0.01 + jitter * rng.normal(size=n)))
    values = rng.normal(rng.uniform(-20, 20), 1.0, (n, axes)) * spread + rng.uniform(-20, 20)
    if quantised:
        values = np.round(values, 1)
    init = np.cumsum(np.full(rng.integers(2, 30), rng.uniform(0.001, 0.1)))
    s = crowdpower.sensor_score(kind, ts, values, init)
    assert s["events"] == n >= 3
    for name, (lo, hi) in RANGES.items():
        assert lo <= s[name] <= hi, (name, s[name])
    if kind in ("light", "proximity"):
        assert 1 <= s["unique"] <= n
    else:
        assert s["unique"] == 0
    if kind not in ("gravity", "accelerometer") or axes < 3:
        assert s["gravity"] == 0
    assert s["total"] == pytest.approx(sum(v for k, v in s.items() if k != "total"))
    assert np.isfinite(s["total"])


def test_sensmark_is_bounded_where_it_was_not() -> None:
    ts = np.arange(0, 10, 0.01)  # a perfectly periodic clock gave 1.36e18
    s = crowdpower.sensor_score("gyroscope", ts, np.sin(ts)[:, None], np.arange(0, 1, 0.01))
    assert 0 < s["time_continuity"] <= crowdpower.SENSMARK_MAX
    far = crowdpower.sensor_score("accelerometer", ts[:50], np.column_stack([np.zeros(50), np.zeros(50), np.full(50, 40.0)]), ts[:10])
    assert far["gravity"] == 0.0  # 1 - |40 - g| / g < 0 is floored
    with pytest.raises(crowdpower.CrowdPowerError, match="timestamps: expected non-decreasing"):
        crowdpower.sensor_score("light", ts[::-1], np.ones(len(ts)), ts[:5])
    with pytest.raises(crowdpower.CrowdPowerError, match="values: expected finite"):
        crowdpower.sensor_score("light", ts[:5], np.array([1.0, np.nan, 1, 1, 1]), ts[:5])


def test_site_selection_drops_malicious_and_respects_level() -> None:
    good = crowdpower.Participant({"camera": 9, "pulse": 9})
    sites = [
        crowdpower.Site("near-bad", (0, 0), [good, crowdpower.Participant({"camera": 9, "pulse": 9}, malicious=True)]),
        crowdpower.Site("far-good", (50, 0), [good]),
        crowdpower.Site("weak", (0, 0), [crowdpower.Participant({"camera": 2})]),
    ]
    best, scores = crowdpower.select_site(sites, "heart_attack", 5.0, 10.0, (0, 0))
    assert best.site == "far-good"
    assert [s.eligible for s in scores] == [False, True, False]
    best, _ = crowdpower.select_site(sites, "heart_attack", 9.5, 10.0, (0, 0))
    assert best is None
    with pytest.raises(crowdpower.CrowdPowerError, match="event"):
        crowdpower.select_site(sites, "earthquake", 5, 10, (0, 0))
    with pytest.raises(crowdpower.CrowdPowerError, match="sites"):
        crowdpower.select_site([], "fire", 5, 10, (0, 0))


def test_crowdpower_bad_input() -> None:
    with pytest.raises(crowdpower.CrowdPowerError, match="participant 1 sent nothing"):
        crowdpower.data_quality(np.array([[1.0, 2.0], [np.nan, np.nan]]))
    with pytest.raises(crowdpower.CrowdPowerError, match="quality"):
        crowdpower.reputation(np.array([[1.5]]))




# --- the facade -----------------------------------------------------------------------------------


def scenario(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.normal(46, 0.8, (8, 10))
    d[[3, 4]] += rng.uniform(5, 15, (2, 10))
    d[rng.random(d.shape) < 0.1] = np.nan
    d[:, 0] = rng.normal(46, 0.8, 8)
    return d


@pytest.mark.parametrize("fill", ["mean", "ffill"])
def test_assess_is_crowdpower_on_the_reports(fill: str) -> None:
    data = scenario()
    a = assess(Reports(data), fill=fill)
    q, c = crowdpower.data_quality(data, fill=fill)
    filled = crowdpower.fill_missing(data, fill)
    assert a.method == "crowdpower" and list(quality.METHODS) == ["crowdpower", "crowdpower_mad"]
    assert np.array_equal(a.quality, q) and np.array_equal(a.centroid, c)
    assert np.array_equal(a.reputation, crowdpower.reputation(q))
    assert a.outliers.shape == data.shape and a.outliers.dtype == bool
    for k in range(data.shape[1]):
        assert np.array_equal(a.outliers[:, k], crowdpower.outliers(filled[:, k]))
    d = a.to_dict()
    assert set(d) == {"method", "quality", "centroid", "reputation", "outliers"}
    json.dumps(d)


def test_crowdpower_mad_shares_qualities_and_flags_by_the_median() -> None:
    data = np.random.default_rng(2).normal(46, 0.8, (8, 10))
    data[0, 5] = np.nan
    data[[1, 6], 2] = 46.0 - 12, 46.0 + 12  # a symmetric pair in slot 2
    paper, ours = assess(Reports(data)), assess(Reports(data), "crowdpower_mad")
    assert ours.method == "crowdpower_mad"
    assert np.array_equal(ours.quality, paper.quality) and np.array_equal(ours.reputation, paper.reputation)
    filled = crowdpower.fill_missing(data)
    for k in range(data.shape[1]):
        assert np.array_equal(ours.outliers[:, k], crowdpower.outliers_mad(filled[:, k]))
    assert ours.outliers[[1, 6], 2].all()


def test_reports_and_assess_bad_input() -> None:
    with pytest.raises(QualityError, match="participant 1 sent nothing"):
        Reports(np.array([[1.0, 2.0], [np.nan, np.nan]]))
    with pytest.raises(QualityError, match="values: expected a non-empty"):
        Reports(np.zeros((0, 3)))
    with pytest.raises(QualityError, match="values: infinite"):
        Reports(np.array([[1.0, np.inf]]))
    with pytest.raises(QualityError, match="values: expected a .* array of numbers"):
        Reports([["a", "b"]])
    r = Reports([[1.0, np.nan], [2.0, 3.0]])
    assert (r.n_participants, r.n_slots) == (2, 2) and r.missing.tolist() == [[False, True], [False, False]]
    with pytest.raises(QualityError, match=r"^method: expected one of crowdpower, crowdpower_mad, got 'median'$"):
        assess(r, "median")
    with pytest.raises(QualityError, match="fill: expected one of mean, ffill"):
        assess(r, fill="zero")
    with pytest.raises(QualityError, match="reports: expected a Reports"):
        assess(np.ones((2, 2)))  # type: ignore[arg-type]
    assert issubclass(crowdpower.CrowdPowerError, QualityError) and issubclass(QualityError, EcdError)


def test_choose_site_is_select_site_as_a_dataclass() -> None:
    good = quality.Participant({"camera": 9, "pulse": 9})
    sites = [quality.Site("near-bad", (0, 0), [good, quality.Participant({"camera": 9, "pulse": 9}, malicious=True)]),
             quality.Site("far-good", (50, 0), [good])]
    sel = quality.choose_site(sites, "heart_attack", 5.0, 10.0, (0, 0))
    best, scores = quality.select_site(sites, "heart_attack", 5.0, 10.0, (0, 0))
    assert isinstance(sel, quality.SiteSelection) and sel.best == best and sel.scores == scores
    assert sel.to_dict()["chosen"] == "far-good"


# --- JSON I/O ---------------------------------------------------------------------------------------


def test_sites_json_round_trip(tmp_path: Path) -> None:
    area = io.AreaOfInterest(crowdpower.random_sites(4, 20, 0.1, seed=2), (3.0, 4.0))
    path = io.write_json(tmp_path / "sites.json", io.sites_to_dict(area))
    back = io.read_sites(path)
    assert back == area
    assert quality.choose_site(back.sites, "fire", 5, 10, back.event_position) == quality.choose_site(area.sites, "fire", 5, 10, area.event_position)


def test_sites_json_defaults() -> None:
    area = io.sites_from_dict({"sites": [{"name": "A", "position": [1, 2]}]})
    assert area.event_position == (0.0, 0.0) and area.sites == [quality.Site("A", (1.0, 2.0), [])]
    p = io.sites_from_dict({"sites": [{"name": "A", "position": [1, 2], "participants": [{"sensor_quality": {"gps": 7}}]}]}).sites[0].participants[0]
    assert p == quality.Participant({"gps": 7.0})


@pytest.mark.parametrize(
    "d,needle",
    [
        ({}, "missing field 'sites'"),
        ({"sites": {"A": 1}}, "sites: expected a list of sites"),
        ({"sites": [{"position": [0, 0]}]}, "sites[0]: missing field 'name'"),
        ({"sites": [{"name": "A"}]}, "sites[0]: missing field 'position'"),
        ({"sites": [{"name": "A", "position": [0]}]}, "sites[0].position: expected [x, y]"),
        ({"sites": [{"name": "A", "position": [0, "y"]}]}, "sites[0].position: expected a finite number"),
        ({"sites": [{"name": "A", "position": [0, 0], "participants": [{}]}]}, "sites[0].participants[0]: missing field 'sensor_quality'"),
        ({"sites": [{"name": "A", "position": [0, 0], "participants": [{"sensor_quality": {}, "age": 3}]}]}, "sites[0].participants[0]: unknown field 'age'"),
        ({"sites": [{"name": "A", "position": [0, 0], "participants": [{"sensor_quality": {"gps": "good"}}]}]}, "sites[0].participants[0].sensor_quality.gps"),
        ({"sites": [{"name": "A", "position": [0, 0], "participants": [{"sensor_quality": {}, "malicious": "no"}]}]}, "participants[0].malicious: expected true or false"),
        ({"sites": [], "event_position": "here"}, "event_position: expected [x, y]"),
    ],
)
def test_sites_json_bad_field(tmp_path: Path, d: dict, needle: str) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(d))
    with pytest.raises(crowdpower.CrowdPowerError) as e:
        io.read_sites(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and needle in msg


def test_sites_json_bad_files(tmp_path: Path) -> None:
    with pytest.raises(crowdpower.CrowdPowerError, match="no such file"):
        io.read_sites(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(crowdpower.CrowdPowerError, match="not valid JSON"):
        io.read_sites(bad)
    bad.write_text('"sites"')
    with pytest.raises(crowdpower.CrowdPowerError, match="expected a JSON object, got str"):
        io.read_sites(bad)


def test_reports_json_round_trip_and_errors(tmp_path: Path) -> None:
    reports = Reports(scenario(3))
    path = io.write_json(tmp_path / "r.json", io.reports_to_dict(reports))
    assert "null" in path.read_text()
    back = io.read_reports(path)
    assert np.array_equal(back.values, reports.values, equal_nan=True)
    assert np.array_equal(assess(back).reputation, assess(reports).reputation)
    for d, needle in (({}, "missing field 'values'"), ({"values": [1, 2]}, "values: expected a list of rows"),
                      ({"values": [[1, 2], [3]]}, "values: expected rows of equal length"),
                      ({"values": [[1, None], [None, None]]}, "participant 1 sent nothing")):
        path.write_text(json.dumps(d))
        with pytest.raises(crowdpower.CrowdPowerError) as e:
            io.read_reports(path)
        assert str(e.value).startswith(f"{path}: ") and needle in str(e.value)


# --- CLI --------------------------------------------------------------------------------------------


def test_allocate_sites_cli(tmp_path: Path) -> None:
    sites = tmp_path / "s.json"
    sites.write_text(json.dumps({"event_position": [0, 0], "sites": [{"name": "A", "position": [1, 1], "participants": [{"sensor_quality": {"camera": 8, "pulse": 8}}]}]}))
    proc = ecd("allocate", "sites", "--instance", str(sites), "--event", "heart_attack", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["chosen"] == "A"
    proc = ecd("allocate", "sites", "--instance", str(sites), "--event", "heart_attack")
    assert proc.returncode == 0 and proc.stdout.startswith("chosen: A, score")
    sites.write_text(json.dumps({"sites": [{"name": "A", "participants": []}]}))
    proc = ecd("allocate", "sites", "--instance", str(sites))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "sites[0]: missing field 'position'" in proc.stderr
    proc = ecd("allocate", "sites", "--random", "8", "3", "3")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "--random" in proc.stderr
