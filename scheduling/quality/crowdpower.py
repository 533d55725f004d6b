"""CrowdPower (paper 001, §3.5–3.7, §5): sensor benchmark, site selection, data quality,
participant reputation and outlier filtering.

* **Data quality per time slot** (Eqs. 9–11, Algorithm 1 / Box 1): start q_i = 1/n; repeat until
  max |Δq| < threshold: centroid c = Σ q_i d_i / Σ q_i (the minimiser of Eq. 10 — Box 1's
  ``argmin`` picks a data point instead; we use the minimiser, as ALGORITHMS.md says);
  d_ik = (c − d_i)²; λ = Σ d_ik; q_i = (1/(d_ik/λ + ε)) / Σ_j (1/(d_jk/λ + ε)). Missing values are
  filled with the participant's own mean (or forward/backward fill).
* **Reputation** (Algorithm 2 / Box 2): r_it = (1 − q_it)²·(K − t)·(q_it − 1/n) if q_it ≤ 1/n else
  q_it²·(K − t)·(q_it − 1/n); s_i = Σ_t r_it; reputation = W + (X − W)/(1 + e^{−B(s_i − C)})^{1/f},
  W = 0.5, X = 3, B = 0.5, C = 1, f = 2 — **reconstruction**: the generalised logistic with the
  paper's constants and stated roles (Box 2's ``** 1 / 2`` is an operator-precedence slip).
  t counts from 1, so K − t weighs earlier slots more, as written.
* **Outliers** (§3.7.3): d_i is malicious/faulty when fewer than ⌈u·n⌉ *other* points lie within
  r of it; u = 0.5, r = 2·std of the slot's data. Its blind spot: r grows with the outliers, so two
  symmetric outliers at ±D among eight readings lie within r of each other's neighbours and are
  missed.
* **Ours, labelled ``crowdpower_mad``** (:func:`outliers_mad`, not in the paper): a reading is an
  outlier when its distance to the slot's median exceeds k = 3.5 robust standard deviations,
  1.4826·MAD (Iglewicz and Hoaglin's modified z-score); the median and MAD ignore up to half the
  readings, so symmetric outliers cannot hide. When MAD = 0 (more than half the readings agree
  exactly), every reading off the median is an outlier.
* **SensMark-style sensor benchmark** (§3.5): number of events; c/σ per axis averaged (c = 33);
  c / minimum step increment per axis averaged; time continuity; count of unique values (light,
  proximity); gravity accuracy (1 − |mean_z − g|/g)·4000 (gravity, accelerometer); final = sum.
  **Reconstruction** of time continuity (Eqs. 3–6 lost): ratio = min(Δ̄_bench/Δ̄_init,
  Δ̄_init/Δ̄_bench) ∈ (0, 1], score = ratio · c / σ(Δt_bench), timestamps in seconds.
  **Bounds (ours)**: c/σ, c/min step and c/σ(Δt) grow without limit as the spread goes to 0 (a
  perfectly periodic clock gave 1.36e18), so each divisor is floored at c / 4000 — the paper's
  maximum for a category (gravity's 4000) — and gravity accuracy is floored at 0. Ranges:
  events = the number of events, ≥ 3 (the only partial that grows with the run's length);
  std, step ∈ [0, 4000] (0 for an axis that never changes); time continuity ∈ [0, 4000];
  unique ∈ [1, events] for light and proximity, else 0; gravity ∈ [0, 4000] for gravity and
  accelerometer, else 0; total = their sum.
* **Site selection** (§3.6, Fig. 8) — **reconstruction** of the lost scoring: a site's phone
  quality = mean over its capable participants of the mean 0–10 score of the event's sensors (a
  missing sensor scores 0); sites holding a malicious participant, under the required quality level
  or over budget are dropped; the group is the smallest set of the site's best phones whose mean
  quality reaches the level (at most ``max_group``); final score =
  1000 · (quality/10) · mean reputation/X · mean battery / ((1 + proximity/100 m) · (1 + group price)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from scheduling.errors import QualityError

__all__ = [
    "CrowdPowerError",
    "fill_missing",
    "EVENTS",
    "data_quality",
    "slot_quality",
    "reputation",
    "outliers",
    "outliers_mad",
    "sensor_score",
    "SENSMARK_MAX",
    "Participant",
    "Site",
    "select_site",
]

W, X, B, C, F = 0.5, 3.0, 0.5, 1.0, 2.0
G = 9.80665
SENSMARK_C = 33.0
SENSMARK_MAX = 4000.0  # the largest partial score of a SensMark category (the paper's gravity maximum)
MAD_K = 3.5
QUALITY_EPS = 0.1  # Box 1's e: no value given (see the module notes)

EVENTS: dict[str, tuple[str, ...]] = {
    "traffic_conditions": ("gps",),
    "traffic_accident": ("light", "temperature", "proximity", "gps", "camera", "pulse"),
    "fire": ("temperature", "ambient_temperature", "camera", "pulse"),
    "storm": ("temperature", "light", "ambient_temperature", "relative_humidity", "camera", "pulse"),
    "heart_attack": ("camera", "pulse"),
    "volcanic_eruption": ("light", "temperature", "ambient_temperature", "proximity", "relative_humidity", "gps", "camera"),
}


class CrowdPowerError(QualityError):
    """Bad CrowdPower input; the message names the field."""


# --- data quality, reputation, outliers -----------------------------------------------------------


def fill_missing(data: np.ndarray, how: str = "mean") -> np.ndarray:
    """(n participants, K slots) with NaN for missing -> filled."""
    d = np.array(data, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise CrowdPowerError("data: expected a non-empty (participants x slots) array")
    if np.isinf(d).any():
        raise CrowdPowerError("data: infinite values")
    if np.isnan(d).all(axis=1).any():
        raise CrowdPowerError(f"data: participant {int(np.argmax(np.isnan(d).all(axis=1)))} sent nothing")
    if how == "mean":
        means = np.nanmean(d, axis=1)
        return np.where(np.isnan(d), means[:, None], d)
    if how == "ffill":
        out = d.copy()
        for row in out:
            idx = np.flatnonzero(~np.isnan(row))
            for k in range(len(row)):
                if np.isnan(row[k]):
                    before = idx[idx < k]
                    row[k] = row[before[-1]] if len(before) else row[idx[idx > k][0]]
        return out
    raise CrowdPowerError(f"fill: expected 'mean' or 'ffill', got {how!r}")


def slot_quality(values: np.ndarray, threshold: float = 1e-6, eps: float = QUALITY_EPS, max_iter: int = 1000) -> tuple[np.ndarray, float]:
    """Algorithm 1 for one slot: (qualities summing to 1, centroid)."""
    d = np.asarray(values, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0 or not np.isfinite(d).all():
        raise CrowdPowerError("values: expected a non-empty vector of finite readings")
    n = len(d)
    q = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        centroid = float(np.sum(q * d) / np.sum(q))
        dist = (centroid - d) ** 2
        lam = dist.sum()
        if lam == 0:
            return np.full(n, 1.0 / n), centroid
        inv = 1.0 / (dist / lam + eps)
        new = inv / inv.sum()
        if np.max(np.abs(new - q)) < threshold:
            q = new
            break
        q = new
    return q, float(np.sum(q * d) / np.sum(q))


def data_quality(data: np.ndarray, fill: str = "mean", threshold: float = 1e-6, eps: float = QUALITY_EPS) -> tuple[np.ndarray, np.ndarray]:
    """Qualities (n x K, each slot's column sums to 1) and the per-slot centroids (K,)."""
    d = fill_missing(data, fill)
    qs, cs = zip(*(slot_quality(d[:, k], threshold, eps) for k in range(d.shape[1])))
    return np.stack(qs, axis=1), np.array(cs)


def reputation(quality: np.ndarray) -> np.ndarray:
    """Algorithm 2: one reputation in [W, X] per participant from its (n x K) qualities."""
    q = np.asarray(quality, dtype=np.float64)
    if q.ndim != 2 or q.size == 0 or not np.isfinite(q).all() or (q < 0).any() or (q > 1).any():
        raise CrowdPowerError("quality: expected a (participants x slots) array of values in [0, 1]")
    n, k = q.shape
    t = np.arange(1, k + 1)[None, :]
    low = q <= 1.0 / n
    r = np.where(low, (1 - q) ** 2, q**2) * (k - t) * (q - 1.0 / n)
    s = r.sum(axis=1)
    return W + (X - W) / (1 + np.exp(-B * (s - C))) ** (1 / F)


def outliers(values: np.ndarray, u: float = 0.5, r_factor: float = 2.0) -> np.ndarray:
    """§3.7.3: True where fewer than ⌈u·n⌉ other points lie within r = r_factor·std of a point."""
    d = np.asarray(values, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0 or not np.isfinite(d).all():
        raise CrowdPowerError("values: expected a non-empty vector of finite readings")
    if not 0 < u <= 1:
        raise CrowdPowerError(f"u: expected a share in (0, 1], got {u}")
    n = len(d)
    r = r_factor * d.std()
    close = (np.abs(d[:, None] - d[None, :]) <= r).sum(axis=1) - 1
    return close < math.ceil(u * n)


def outliers_mad(values: np.ndarray, k: float = MAD_K) -> np.ndarray:
    """Ours: True where |d_i − median| > k · 1.4826 · MAD (every reading off the median when MAD = 0)."""
    d = np.asarray(values, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0 or not np.isfinite(d).all():
        raise CrowdPowerError("values: expected a non-empty vector of finite readings")
    if not (math.isfinite(k) and k > 0):
        raise CrowdPowerError(f"k: expected a finite value > 0, got {k}")
    off = np.abs(d - np.median(d))
    scale = 1.4826 * np.median(off)
    if scale == 0:
        return off > 0
    return off > k * scale


# --- SensMark-style sensor benchmark --------------------------------------------------------------


def _bounded_ratio(spread: np.ndarray) -> np.ndarray:
    """c / spread with the spread floored at c / SENSMARK_MAX (so ≤ SENSMARK_MAX); 0 where spread is 0."""
    spread = np.asarray(spread, dtype=np.float64)
    safe = np.where(spread > 0, np.maximum(spread, SENSMARK_C / SENSMARK_MAX), 1.0)
    return np.where(spread > 0, SENSMARK_C / safe, 0.0)


def sensor_score(kind: str, timestamps: np.ndarray, values: np.ndarray, init_timestamps: np.ndarray) -> dict[str, float]:
    """Partial scores and their sum for one sensor's benchmark run (values: events x axes;
    timestamps in seconds, non-decreasing). Each partial's range is in the module notes."""
    ts = np.asarray(timestamps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    init = np.asarray(init_timestamps, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if ts.ndim != 1 or init.ndim != 1 or v.ndim != 2 or len(ts) < 3 or len(v) != len(ts) or len(init) < 2 or v.shape[1] == 0:
        raise CrowdPowerError("timestamps, values: need >= 3 events with one row of values each (and >= 2 initialisation timestamps)")
    for name, a in (("timestamps", ts), ("values", v), ("init_timestamps", init)):
        if not np.isfinite(a).all():
            raise CrowdPowerError(f"{name}: expected finite numbers")
    for name, a in (("timestamps", ts), ("init_timestamps", init)):
        if (np.diff(a) < 0).any():
            raise CrowdPowerError(f"{name}: expected non-decreasing times")
    std = v.std(axis=0)
    steps = np.abs(np.diff(v, axis=0))
    min_step = np.array([s[s > 0].min() if (s > 0).any() else 0.0 for s in steps.T])
    dt, dt_init = np.diff(ts), np.diff(init)
    ratio = min(dt.mean() / dt_init.mean(), dt_init.mean() / dt.mean()) if dt.mean() > 0 and dt_init.mean() > 0 else 0.0
    jitter = dt.std()
    scores = {
        "events": float(len(ts)),
        "std": float(np.mean(_bounded_ratio(std))),
        "step": float(np.mean(_bounded_ratio(min_step))),
        "time_continuity": float(ratio * SENSMARK_C / max(jitter, SENSMARK_C / SENSMARK_MAX)) if dt.mean() > 0 else 0.0,
        "unique": float(len(np.unique(v[:, 0]))) if kind in ("light", "proximity") else 0.0,
        "gravity": float(max(0.0, 1 - abs(v[:, -1].mean() - G) / G) * SENSMARK_MAX) if kind in ("gravity", "accelerometer") and v.shape[1] >= 3 else 0.0,
    }
    scores["total"] = sum(scores.values())
    return scores


# --- site selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Participant:
    sensor_quality: dict[str, float]  # sensor -> 0..10 score of the phone (SensMark / DxOMark, normalised)
    reputation: float = X
    battery: float = 1.0  # residual share
    price: float = 1.0
    malicious: bool = False


@dataclass(frozen=True)
class Site:
    name: str
    position: tuple[float, float]  # metres
    participants: list[Participant] = field(default_factory=list)


@dataclass(frozen=True)
class SiteScore:
    site: str
    eligible: bool
    reason: str
    quality: float
    group: list[int]
    price: float
    proximity_m: float
    score: float


@dataclass(frozen=True)
class SiteSelection:
    best: SiteScore | None
    scores: list[SiteScore]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"chosen": self.best.site if self.best else None, "sites": [asdict(s) for s in self.scores]}


def _phone_quality(p: Participant, sensors: tuple[str, ...]) -> float:
    return float(np.mean([p.sensor_quality.get(s, 0.0) for s in sensors]))


def score_site(site: Site, event: str, level: float, budget: float, event_pos: tuple[float, float], max_group: int = 5) -> SiteScore:
    sensors = EVENTS[event]
    prox = math.dist(site.position, event_pos)
    if not site.participants:
        return SiteScore(site.name, False, "no participants", 0.0, [], 0.0, prox, 0.0)
    if any(p.malicious for p in site.participants):
        return SiteScore(site.name, False, "malicious participant", 0.0, [], 0.0, prox, 0.0)
    ranked = sorted(range(len(site.participants)), key=lambda i: -_phone_quality(site.participants[i], sensors))
    group: list[int] = []
    for i in ranked[:max_group]:
        group.append(i)
        if np.mean([_phone_quality(site.participants[j], sensors) for j in group]) >= level:
            break
    quality = float(np.mean([_phone_quality(site.participants[j], sensors) for j in group]))
    price = float(sum(site.participants[j].price for j in group))
    if quality < level:
        return SiteScore(site.name, False, f"quality {quality:.2f} < level {level:g}", quality, group, price, prox, 0.0)
    if price > budget:
        return SiteScore(site.name, False, f"price {price:.2f} > budget {budget:g}", quality, group, price, prox, 0.0)
    rep = float(np.mean([site.participants[j].reputation for j in group])) / X
    battery = float(np.mean([site.participants[j].battery for j in group]))
    score = 1000 * quality / 10 * rep * battery / ((1 + prox / 100) * (1 + price))
    return SiteScore(site.name, True, "", quality, group, price, prox, score)


def select_site(sites: list[Site], event: str, level: float, budget: float, event_pos: tuple[float, float]) -> tuple[SiteScore | None, list[SiteScore]]:
    """The best eligible site (None if none qualifies) and every site's score."""
    if event not in EVENTS:
        raise CrowdPowerError(f"event: expected one of {', '.join(EVENTS)}, got {event!r}")
    if not sites:
        raise CrowdPowerError("sites: the area of interest has no sites")
    if not (0 <= level <= 10) or not math.isfinite(budget) or budget < 0:
        raise CrowdPowerError(f"level, budget: expected level in [0, 10] and budget >= 0, got {level}, {budget}")
    scores = [score_site(s, event, level, budget, event_pos) for s in sites]
    eligible = [s for s in scores if s.eligible]
    return (max(eligible, key=lambda s: s.score) if eligible else None), scores


def random_sites(n_sites: int, participants: int, malicious_share: float, seed: int, side_m: float = 20.0) -> list[Site]:
    """A seeded area of interest: a √n x √n grid of sites over a side_m x side_m square."""
    rng = np.random.default_rng(seed)
    g = int(math.ceil(math.sqrt(n_sites)))
    sensors = sorted({s for v in EVENTS.values() for s in v})
    common = {"gps": 0.95, "camera": 0.95, "light": 0.9, "proximity": 0.9, "temperature": 0.5, "ambient_temperature": 0.3, "relative_humidity": 0.25, "pulse": 0.3}
    sites = [Site(f"Site{k + 1}", ((k % g + 0.5) * side_m / g, (k // g + 0.5) * side_m / g)) for k in range(n_sites)]
    bad = set(rng.choice(participants, size=int(round(malicious_share * participants)), replace=False).tolist())
    for p in range(participants):
        phone = {s: float(rng.uniform(3, 10)) for s in sensors if rng.random() < common[s]}
        sites[rng.integers(n_sites)].participants.append(
            Participant(phone, reputation=float(rng.uniform(W, X)), battery=float(rng.uniform(0.2, 1.0)),
                        price=float(rng.uniform(0.5, 2.0)), malicious=p in bad)
        )
    return sites
