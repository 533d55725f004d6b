"""TAPP: task allocation with privacy preservation (paper 002, §4.3–4.5, Algorithms 1–3).

Notation (a **reconstruction** of the lost notation, ALGORITHMS.md): subregions j = 1..m;
participants i with actual profile p_i (share of i's visits per subregion, floored at ε and
renormalised; j is *active* for i when p_ij > ε), time threshold T_i and privacy threshold θ_i;
workload w_j unit tasks. An allocation x_ij ∈ ℕ satisfies Σ_i x_ij = w_j, Σ_j x_ij ≤ T_i and
x_ij = 0 where j is inactive for i. Observed profile o_i = x_i / Σ_j x_ij (floored at ε,
renormalised); community profile c = mean of the p_i; privacy disclosure D_i = KL(o_i ‖ c); an
allocated participant with D_i > θ_i is *dangerous*. Utility = 1 − n/N (n allocated of N).

Phases: (1) allocate unit tasks one by one — subregion with the least excess of available time
over remaining work first, to the active participant with the fewest active subregions, then the
most rest time; (2) for each dangerous participant (most work first) move unit tasks, always from
the subregion whose removal changes D_i least (most negative), to a safe candidate that stays safe
(allocated participants first, then the most rest time), until D_i ≤ θ_i or its work is gone —
"else break" when no candidate exists, as in the paper's evaluation; (3) merge: move all of one
participant's tasks to another that covers its subregions when time and privacy still hold, in
passes over the givers until a pass merges nothing.
Baseline1 = phase 1; Baseline2 = greedy: each subregion's work to its active participants with the
largest time threshold first, as much as each can take.

Choices (ours): ε = 1e-6; ties broken by participant index; phase 3 tries givers with the least
work first and receivers with the most rest time first.

Ours, beside the paper's methods (labelled): ``exact`` (the optimum by an MILP, ``tapp_exact``) and
``tapp_plus`` (a local search never worse than TAPP, ``tapp_plus``). The instance, the allocation and the
disclosure are in ``tapp_model``.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterator

import numpy as np

from scheduling.allocation.tapp_exact import exact
from scheduling.allocation.tapp_model import (TappAllocation, TappError, TappInfeasible, TappInstance, _check_capacity,
                                              _result, kl_disclosure)
from scheduling.allocation.tapp_phases import baseline2, phase1, phase2, phase3
from scheduling.allocation.tapp_plus import tapp_plus

__all__ = ["TappError", "TappInfeasible", "TappInstance", "TappAllocation", "allocate", "METHODS", "kl_disclosure", "exact", "tapp_plus"]


# --- methods ----------------------------------------------------------------------------------------


def tapp(inst: TappInstance, seed: int = 0) -> TappAllocation:
    return _result(inst, phase3(inst, phase2(inst, phase1(inst))), "tapp")


def baseline1(inst: TappInstance, seed: int = 0) -> TappAllocation:
    return _result(inst, phase1(inst), "baseline1")


EXHAUSTIVE_MAX = 200_000


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """Every way to write ``total`` as an ordered sum of ``parts`` non-negative integers, in
    lexicographic order (made directly: filtering all (total + 1)^parts tuples took minutes at 8 parts)."""
    if parts <= 1:
        if parts == 1 or total == 0:
            yield (total,) * parts
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def _n_compositions(total: int, parts: int) -> int:
    """How many :func:`_compositions` there are (stars and bars), counted before making any."""
    return math.comb(total + parts - 1, parts - 1) if parts else int(total == 0)


def exhaustive(inst: TappInstance, seed: int = 0) -> TappAllocation:
    """Every feasible allocation of a tiny instance; the fewest dangerous, then the fewest allocated."""
    _check_capacity(inst)
    whos = [np.flatnonzero(inst.active[:, j]) for j in range(inst.n_subregions)]
    total = math.prod(_n_compositions(int(w), len(who)) for w, who in zip(inst.workload, whos))
    if total > EXHAUSTIVE_MAX:
        raise TappError(f"method=exhaustive: {total} allocations; at most {EXHAUSTIVE_MAX} are searched")
    per_region = [(who, list(_compositions(int(w), len(who)))) for w, who in zip(inst.workload, whos)]
    best = None
    for combo in itertools.product(*[s for _, s in per_region]):
        x = np.zeros(inst.profiles.shape, dtype=np.int64)
        for j, ((who, _), split) in enumerate(zip(per_region, combo)):
            x[who, j] = split
        if (x.sum(axis=1) > inst.time_threshold).any():
            continue
        r = _result(inst, x, "exhaustive")
        if best is None or (r.dangerous, r.allocated) < (best.dangerous, best.allocated):
            best = r
    if best is None:
        raise TappInfeasible("time_threshold: no allocation meets every participant's time threshold")
    return best


METHODS = {"tapp": tapp, "baseline1": baseline1, "baseline2": baseline2, "exhaustive": exhaustive,
           "tapp_plus": tapp_plus, "exact": exact}


def allocate(inst: TappInstance, method: str = "tapp", seed: int = 0) -> TappAllocation:
    if method not in METHODS:
        raise TappError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return METHODS[method](inst, seed=seed)
