"""Allocation decisions: participants and tasks → an allocation.

Two problems, each with its own instance and result dataclasses:

* **TAPP** (paper 002, :mod:`scheduling.allocation.tapp`): :class:`TappInstance` →
  :class:`TappAllocation`; the paper's ``tapp`` (default), ``baseline1``, ``baseline2``; the
  ``exhaustive`` anchor for tiny instances; ours: ``tapp_plus`` (a heuristic) and ``exact`` (a MILP).
* **Coverage-aware** (paper 004, :mod:`scheduling.allocation.coverage`): :class:`CoverageInstance`
  → :class:`CoverageAllocation`; the paper's ``proposed`` (default), ``benchmark1``–``benchmark3``;
  ``brute_force`` (K ≤ 12); ours: ``exact`` (a pair reduction and a MILP, any size).

``allocate(instance, method=None, seed=0)`` picks the problem from the instance's type; ``method``
is one of ``METHODS[problem]`` (None = the problem's default, :data:`DEFAULT_METHOD`). JSON readers
and writers are in :mod:`scheduling.allocation.io`. Every error is an :class:`AllocationError`.
"""

from __future__ import annotations

from typing import Callable, Mapping, overload

from scheduling.allocation import coverage, tapp
from scheduling.allocation.coverage import CoverageAllocation, CoverageError, CoverageInstance
from scheduling.allocation.tapp import TappAllocation, TappError, TappInfeasible, TappInstance
from scheduling.errors import AllocationError

__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "PROBLEMS",
    "allocate",
    "problem_of",
    "AllocationError",
    "TappInstance",
    "TappAllocation",
    "TappError",
    "TappInfeasible",
    "CoverageInstance",
    "CoverageAllocation",
    "CoverageError",
]

Instance = TappInstance | CoverageInstance
Allocation = TappAllocation | CoverageAllocation

#: problem name -> its instance type
PROBLEMS: Mapping[str, type] = {"tapp": TappInstance, "coverage": CoverageInstance}
#: problem name -> method name -> ``fn(instance, seed=...)``
METHODS: Mapping[str, Mapping[str, Callable[..., Allocation]]] = {"tapp": tapp.METHODS, "coverage": coverage.METHODS}
DEFAULT_METHOD: Mapping[str, str] = {"tapp": "tapp", "coverage": "proposed"}


def problem_of(instance: Instance) -> str:
    """``"tapp"`` or ``"coverage"``: which problem an instance belongs to."""
    for name, cls in PROBLEMS.items():
        if isinstance(instance, cls):
            return name
    raise AllocationError(
        f"instance: expected one of {', '.join(cls.__name__ for cls in PROBLEMS.values())}, got {type(instance).__name__}"
    )


@overload
def allocate(instance: TappInstance, method: str | None = None, seed: int = 0) -> TappAllocation: ...
@overload
def allocate(instance: CoverageInstance, method: str | None = None, seed: int = 0) -> CoverageAllocation: ...


def allocate(instance: Instance, method: str | None = None, seed: int = 0) -> Allocation:
    """Solve ``instance`` with ``method`` (None: the problem's default). A method that does not
    belong to the instance's problem raises an :class:`AllocationError` (a :class:`TappError` or
    :class:`CoverageError`) naming ``method`` and listing the known ones."""
    problem = problem_of(instance)
    method = DEFAULT_METHOD[problem] if method is None else method
    if problem == "tapp":
        return tapp.allocate(instance, method, seed=seed)  # type: ignore[arg-type]
    return coverage.allocate(instance, method, seed=seed)  # type: ignore[arg-type]
