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
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from scheduling.errors import AllocationError

__all__ = [
    "CoverageError",
    "CoverageInstance",
    "CoverageAllocation",
    "random_instance",
    "lemma1_split",
    "match_subbands",
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

    @property
    def weight(self) -> np.ndarray:
        """w_kn = (1/f_k + 1/r_kn)^(-1): bits per second user k delivers on subband n."""
        return 1.0 / (1.0 / self.sensing_rate[:, None] + 1.0 / self.rate)

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
    bandwidth = 1e6
    noise_w = 10 ** ((-174 + 10 * math.log10(bandwidth)) / 10) / 1000
    d_km = rng.uniform(0.05, 0.5, k)
    loss_db = 128.1 + 37.6 * np.log10(d_km) + rng.normal(0, 8, k)
    fading = rng.exponential(1.0, (k, n))
    gain = 10 ** (-loss_db / 10)[:, None] * fading
    power_w = 10 ** (rng.uniform(10, 23, k) / 10) / 1000
    rate = bandwidth * np.log2(1 + power_w[:, None] * gain / noise_w)
    return CoverageInstance(
        sensing_rate=rng.uniform(1e5, 1e6, k),
        rate=np.maximum(rate, 1e-3),
        subarea=rng.integers(0, m, k),
        n_subareas=m,
        task_bits=rng.uniform(1e6, 1e7),
        rho=rho,
        eta=eta,
    )


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


def _swap(instance: CoverageInstance, seed: int, rho: float | None, method: str) -> CoverageAllocation:
    rng = np.random.default_rng(seed)
    n = instance.n_subbands
    start = np.argsort(-instance.weight.max(axis=1), kind="stable")[:n]
    best = _optimal(instance, np.sort(start), method, rho)
    improved = True
    while improved:
        improved = False
        outside = np.setdiff1d(np.arange(instance.n_users), best.scheduled)
        pairs = [(i, u) for i in range(n) for u in outside]
        for idx in rng.permutation(len(pairs)):
            i, u = pairs[idx]
            trial = best.scheduled.copy()
            trial[i] = u
            candidate = _optimal(instance, trial, method, rho)
            if candidate.objective < best.objective - 1e-12:
                best, improved = candidate, True
                break
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


METHODS = {
    "proposed": proposed,
    "benchmark1": benchmark1,
    "benchmark2": benchmark2,
    "benchmark3": benchmark3,
    "brute_force": brute_force,
}


def allocate(instance: CoverageInstance, method: str = "proposed", seed: int = 0) -> CoverageAllocation:
    if method not in METHODS:
        raise CoverageError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return METHODS[method](instance, seed=seed)
