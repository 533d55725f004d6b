"""Coverage-aware user scheduling, subband allocation and task split on a base station.

Paper 004: "Coverage-aware resource allocation for mobile crowdsensing" — Lemma 1 (optimal task
split), Theorem 2 / Algorithm 1 (subband allocation as a maximum-weight bipartite matching, solved
by the Hungarian method), Algorithm 2 (two-sided swapping of scheduled and unscheduled users), and
its Benchmarks 1–3 (§V).

Model (ALGORITHMS.md): K users in subareas a_k, N < K subbands, a task of L bits. With
w_kn = (1/f_k + 1/r_kn)^(-1), for a scheduled set S matched to subbands n(k) the optimal split is
l_k = L·w_k / Σ_S w and the latency T* = L / Σ_S w_k,n(k) (Lemma 1). Objective:
ρ·g(T*) + (1 − ρ)·(M − C(S))/M, C(S) = distinct subareas covered by S.

Reconstructions and choices (ours):

* **g(T) = 1 − exp(−T/η)** (reconstruction: the paper's normaliser is lost; η is its scaling factor).
* The channel defaults are ALGORITHMS.md's reconstruction: B = 1 MHz per subband, N0 = −174 dBm/Hz,
  path loss 128.1 + 37.6·log10(d/km) dB, log-normal shadowing σ = 8 dB, unit Rayleigh fading per
  subband, d ~ U[50, 500] m, f_k ~ U[1e5, 1e6] bit/s, p_k ~ U[10, 23] dBm, L ~ U[1, 10] Mbit,
  η = 1 s, ρ = 0.5, subareas drawn uniformly.
* Swapping starts from the N users with the largest best-subband weight, tries (scheduled,
  unscheduled) pairs in a seeded random order and takes the first swap that lowers the objective,
  until a full pass finds none (Algorithm 2 does not fix the order).
* Benchmark 1 is the same swapping with ρ = 1 (latency only); every method is *reported* with the
  instance's ρ. Benchmarks 2 and 3 use the fractional split l_k ∝ f_k and T = max_k T_k.

Speed (ours; the algorithm and its result are unchanged). The swapping scores a whole pass at
once: for each scheduled position i and each subband b, V_i(b) = the best matching of S − {s_i}
onto the other subbands (N² Hungarian calls of size N − 1); then the best matching of
S − {s_i} + {u} is max_b (w_ub + V_i(b)) for every unscheduled u, a (N, K − N, N) array, and the
coverage of every swap follows from per-subarea counts. The pass then walks the same seeded
permutation of (position, user) pairs as before and confirms each screened swap with the exact
score (Hungarian + Lemma 1), so it takes the very swap the pair-by-pair loop took. Profiled at
10,000 users × 4 subbands (cProfile): 16.6 s, of which 11.9 s recomputed the K × N weight matrix
in every one of the 65,405 scored swaps and 7.2 s ran the matchings one swap at a time.

**Ours, labelled ``exact``** — the optimum at any size, not in the paper. (1) Reduction: some
optimal solution gives each subband n a user among the N best (by w_kn) of that user's subarea —
replacing a scheduled user by an unscheduled one of the same subarea with at least its weight on
its subband keeps the coverage and cannot lower Σ w, and at most N − 1 others are scheduled. So
only M·N² (user, subband) pairs matter. (2) For each coverage level c = 1..min(N, M), a MILP
(HiGHS via ``scipy.optimize.milp``) over those pairs finds W*(c) = the largest Σ w of a matching
covering ≥ c subareas; since g is increasing, the optimum is the best of the ≤ N solutions, each
re-scored with Hungarian + Lemma 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, milp

from scheduling.errors import AllocationError

__all__ = [
    "CoverageError",
    "CoverageInstance",
    "CoverageAllocation",
    "random_instance",
    "channel_rates",
    "lemma1_split",
    "match_subbands",
    "exact",
    "allocate",
    "METHODS",
]


class CoverageError(AllocationError):
    """A malformed coverage instance; the message names the field."""


@dataclass(frozen=True)
class CoverageInstance:
    sensing_rate: np.ndarray  # (K,) f_k, bit/s
    rate: np.ndarray  # (K, N) r_kn, bit/s
    subarea: np.ndarray  # (K,) a_k in 0..M-1
    n_subareas: int  # M
    task_bits: float  # L
    rho: float = 0.5
    eta: float = 1.0  # g's scale, s

    def __post_init__(self) -> None:
        f = np.asarray(self.sensing_rate, dtype=np.float64)
        r = np.asarray(self.rate, dtype=np.float64)
        a = np.asarray(self.subarea)
        object.__setattr__(self, "sensing_rate", f)
        object.__setattr__(self, "rate", r)
        object.__setattr__(self, "subarea", a)
        if f.ndim != 1 or len(f) == 0:
            raise CoverageError("sensing_rate: the user set is empty")
        if r.ndim != 2 or r.shape[0] != len(f) or r.shape[1] == 0:
            raise CoverageError(f"rate: expected shape ({len(f)}, N >= 1), got {list(r.shape)}")
        for name, v in (("sensing_rate", f), ("rate", r)):
            if not np.isfinite(v).all() or (v <= 0).any():
                raise CoverageError(f"{name}: rates must be finite and > 0")
        k, n = r.shape
        if n >= k:
            raise CoverageError(f"rate: the paper assumes fewer subbands than users (N < K), got N = {n}, K = {k}")
        if self.n_subareas < 1:
            raise CoverageError(f"n_subareas: expected >= 1, got {self.n_subareas}")
        if a.shape != (k,) or not np.issubdtype(a.dtype, np.integer) or (a < 0).any() or (a >= self.n_subareas).any():
            raise CoverageError(f"subarea: expected {k} integers in 0..{self.n_subareas - 1}")
        if not (math.isfinite(self.task_bits) and self.task_bits > 0):
            raise CoverageError(f"task_bits: expected a finite value > 0, got {self.task_bits}")
        if not (0.0 <= self.rho <= 1.0):
            raise CoverageError(f"rho: expected a value in [0, 1], got {self.rho}")
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise CoverageError(f"eta: expected a finite value > 0, got {self.eta}")

    @property
    def n_users(self) -> int:
        return self.rate.shape[0]

    @property
    def n_subbands(self) -> int:
        return self.rate.shape[1]

    @cached_property
    def weight(self) -> np.ndarray:
        """w_kn = (1/f_k + 1/r_kn)^(-1): bits per second user k delivers on subband n (computed once,
        read-only)."""
        w = 1.0 / (1.0 / self.sensing_rate[:, None] + 1.0 / self.rate)
        w.setflags(write=False)
        return w

    def objective(self, scheduled: np.ndarray, latency: float, rho: float | None = None) -> float:
        rho = self.rho if rho is None else rho
        coverage = len(np.unique(self.subarea[scheduled]))
        return rho * (1 - math.exp(-latency / self.eta)) + (1 - rho) * (self.n_subareas - coverage) / self.n_subareas


@dataclass(frozen=True)
class CoverageAllocation:
    method: str
    scheduled: np.ndarray  # user ids
    subband: np.ndarray  # subband of each scheduled user
    bits: np.ndarray  # l_k of each scheduled user
    latency: float  # T
    coverage: int  # C(S)
    objective: float

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "scheduled": self.scheduled.tolist(),
            "subband": self.subband.tolist(),
            "bits": self.bits.tolist(),
            "latency_s": self.latency,
            "coverage": self.coverage,
            "objective": self.objective,
        }


def random_instance(k: int, n: int, m: int, seed: int, rho: float = 0.5, eta: float = 1.0) -> CoverageInstance:
    """A channel draw with ALGORITHMS.md's defaults (see the module notes)."""
    rng = np.random.default_rng(seed)
    rate = channel_rates(rng.uniform(0.05, 0.5, k), n, rng)
    return CoverageInstance(
        sensing_rate=rng.uniform(1e5, 1e6, k),
        rate=rate,
        subarea=rng.integers(0, m, k),
        n_subareas=m,
        task_bits=rng.uniform(1e6, 1e7),
        rho=rho,
        eta=eta,
    )


def channel_rates(d_km: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """r_kn (bit/s) of users at distances ``d_km`` from the base station on ``n`` subbands, with
    ALGORITHMS.md's reconstructed defaults: path loss, 8 dB shadowing, Rayleigh fading, p_k ~ U[10, 23] dBm."""
    k = len(d_km)
    bandwidth = 1e6
    noise_w = 10 ** ((-174 + 10 * math.log10(bandwidth)) / 10) / 1000
    loss_db = 128.1 + 37.6 * np.log10(d_km) + rng.normal(0, 8, k)
    fading = rng.exponential(1.0, (k, n))
    gain = 10 ** (-loss_db / 10)[:, None] * fading
    power_w = 10 ** (rng.uniform(10, 23, k) / 10) / 1000
    return np.maximum(bandwidth * np.log2(1 + power_w[:, None] * gain / noise_w), 1e-3)


def lemma1_split(weights: np.ndarray, task_bits: float) -> tuple[np.ndarray, float]:
    """Lemma 1: l_k = L·w_k / Σ w equalises every scheduled user's latency at T* = L / Σ w."""
    total = float(np.sum(weights))
    return task_bits * weights / total, task_bits / total


def match_subbands(instance: CoverageInstance, scheduled: np.ndarray) -> tuple[np.ndarray, float]:
    """Theorem 2 / Algorithm 1: the subband map maximising Σ w (Hungarian); returns (subbands, Σ w)."""
    w = instance.weight[scheduled]
    rows, cols = linear_sum_assignment(w, maximize=True)
    subband = np.empty(len(scheduled), dtype=np.int64)
    subband[rows] = cols
    return subband, float(w[rows, cols].sum())


def _optimal(instance: CoverageInstance, scheduled: np.ndarray, method: str, rho: float | None = None) -> CoverageAllocation:
    subband, total_w = match_subbands(instance, scheduled)
    bits, latency = lemma1_split(instance.weight[scheduled, subband], instance.task_bits)
    return CoverageAllocation(
        method, np.asarray(scheduled), subband, bits, latency,
        len(np.unique(instance.subarea[scheduled])), instance.objective(scheduled, latency, rho),
    )


SCREEN_TOL = 1e-9  # a swap whose vectorised score is within this of an improvement is re-scored exactly


def _swap_objectives(instance: CoverageInstance, scheduled: np.ndarray, outside: np.ndarray, rho: float) -> np.ndarray:
    """(N, len(outside)): the objective after putting ``outside[u]`` in position i of ``scheduled``,
    each with its optimal matching and split (see the module notes)."""
    w = instance.weight
    n = len(scheduled)
    ws = w[scheduled]
    rest_best = np.zeros((n, n))  # [i, b]: best matching of scheduled minus i onto subbands minus b
    for i in range(n):
        rest = np.delete(ws, i, axis=0)
        for b in range(n):
            sub = np.delete(rest, b, axis=1)
            rows, cols = linear_sum_assignment(sub, maximize=True)
            rest_best[i, b] = sub[rows, cols].sum()
    total = (w[outside][None, :, :] + rest_best[:, None, :]).max(axis=2)
    area = instance.subarea
    counts = np.bincount(area[scheduled], minlength=instance.n_subareas)
    covered = int(np.count_nonzero(counts))
    own = area[scheduled]
    cover_without = covered - (counts[own] == 1)  # coverage once position i leaves
    new = area[outside]
    left = counts[new][None, :] - (own[:, None] == new[None, :])  # users of u's subarea still scheduled
    coverage = cover_without[:, None] + (left == 0)
    m = instance.n_subareas
    return rho * (1 - np.exp(-(instance.task_bits / total) / instance.eta)) + (1 - rho) * (m - coverage) / m


def _swap(instance: CoverageInstance, seed: int, rho: float | None, method: str) -> CoverageAllocation:
    rng = np.random.default_rng(seed)
    n = instance.n_subbands
    start = np.argsort(-instance.weight.max(axis=1), kind="stable")[:n]
    best = _optimal(instance, np.sort(start), method, rho)
    weight_rho = instance.rho if rho is None else rho
    while True:
        outside = np.setdiff1d(np.arange(instance.n_users), best.scheduled)
        scores = _swap_objectives(instance, best.scheduled, outside, weight_rho).ravel()
        order = rng.permutation(len(scores))  # pair index = position * len(outside) + outside index
        screened = order[scores[order] < best.objective - 1e-12 + SCREEN_TOL]
        for idx in screened:
            i, u = divmod(int(idx), len(outside))
            trial = best.scheduled.copy()
            trial[i] = outside[u]
            candidate = _optimal(instance, trial, method, rho)
            if candidate.objective < best.objective - 1e-12:
                best = candidate
                break
        else:
            return best


def proposed(instance: CoverageInstance, seed: int = 0) -> CoverageAllocation:
    """Algorithm 2: two-sided swapping over scheduled sets, each scored with Algorithm 1 + Lemma 1."""
    return _swap(instance, seed, None, "proposed")


def benchmark1(instance: CoverageInstance, seed: int = 0) -> CoverageAllocation:
    """Latency only (ρ = 1) when choosing; reported with the instance's ρ."""
    chosen = _swap(instance, seed, 1.0, "benchmark1")
    return _optimal(instance, chosen.scheduled, "benchmark1")


def _fractional(instance: CoverageInstance, scheduled: np.ndarray, subband: np.ndarray, method: str) -> CoverageAllocation:
    f = instance.sensing_rate[scheduled]
    bits = instance.task_bits * f / f.sum()
    latency = float(np.max(bits * (1 / f + 1 / instance.rate[scheduled, subband])))
    return CoverageAllocation(method, scheduled, subband, bits, latency,
                              len(np.unique(instance.subarea[scheduled])), instance.objective(scheduled, latency))


def benchmark2(instance: CoverageInstance, seed: int = 0) -> CoverageAllocation:
    """The N users with the highest sensing rates, random subbands, l_k ∝ f_k."""
    rng = np.random.default_rng(seed)
    scheduled = np.argsort(-instance.sensing_rate, kind="stable")[: instance.n_subbands]
    return _fractional(instance, scheduled, rng.permutation(instance.n_subbands), "benchmark2")


def benchmark3(instance: CoverageInstance, seed: int = 0) -> CoverageAllocation:
    """Each subband to the (not yet scheduled) user with the best channel on it, l_k ∝ f_k."""
    taken: list[int] = []
    for n in range(instance.n_subbands):
        order = np.argsort(-instance.rate[:, n], kind="stable")
        taken.append(int(next(k for k in order if k not in taken)))
    return _fractional(instance, np.array(taken), np.arange(instance.n_subbands), "benchmark3")


BRUTE_FORCE_MAX_USERS = 12


def brute_force(instance: CoverageInstance, seed: int = 0) -> CoverageAllocation:
    """Every scheduled set (K ≤ 12), each with its optimal matching and split: the exact optimum."""
    if instance.n_users > BRUTE_FORCE_MAX_USERS:
        raise CoverageError(f"method=brute_force: K = {instance.n_users} users; at most {BRUTE_FORCE_MAX_USERS}")
    best = None
    for s in itertools.combinations(range(instance.n_users), instance.n_subbands):
        candidate = _optimal(instance, np.array(s), "brute_force")
        if best is None or candidate.objective < best.objective:
            best = candidate
    assert best is not None
    return best


def _top_pairs(instance: CoverageInstance) -> tuple[np.ndarray, np.ndarray]:
    """(users, subbands): for every subband and subarea, the N users of that subarea with the largest
    weight on that subband (ties by user id) — the pairs some optimum uses (module notes)."""
    w = instance.weight
    n, area = instance.n_subbands, instance.subarea
    users, bands = [], []
    ids = np.arange(instance.n_users)
    for b in range(n):
        order = np.lexsort((ids, -w[:, b], area))
        sorted_area = area[order]
        rank = np.arange(len(order)) - np.searchsorted(sorted_area, sorted_area, side="left")
        keep = order[rank < n]
        users.append(keep)
        bands.append(np.full(len(keep), b))
    return np.concatenate(users), np.concatenate(bands)


def exact(instance: CoverageInstance, seed: int = 0, time_limit_s: float = 60.0) -> CoverageAllocation:
    """Ours: the optimum at any size — the pair reduction and one MILP per coverage level (module
    notes). Raises a :class:`CoverageError` if HiGHS does not prove a level optimal in time."""
    users, bands = _top_pairs(instance)
    n = instance.n_subbands
    w = instance.weight[users, bands]
    scale = w.max()
    present = np.unique(instance.subarea[users])
    n_pairs, n_areas = len(users), len(present)
    uniq_users, user_row = np.unique(users, return_inverse=True)
    area_row = np.searchsorted(present, instance.subarea[users])
    cols = np.arange(n_pairs)
    a_band = sparse.csr_matrix((np.ones(n_pairs), (bands, cols)), shape=(n, n_pairs + n_areas))
    a_user = sparse.csr_matrix((np.ones(n_pairs), (user_row, cols)), shape=(len(uniq_users), n_pairs + n_areas))
    a_area = sparse.hstack([sparse.csr_matrix((-np.ones(n_pairs), (area_row, cols)), shape=(n_areas, n_pairs)),
                            sparse.identity(n_areas, format="csr")]).tocsr()
    a_cover = sparse.csr_matrix(np.r_[np.zeros(n_pairs), np.ones(n_areas)][None, :])
    c = np.r_[-w / scale, np.zeros(n_areas)]
    best: CoverageAllocation | None = None
    for level in range(1, min(n, n_areas) + 1):
        constraints = [
            LinearConstraint(a_band, 1, 1),  # every subband to one user
            LinearConstraint(a_user, 0, 1),  # every user on at most one subband
            LinearConstraint(a_area, -np.inf, 0),  # a subarea counts only if one of its users is scheduled
            LinearConstraint(a_cover, level, np.inf),
        ]
        res = milp(c, constraints=constraints, integrality=np.ones(len(c)), bounds=Bounds(0, 1),
                   options={"time_limit": time_limit_s, "mip_rel_gap": 0.0})
        if res.status != 0 or res.x is None:
            raise CoverageError(f"method=exact: HiGHS did not prove coverage level {level} optimal ({res.message})")
        scheduled = np.unique(users[res.x[:n_pairs] > 0.5])
        candidate = _optimal(instance, scheduled, "exact")
        if best is None or candidate.objective < best.objective:
            best = candidate
    assert best is not None
    return best


METHODS = {
    "proposed": proposed,
    "benchmark1": benchmark1,
    "benchmark2": benchmark2,
    "benchmark3": benchmark3,
    "brute_force": brute_force,
    "exact": exact,  # ours
}


def allocate(instance: CoverageInstance, method: str = "proposed", seed: int = 0) -> CoverageAllocation:
    if method not in METHODS:
        raise CoverageError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return METHODS[method](instance, seed=seed)
