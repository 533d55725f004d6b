"""Edge-server placement (paper 003): which edge nodes to activate for which data type.

``solve(problem, method=..., seed=...)`` with ``method`` one of :data:`METHODS`: the paper's
``otacs`` and ``ttacs``; its baselines ``lf``, ``dis``, ``random`` and ``bbo_pso`` (a
reconstruction, :mod:`scheduling.placement.baselines`); the labelled stand-ins ``apx2_standin`` and
``cmsa_standin``; ours, ``otacs_ls``; the exact anchors ``exact`` (MILP) and ``exhaustive``.
Readers (OR-Library files, our JSON) are in :mod:`scheduling.placement.io`.
"""

from __future__ import annotations

from typing import Callable

from scheduling.placement.baselines import (
    apx2_standin,
    bbo_pso,
    cmsa_standin,
    lowest_cost_first,
    min_average_distance,
    random_placement,
)
from scheduling.placement.exact import solve_exhaustive, solve_milp
from scheduling.placement.heuristics import otacs, otacs_ls, ttacs
from scheduling.placement.io import read_instance, read_orlib
from scheduling.placement.problem import InfeasibleError, Placement, PlacementError, PlacementProblem, evaluate

__all__ = ["METHODS", "solve", "PlacementProblem", "Placement", "PlacementError", "InfeasibleError", "read_orlib", "read_instance", "evaluate"]

METHODS: dict[str, Callable[..., Placement]] = {
    "otacs": otacs,
    "ttacs": ttacs,
    "otacs_ls": otacs_ls,
    "lf": lowest_cost_first,
    "dis": min_average_distance,
    "random": random_placement,
    "apx2_standin": apx2_standin,
    "cmsa_standin": cmsa_standin,
    "bbo_pso": bbo_pso,
    "exact": lambda problem, seed=0: solve_milp(problem),
    "exhaustive": lambda problem, seed=0: solve_exhaustive(problem),
}


def solve(problem: PlacementProblem, method: str = "otacs", seed: int = 0) -> Placement:
    if method not in METHODS:
        raise PlacementError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    return METHODS[method](problem, seed=seed)
