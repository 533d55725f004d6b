"""CrowdPower (paper 001), site selection, against values worked out by hand: SensMark's sensor scores
(§3.7.3 and the SensMark notes ``scheduling/quality/crowdpower.py`` cites), each site's score and group,
the site selected and why the others fail, and the random sites' draws. The reputations and data quality
they rest on are ``test_crowdpower_quality_values.py``'s.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduling.quality import crowdpower as cp

W, X = 0.5, 3.0  # Box 2's reputation bounds, restated here on purpose


def test_sensor_score_partials_by_hand() -> None:
    # light sensor, timestamps [0, 1, 2, 4] s, readings [1, 3, 3, 6], initialisation [0, 2]
    ts, v, init = np.array([0.0, 1.0, 2.0, 4.0]), np.array([1.0, 3.0, 3.0, 6.0]), np.array([0.0, 2.0])
    s = cp.sensor_score("light", ts, v, init)
    std = math.sqrt(12.75 / 4)  # mean 3.25; squared deviations 5.0625 + 0.0625 + 0.0625 + 7.5625
    jitter = math.sqrt(2 / 9)  # Δt = [1, 1, 2], mean 4/3
    ratio = min((4 / 3) / 2, 2 / (4 / 3))  # Δ̄_bench / Δ̄_init = 2/3
    want = {"events": 4.0, "std": 33 / std, "step": 33 / 2, "time_continuity": ratio * 33 / jitter,
            "unique": 3.0, "gravity": 0.0}
    for k, value in want.items():
        assert s[k] == pytest.approx(value, rel=1e-12), k
    assert s["total"] == pytest.approx(sum(want.values()), rel=1e-12)


def test_sensor_score_gravity_and_axes() -> None:
    ts, init = np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0])
    acc = np.column_stack([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], np.full(3, cp.G / 2)])
    s = cp.sensor_score("accelerometer", ts, acc, init)
    assert s["gravity"] == pytest.approx(0.5 * 4000)  # (1 − |g/2 − g|/g)·4000
    assert s["unique"] == 0.0
    # per axis: std of [0, 1, 0] = √2/3, of [0, 0, 2] = 2√2/3, of a constant = 0 (scores 0); averaged
    assert s["std"] == pytest.approx((33 / (math.sqrt(2) / 3) + 33 / (2 * math.sqrt(2) / 3) + 0) / 3)
    # smallest positive step per axis: 1, 2, none (0)
    assert s["step"] == pytest.approx((33 / 1 + 33 / 2 + 0) / 3)
    assert s["time_continuity"] == 4000.0  # a perfectly even clock: the jitter is floored at c/4000
    two_axes = cp.sensor_score("gravity", ts, acc[:, :2], init)
    assert two_axes["gravity"] == 0.0  # gravity needs the z axis
    assert cp.sensor_score("gravity", ts, acc, init)["gravity"] == pytest.approx(2000)
    proximity = cp.sensor_score("proximity", ts, np.array([1.0, 1.0, 4.0]), init)
    assert proximity["unique"] == 2.0


def test_sensor_score_floors_a_tiny_spread() -> None:
    ts, init = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 1.0])
    s = cp.sensor_score("gyroscope", ts, np.array([0.0, 1e-9, 0.0, 1e-9]), init)
    assert s["std"] == 4000.0 and s["step"] == 4000.0
    # a clock that stands still (all timestamps equal) scores no time continuity
    still = cp.sensor_score("gyroscope", np.zeros(4), np.array([0.0, 1.0, 0.0, 1.0]), init)
    assert still["time_continuity"] == 0.0


@pytest.mark.parametrize(
    "ts,values,init,message",
    [
        ([0.0, 1.0], [1.0, 2.0], [0.0, 1.0], "need >= 3 events"),
        ([0.0, 1.0, 2.0], [1.0, 2.0], [0.0, 1.0], "need >= 3 events"),
        ([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0], "need >= 3 events"),
        ([0.0, 1.0, 2.0], np.zeros((3, 0)), [0.0, 1.0], "need >= 3 events"),
        ([0.0, 1.0, np.inf], [1.0, 2.0, 3.0], [0.0, 1.0], "^timestamps: expected finite numbers$"),
        ([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [0.0, np.nan], "^init_timestamps: expected finite numbers$"),
        ([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [1.0, 0.0], "^init_timestamps: expected non-decreasing times$"),
    ],
)
def test_sensor_score_refuses(ts, values, init, message: str) -> None:
    with pytest.raises(cp.CrowdPowerError, match=message):
        cp.sensor_score("light", np.array(ts), np.array(values), np.array(init))


def test_site_score_by_hand() -> None:
    # one phone: camera 8, pulse 6 → quality 7 for heart_attack (camera, pulse); the site is 50 m
    # from the event; score = 1000·(7/10)·(2.4/3)·0.5 / ((1 + 50/100)·(1 + 1.5)) = 74.67
    phone = cp.Participant({"camera": 8.0, "pulse": 6.0}, reputation=2.4, battery=0.5, price=1.5)
    best, scores = cp.select_site([cp.Site("A", (30.0, 40.0), [phone])], "heart_attack", 5.0, 10.0, (0.0, 0.0))
    assert best is scores[0]
    assert (best.site, best.eligible, best.reason, best.group) == ("A", True, "", [0])
    assert best.quality == pytest.approx(7.0) and best.price == pytest.approx(1.5)
    assert best.proximity_m == pytest.approx(50.0)
    assert best.score == pytest.approx(280 / 3.75)


def test_site_group_is_the_best_phones_until_the_level() -> None:
    weak = cp.Participant({"camera": 3.0, "pulse": 3.0}, price=1.0)
    strong = cp.Participant({"camera": 9.0, "pulse": 9.0}, price=2.0)
    missing = cp.Participant({"camera": 10.0}, price=0.5)  # no pulse sensor: scores 0 for it → 5
    site = cp.Site("S", (0.0, 0.0), [weak, strong, missing])
    s = cp.score_site(site, "heart_attack", 8.0, 10.0, (0.0, 0.0))
    assert s.group == [1] and s.price == 2.0 and s.quality == 9.0  # the strong phone alone reaches 8
    s = cp.score_site(site, "heart_attack", 9.5, 10.0, (0.0, 0.0))
    # nobody reaches 9.5: the group grows to every phone (best first) and still falls short
    assert s.group == [1, 2, 0] and not s.eligible and s.score == 0.0
    assert s.quality == pytest.approx((9 + 5 + 3) / 3) and s.reason == "quality 5.67 < level 9.5"
    s = cp.score_site(site, "heart_attack", 8.0, 1.5, (0.0, 0.0))
    assert not s.eligible and s.reason == "price 2.00 > budget 1.5" and s.price == 2.0
    assert cp.score_site(site, "heart_attack", 8.0, 2.0, (0.0, 0.0)).eligible  # price = budget is fine
    many = cp.Site("M", (0.0, 0.0), [weak] * 7)
    assert len(cp.score_site(many, "heart_attack", 9.0, 100.0, (0.0, 0.0)).group) == 5  # max_group
    assert cp.score_site(many, "heart_attack", 3.0, 100.0, (0.0, 0.0)).eligible  # quality = level is fine


def test_select_site_takes_the_highest_score_and_says_why_others_fail() -> None:
    phone = cp.Participant({"gps": 8.0})
    near, far = cp.Site("near", (0.0, 0.0), [phone]), cp.Site("far", (300.0, 400.0), [phone])
    empty = cp.Site("empty", (0.0, 0.0), [])
    bad = cp.Site("bad", (0.0, 0.0), [phone, cp.Participant({"gps": 9.0}, malicious=True)])
    best, scores = cp.select_site([far, empty, near, bad], "traffic_conditions", 5.0, 5.0, (0.0, 0.0))
    assert best.site == "near"
    assert [(s.site, s.eligible, s.reason) for s in scores] == [
        ("far", True, ""), ("empty", False, "no participants"), ("near", True, ""), ("bad", False, "malicious participant")
    ]
    assert scores[0].score == pytest.approx(scores[2].score / 6)  # 500 m away: (1 + 0)/(1 + 5)
    assert scores[1].proximity_m == 0.0 and scores[0].proximity_m == pytest.approx(500.0)


@pytest.mark.parametrize("level,budget", [(-0.1, 1.0), (10.5, 1.0), (5.0, -1.0), (5.0, math.inf), (5.0, math.nan)])
def test_select_site_refuses_a_bad_level_or_budget(level: float, budget: float) -> None:
    site = cp.Site("A", (0.0, 0.0), [cp.Participant({"gps": 8.0})])
    with pytest.raises(cp.CrowdPowerError, match=r"^level, budget: expected level in \[0, 10\] and budget >= 0"):
        cp.select_site([site], "traffic_conditions", level, budget, (0.0, 0.0))


def test_select_site_accepts_the_edges_of_its_ranges() -> None:
    site = cp.Site("A", (0.0, 0.0), [cp.Participant({"gps": 10.0}, price=0.0)])
    for level, budget in ((0.0, 0.0), (10.0, 0.0)):
        best, _ = cp.select_site([site], "traffic_conditions", level, budget, (0.0, 0.0))
        assert best is not None and best.site == "A"


def test_random_sites_draws_what_its_docstring_says() -> None:
    sites = cp.random_sites(9, 3000, 0.1, seed=5, side_m=30.0)
    assert [s.name for s in sites] == [f"Site{k}" for k in range(1, 10)]
    assert [s.position for s in sites[:4]] == [(5.0, 5.0), (15.0, 5.0), (25.0, 5.0), (5.0, 15.0)]  # a 3 x 3 grid
    people = [p for s in sites for p in s.participants]
    assert len(people) == 3000 and sum(p.malicious for p in people) == 300
    assert all(s.participants for s in sites)
    for attr, lo, hi in (("reputation", W, X), ("battery", 0.2, 1.0), ("price", 0.5, 2.0)):
        values = [getattr(p, attr) for p in people]
        assert lo <= min(values) < lo + 0.01 and hi - 0.01 < max(values) <= hi, attr
    scores = [v for p in people for v in p.sensor_quality.values()]
    assert 3 <= min(scores) < 3.01 and 9.99 < max(scores) <= 10
    share = {s: np.mean([s in p.sensor_quality for p in people]) for s in ("gps", "light", "temperature", "relative_humidity")}
    assert share["gps"] == pytest.approx(0.95, abs=0.02) and share["light"] == pytest.approx(0.9, abs=0.02)
    assert share["temperature"] == pytest.approx(0.5, abs=0.03) and share["relative_humidity"] == pytest.approx(0.25, abs=0.03)
    again = cp.random_sites(9, 3000, 0.1, seed=5, side_m=30.0)
    assert again == sites  # seeded


# --- edges the first pass of the mutation gate found unpinned ---------------------------------------


def test_time_continuity_takes_the_smaller_ratio_both_ways() -> None:
    # Δ̄_bench = 2 s, Δ̄_init = 1 s: ratio = min(2, ½) = ½; the clock is perfectly even (jitter floored)
    s = cp.sensor_score("gyroscope", np.array([0.0, 2.0, 4.0]), np.array([0.0, 1.0, 0.0]), np.array([0.0, 1.0]))
    assert s["time_continuity"] == pytest.approx(0.5 * 4000)
    # an initialisation clock that stands still: no ratio, no score
    s = cp.sensor_score("gyroscope", np.array([0.0, 2.0, 4.0]), np.array([0.0, 1.0, 0.0]), np.array([1.0, 1.0]))
    assert s["time_continuity"] == 0.0


@pytest.mark.parametrize(
    "ts,values,init",
    [
        (np.zeros((3, 1)), np.ones(3), np.array([0.0, 1.0])),
        (np.arange(3.0), np.ones(3), np.zeros((2, 1))),
        (np.arange(3.0), np.ones((3, 1, 1)), np.array([0.0, 1.0])),
    ],
    ids=["2-D timestamps", "2-D init", "3-D values"],
)
def test_sensor_score_refuses_the_wrong_dimensions(ts: np.ndarray, values: np.ndarray, init: np.ndarray) -> None:
    with pytest.raises(cp.CrowdPowerError, match=r"^timestamps, values: need >= 3 events with one row of values each \(and >= 2 initialisation timestamps\)$"):
        cp.sensor_score("light", ts, values, init)


def test_ineligible_sites_score_nothing() -> None:
    empty = cp.score_site(cp.Site("E", (3.0, 4.0), []), "fire", 5.0, 10.0, (0.0, 0.0))
    assert empty == cp.SiteScore("E", False, "no participants", 0.0, [], 0.0, 5.0, 0.0)
    bad = cp.Site("B", (3.0, 4.0), [cp.Participant({"camera": 9.0}, malicious=True)])
    assert cp.score_site(bad, "fire", 5.0, 10.0, (0.0, 0.0)) == cp.SiteScore("B", False, "malicious participant", 0.0, [], 0.0, 5.0, 0.0)
    dear = cp.Site("D", (0.0, 0.0), [cp.Participant({"camera": 9.0, "pulse": 9.0}, price=3.0)])
    assert cp.score_site(dear, "heart_attack", 5.0, 2.0, (0.0, 0.0)) == cp.SiteScore("D", False, "price 3.00 > budget 2", 9.0, [0], 3.0, 0.0, 0.0)
    weak = cp.Site("W", (0.0, 0.0), [cp.Participant({"camera": 2.0, "pulse": 2.0}, price=1.0)])
    assert cp.score_site(weak, "heart_attack", 5.0, 2.0, (0.0, 0.0)) == cp.SiteScore("W", False, "quality 2.00 < level 5", 2.0, [0], 1.0, 0.0, 0.0)


def test_the_group_stops_at_the_first_phone_that_reaches_the_level() -> None:
    site = cp.Site("S", (0.0, 0.0), [cp.Participant({"camera": 6.0, "pulse": 6.0}), cp.Participant({"camera": 2.0, "pulse": 2.0})])
    s = cp.score_site(site, "heart_attack", 6.0, 10.0, (0.0, 0.0))
    assert s.group == [0] and s.eligible and s.quality == 6.0


def test_site_selection_to_dict() -> None:
    site = cp.Site("A", (0.0, 0.0), [cp.Participant({"gps": 8.0})])
    best, scores = cp.select_site([site], "traffic_conditions", 5.0, 5.0, (0.0, 0.0))
    d = cp.SiteSelection(best, scores).to_dict()
    assert d["chosen"] == "A" and d["sites"][0]["site"] == "A" and set(d) == {"chosen", "sites"}
    assert cp.SiteSelection(None, scores).to_dict()["chosen"] is None


def test_select_site_messages() -> None:
    with pytest.raises(cp.CrowdPowerError, match=rf"^event: expected one of {', '.join(cp.EVENTS)}, got 'quake'$"):
        cp.select_site([cp.Site("A", (0.0, 0.0))], "quake", 5, 10, (0, 0))
    with pytest.raises(cp.CrowdPowerError, match="^sites: the area of interest has no sites$"):
        cp.select_site([], "fire", 5, 10, (0, 0))


def test_random_sites_sensor_shares_and_default_side() -> None:
    sites = cp.random_sites(4, 4000, 0.0, seed=8)
    assert [s.position for s in sites] == [(5.0, 5.0), (15.0, 5.0), (5.0, 15.0), (15.0, 15.0)]  # a 20 m square
    people = [p for s in sites for p in s.participants]
    assert not any(p.malicious for p in people)
    want = {"gps": 0.95, "camera": 0.95, "light": 0.9, "proximity": 0.9, "temperature": 0.5,
            "ambient_temperature": 0.3, "relative_humidity": 0.25, "pulse": 0.3}
    for sensor, share in want.items():
        assert np.mean([sensor in p.sensor_quality for p in people]) == pytest.approx(share, abs=0.025), sensor
    batteries = [p.battery for p in people]
    assert 0.2 <= min(batteries) < 0.21 and 0.99 < max(batteries) <= 1.0
