"""CrowdPower (paper 001) against values worked out by hand from the paper's formulas.

The property tests in ``test_quality.py`` check bounds (qualities sum to 1, reputations lie in
[W, X]); a formula that is wrong but stays inside them passes those. Here every number is derived
in the comments from Algorithm 1 / Box 1, Algorithm 2 / Box 2, §3.7.3 and the SensMark notes that
``scheduling/quality/crowdpower.py`` cites, so a slip in any of them fails a test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduling.quality import crowdpower as cp

W, X, B, C, F = 0.5, 3.0, 0.5, 1.0, 2.0  # Box 2's constants, restated here on purpose


def logistic(s: float) -> float:
    """Box 2: reputation = W + (X − W) / (1 + e^{−B(s − C)})^{1/f}, f = 2 (so a square root)."""
    return W + (X - W) / math.sqrt(1 + math.exp(-B * (s - C)))


# --- reputation (Algorithm 2) ----------------------------------------------------------------------


def test_reputation_equals_the_hand_computed_values() -> None:
    # n = 2 participants, K = 3 slots, 1/n = 0.5, t = 1, 2, 3 so K − t = 2, 1, 0.
    # participant 0: q = 0.8 > 0.5: 0.8²·2·(0.8 − 0.5) = 0.384
    #                q = 0.3 ≤ 0.5: (1 − 0.3)²·1·(0.3 − 0.5) = −0.098
    #                q = 0.5 ≤ 0.5: (0.5)²·0·0 = 0                         → s = 0.286
    # participant 1: q = 0.2: 0.8²·2·(−0.3) = −0.384; q = 0.7: 0.7²·1·0.2 = 0.098; 0 → s = −0.286
    q = np.array([[0.8, 0.3, 0.5], [0.2, 0.7, 0.5]])
    rep = cp.reputation(q)
    assert rep == pytest.approx([logistic(0.286), logistic(-0.286)], abs=1e-12)
    assert rep == pytest.approx([2.1040689956, 1.9674993622], abs=1e-9)


def test_reputation_weighs_earlier_slots_more_and_ignores_the_last() -> None:
    # n = 3 (1/n = 1/3), K = 2: weights K − t = 1, 0; the second slot never counts.
    # participant 0: q = 0.6 > 1/3: 0.36·1·(0.6 − 1/3) = 0.096
    # participant 1: q = 0.3 ≤ 1/3: 0.49·1·(0.3 − 1/3) = −0.49/30
    # participant 2: q = 0.1: 0.81·1·(0.1 − 1/3) = −0.189
    q = np.array([[0.6, 0.0], [0.3, 0.5], [0.1, 0.5]])
    s = [0.36 * (0.6 - 1 / 3), 0.49 * (0.3 - 1 / 3), 0.81 * (0.1 - 1 / 3)]
    assert cp.reputation(q) == pytest.approx([logistic(v) for v in s], abs=1e-12)
    # the same qualities in the other order count differently: participant 0's first slot is now
    # q = 0 ≤ 1/3: (1 − 0)²·1·(0 − 1/3) = −1/3
    swapped = cp.reputation(q[:, ::-1])
    assert swapped[0] == pytest.approx(logistic(-1 / 3), abs=1e-12)


def test_reputation_reaches_its_bounds() -> None:
    # a participant always at quality 1 among 2, over many slots: s → +∞, reputation → X;
    # always at 0: (1 − 0)²·(K − t)·(0 − 1/2) → −∞, reputation → W
    k = 60  # s = ±0.5·Σ(K − t) = ±885: far out on both sides, and e^{442} still a float
    q = np.vstack([np.ones(k), np.zeros(k)])
    rep = cp.reputation(q)
    assert rep[0] == pytest.approx(X, abs=1e-9) and rep[1] == pytest.approx(W, abs=1e-9)
    # s = C exactly: the logistic's midpoint, W + (X − W)/√2
    assert logistic(C) == pytest.approx(W + (X - W) / math.sqrt(2))


@pytest.mark.parametrize("bad", [np.array([[1.5]]), np.array([[-0.1]]), np.array([0.5, 0.5]), np.zeros((0, 2)),
                                 np.array([[np.nan]])])
def test_reputation_refuses_what_is_not_a_quality_matrix(bad: np.ndarray) -> None:
    with pytest.raises(cp.CrowdPowerError, match=r"^quality: expected a \(participants x slots\) array of values in \[0, 1\]$"):
        cp.reputation(bad)


def test_reputation_accepts_the_edges_of_0_1() -> None:
    assert cp.reputation(np.array([[0.0], [1.0]])).shape == (2,)


# --- data quality (Algorithm 1 / Box 1) ------------------------------------------------------------


def fixed_point_gap(values: np.ndarray, q: np.ndarray, eps: float = cp.QUALITY_EPS) -> float:
    """How far ``q`` is from Eqs. 9–11's fixed point: c = Σq·d/Σq, d_k = (c − d)², λ = Σ d_k,
    q = (1/(d_k/λ + ε)) / Σ(1/(d_k/λ + ε))."""
    c = float(np.sum(q * values) / np.sum(q))
    dist = (c - values) ** 2
    inv = 1 / (dist / dist.sum() + eps)
    return float(np.max(np.abs(inv / inv.sum() - q)))


@pytest.mark.parametrize("values", [[0.0, 0.0, 3.0], [10.0, 10.0, 10.0, 16.0], [46.1, 45.8, 46.3, 52.0, 46.0]])
def test_slot_quality_is_the_fixed_point_of_the_papers_equations(values: list[float]) -> None:
    d = np.array(values)
    q, centroid = cp.slot_quality(d)
    assert q.sum() == pytest.approx(1.0, abs=1e-12)
    assert fixed_point_gap(d, q) < 1e-6
    assert centroid == pytest.approx(float(np.sum(q * d)), abs=1e-12)
    assert np.argmin(q) == int(np.argmax(np.abs(d - np.median(d))))  # the reading furthest off counts least


def test_slot_quality_known_values() -> None:
    # [0, 0, 3]: the fixed point puts q = (a, a, 1 − 2a); these digits satisfy Eqs. 9–11 to 1e-7
    q, c = cp.slot_quality(np.array([0.0, 0.0, 3.0]))
    assert q == pytest.approx([0.4777275, 0.4777275, 0.0445450], abs=1e-6)
    assert c == pytest.approx(3 * q[2], abs=1e-12)


def test_slot_quality_epsilon_flattens_the_qualities() -> None:
    d = np.array([0.0, 0.0, 3.0])
    sharp, _ = cp.slot_quality(d, eps=0.01)
    flat, _ = cp.slot_quality(d, eps=10.0)
    assert fixed_point_gap(d, sharp, 0.01) < 1e-6 and fixed_point_gap(d, flat, 10.0) < 1e-6
    assert sharp[2] < cp.slot_quality(d)[0][2] < flat[2] < 1 / 3


def test_slot_quality_threshold_controls_convergence() -> None:
    d = np.array([46.1, 45.8, 46.3, 52.0, 46.0])
    loose, _ = cp.slot_quality(d, threshold=0.5)  # stops after the first update
    tight, _ = cp.slot_quality(d)
    one_step_c = d.mean()
    dist = (one_step_c - d) ** 2
    inv = 1 / (dist / dist.sum() + cp.QUALITY_EPS)
    assert loose == pytest.approx(inv / inv.sum(), abs=1e-12)  # q after exactly one update of 1/n
    assert fixed_point_gap(d, tight) < 1e-6 < fixed_point_gap(d, loose)


def test_slot_quality_of_identical_readings_is_uniform() -> None:
    q, c = cp.slot_quality(np.full(4, 7.5))
    assert q.tolist() == [0.25] * 4 and c == 7.5


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, np.inf], [np.nan, 1.0]])
def test_slot_quality_refuses_bad_readings(bad) -> None:
    with pytest.raises(cp.CrowdPowerError, match="^values: expected a non-empty vector of finite readings$"):
        cp.slot_quality(np.array(bad, dtype=float))


def test_data_quality_scores_each_slot_of_the_filled_data() -> None:
    data = np.array([[1.0, np.nan, 5.0], [1.2, 2.0, 5.0], [0.9, 2.2, 9.0]])
    q, c = cp.data_quality(data)
    filled = cp.fill_missing(data)
    assert q.shape == (3, 3) and c.shape == (3,)
    for k in range(3):
        qk, ck = cp.slot_quality(filled[:, k])
        assert np.array_equal(q[:, k], qk) and c[k] == ck
    assert np.allclose(q.sum(axis=0), 1.0)
    q2, _ = cp.data_quality(data, eps=1.0)
    assert not np.allclose(q2, q)  # eps reaches Algorithm 1
    q3, _ = cp.data_quality(data, threshold=0.5)
    assert not np.allclose(q3, q)  # and so does the threshold


def test_fill_missing_by_mean_and_by_neighbours() -> None:
    data = np.array([[1.0, np.nan, 3.0, np.nan], [np.nan, 5.0, np.nan, 7.0]])
    assert cp.fill_missing(data).tolist() == [[1.0, 2.0, 3.0, 2.0], [6.0, 5.0, 6.0, 7.0]]
    # ffill: the last reading before; a leading gap takes the first reading after
    assert cp.fill_missing(data, "ffill").tolist() == [[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 5.0, 7.0]]
    original = data.copy()
    cp.fill_missing(data, "ffill")
    assert np.array_equal(data, original, equal_nan=True)  # the caller's array is left alone


@pytest.mark.parametrize(
    "data,how,message",
    [
        (np.array([1.0, 2.0]), "mean", r"^data: expected a non-empty \(participants x slots\) array$"),
        (np.zeros((0, 2)), "mean", r"^data: expected a non-empty"),
        (np.array([[1.0, np.inf]]), "mean", r"^data: infinite values$"),
        (np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, np.nan]]), "mean", r"^data: participant 2 sent nothing$"),
        (np.array([[1.0, 2.0]]), "zero", r"^fill: expected 'mean' or 'ffill', got 'zero'$"),
    ],
)
def test_fill_missing_refuses(data: np.ndarray, how: str, message: str) -> None:
    with pytest.raises(cp.CrowdPowerError, match=message):
        cp.fill_missing(data, how)


# --- outliers (§3.7.3) and ours (MAD) ----------------------------------------------------------------


def test_outliers_counts_other_points_within_two_std() -> None:
    # [0, 0, 0, 10]: std = √(25 − 2.5²) = 4.33, r = 8.66; ⌈0.5·4⌉ = 2 others needed.
    # each 0 has the two other 0s within r (2, not an outlier); 10 has none
    assert cp.outliers(np.array([0.0, 0.0, 0.0, 10.0])).tolist() == [False, False, False, True]
    # [0, 1]: std = 0.5, r = 1 exactly: the other point lies *on* r, which counts; ⌈0.5·2⌉ = 1
    assert cp.outliers(np.array([0.0, 1.0])).tolist() == [False, False]
    # the same with a narrower radius: nobody is within r
    assert cp.outliers(np.array([0.0, 1.0]), r_factor=1.0).tolist() == [True, True]
    # u = 1: every other point must lie within r
    assert cp.outliers(np.array([0.0, 0.0, 0.0, 10.0]), u=1.0).tolist() == [True, True, True, True]
    assert cp.outliers(np.array([5.0])).tolist() == [True]  # alone: ⌈0.5⌉ = 1 other needed


@pytest.mark.parametrize("u", [0.0, -0.5, 1.5])
def test_outliers_refuses_a_share_outside_0_1(u: float) -> None:
    with pytest.raises(cp.CrowdPowerError, match=rf"^u: expected a share in \(0, 1\], got {u}$"):
        cp.outliers(np.array([1.0, 2.0]), u=u)


def test_outliers_refuses_bad_readings() -> None:
    with pytest.raises(cp.CrowdPowerError, match="^values: expected a non-empty vector of finite readings$"):
        cp.outliers(np.array([]))


def test_outliers_mad_uses_the_modified_z_score() -> None:
    # [1, 2, 3, 4, 100]: median 3, |d − 3| = [2, 1, 0, 1, 97], MAD = 1, robust std 1.4826,
    # threshold 3.5·1.4826 = 5.19: only 100 is off
    d = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    assert cp.outliers_mad(d).tolist() == [False, False, False, False, True]
    # k = 1: threshold 1.4826, so 1 (off by 2) is out, 2 and 4 (off by 1) are in
    assert cp.outliers_mad(d, k=1.0).tolist() == [True, False, False, False, True]
    # MAD = 0 (more than half agree exactly): every reading off the median
    assert cp.outliers_mad(np.array([5.0, 5.0, 5.0, 7.0])).tolist() == [False, False, False, True]


@pytest.mark.parametrize("k", [0.0, -1.0, math.inf, math.nan])
def test_outliers_mad_refuses_a_bad_k(k: float) -> None:
    with pytest.raises(cp.CrowdPowerError, match="^k: expected a finite value > 0"):
        cp.outliers_mad(np.array([1.0, 2.0]), k=k)


# --- SensMark -------------------------------------------------------------------------------------


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


# --- site selection -------------------------------------------------------------------------------


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


def test_data_quality_fills_as_asked() -> None:
    data = np.array([[1.0, np.nan, 9.0], [1.0, 2.0, 3.0], [1.5, 2.5, 3.5]])
    q_mean, _ = cp.data_quality(data)
    q_ffill, _ = cp.data_quality(data, fill="ffill")
    assert np.array_equal(q_ffill[:, 1], cp.slot_quality(np.array([1.0, 2.0, 2.5]))[0])  # 1 carried forward
    assert np.array_equal(q_mean[:, 1], cp.slot_quality(np.array([5.0, 2.0, 2.5]))[0])  # the row's mean, 5
    assert not np.allclose(q_mean[:, 1], q_ffill[:, 1])


def test_outliers_mad_edges() -> None:
    assert cp.outliers_mad(np.array([5.0])).tolist() == [False]  # one reading: nothing to compare with
    assert cp.outliers_mad(np.array([5.0, 5.0, 5.0, 5.5])).tolist() == [False, False, False, True]  # MAD 0, off by ½
    with pytest.raises(cp.CrowdPowerError, match="^values: expected a non-empty vector of finite readings$"):
        cp.outliers_mad(np.ones((2, 2)))
    with pytest.raises(cp.CrowdPowerError, match="^values: expected a non-empty vector of finite readings$"):
        cp.outliers_mad(np.array([]))


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
