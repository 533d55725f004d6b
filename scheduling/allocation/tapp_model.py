"""TAPP's model (paper 002, §4.3): the instance, an allocation and its privacy disclosure, shared by
the paper's algorithm (``tapp``) and ours (``tapp_exact``, ``tapp_plus``). The notation is in
``tapp``'s docstring."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduling.errors import AllocationError

EPS = 1e-6


class TappError(AllocationError):
    """A malformed TAPP instance; the message names the field."""


class TappInfeasible(TappError):
    """The workloads cannot be met; the message says which constraint."""


def _floor(v: np.ndarray) -> np.ndarray:
    v = np.maximum(v, EPS)
    return v / v.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class TappInstance:
    profiles: np.ndarray  # (N, m) actual profiles, rows sum to 1
    time_threshold: np.ndarray  # (N,) unit tasks
    workload: np.ndarray  # (m,) unit tasks
    theta: np.ndarray  # (N,) privacy thresholds

    def __post_init__(self) -> None:
        p = np.asarray(self.profiles, dtype=np.float64)
        t = np.asarray(self.time_threshold)
        w = np.asarray(self.workload)
        th = np.asarray(self.theta, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
            raise TappError("profiles: expected a non-empty (participants x subregions) array")
        if th.shape not in ((), (1,), (p.shape[0],)):
            raise TappError(f"theta: expected one value or {p.shape[0]} values, got shape {list(th.shape)}")
        th = np.broadcast_to(th, (p.shape[0],)).copy()
        if not np.isfinite(p).all() or (p < 0).any():
            raise TappError("profiles: shares must be finite and >= 0")
        sums = p.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-6):
            raise TappError(f"profiles: each participant's shares must sum to 1 (participant {int(np.argmax(np.abs(sums - 1) > 1e-6))} sums to {sums[np.argmax(np.abs(sums - 1) > 1e-6)]:.6g})")
        for name, v, n in (("time_threshold", t, p.shape[0]), ("workload", w, p.shape[1])):
            if v.shape != (n,):
                raise TappError(f"{name}: expected {n} values, got shape {list(v.shape)}")
            if not np.all(np.isfinite(v.astype(np.float64))) or (v < 0).any() or not np.all(np.equal(np.mod(v, 1), 0)):
                raise TappError(f"{name}: expected non-negative whole numbers of unit tasks")
        if not np.isfinite(th).all() or (th < 0).any():
            raise TappError("theta: privacy thresholds must be finite and >= 0")
        object.__setattr__(self, "profiles", p)
        object.__setattr__(self, "time_threshold", t.astype(np.int64))
        object.__setattr__(self, "workload", w.astype(np.int64))
        object.__setattr__(self, "theta", th)

    @property
    def n_participants(self) -> int:
        return self.profiles.shape[0]

    @property
    def n_subregions(self) -> int:
        return self.profiles.shape[1]

    @property
    def active(self) -> np.ndarray:
        return self.profiles > EPS

    @property
    def community(self) -> np.ndarray:
        return _floor(self.profiles).mean(axis=0)


def kl_disclosure(x: np.ndarray, community: np.ndarray) -> float:
    """D = KL(o ‖ c) of one participant's allocation row (0 for an empty row)."""
    total = x.sum()
    if total == 0:
        return 0.0
    o = _floor(x / total)
    return float(np.sum(o * np.log(o / community)))


@dataclass(frozen=True)
class TappAllocation:
    method: str
    x: np.ndarray  # (N, m) unit tasks
    disclosure: np.ndarray  # (N,) D_i (0 for unallocated)
    dangerous: int
    allocated: int
    utility: float
    proven: tuple[str, ...] = ()  # method=exact: the metrics proven optimal ("dangerous", "allocated")

    def to_dict(self) -> dict:
        d = {
            "method": self.method,
            "allocation": self.x.tolist(),
            "disclosure": self.disclosure.tolist(),
            "dangerous": self.dangerous,
            "allocated": self.allocated,
            "utility": self.utility,
        }
        if self.method == "exact":
            d["proven_optimal"] = list(self.proven)
        return d


def _result(inst: TappInstance, x: np.ndarray, method: str) -> TappAllocation:
    c = inst.community
    d = np.array([kl_disclosure(row, c) for row in x])
    allocated = x.sum(axis=1) > 0
    dangerous = int(np.sum(allocated & (d > inst.theta + 1e-12)))
    n = int(allocated.sum())
    return TappAllocation(method, x, d, dangerous, n, 1.0 - n / inst.n_participants)


def _check_capacity(inst: TappInstance) -> None:
    active = inst.active
    for j in range(inst.n_subregions):
        available = int(inst.time_threshold[active[:, j]].sum())
        if available < inst.workload[j]:
            raise TappInfeasible(
                f"workload: subregion {j} needs {inst.workload[j]} unit tasks but its active participants have {available} units of time"
            )
    if inst.workload.sum() > inst.time_threshold.sum():
        raise TappInfeasible("workload: the total work exceeds the participants' total time")


def _disclosures(rows: np.ndarray, community: np.ndarray) -> np.ndarray:
    """KL(o ‖ c) for many allocation rows at once (0 for empty rows)."""
    totals = rows.sum(axis=1, keepdims=True)
    o = _floor(rows / np.where(totals > 0, totals, 1))
    d = np.sum(o * np.log(o / community), axis=1)
    return np.where(totals[:, 0] > 0, d, 0.0)
