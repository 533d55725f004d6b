"""CrowdPower (paper 001) against values worked out by hand from the paper's formulas.

The property tests in ``test_quality.py`` check bounds (qualities sum to 1, reputations lie in
[W, X]); a formula that is wrong but stays inside them passes those. Here every number is derived
in the comments from Algorithm 1 / Box 1 and Algorithm 2 / Box 2 that ``scheduling/quality/crowdpower.py``
cites, so a slip in any of them fails a test. SensMark and site selection (§3.7.3) are
``test_crowdpower_site_values.py``'s.
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
