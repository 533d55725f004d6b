"""Allocation instances as JSON: readers (dict or file) and writers, for TAPP and coverage.

TAPP (paper 002)::

    {"profiles": [[share per subregion, ...] per participant],   # rows sum to 1
     "time_threshold": [unit tasks per participant],
     "workload": [unit tasks per subregion],
     "theta": 0.5 | [per participant]}                          # optional when a default is given

Coverage-aware allocation (paper 004)::

    {"sensing_rate": [bit/s per user], "rate": [[bit/s per subband] per user],
     "subarea": [subarea of each user], "n_subareas": M, "task_bits": L,
     "rho": 0.5, "eta": 1.0}                                    # optional

Errors are the problem's own (:class:`~scheduling.allocation.tapp.TappError`,
:class:`~scheduling.allocation.coverage.CoverageError`, both
:class:`~scheduling.errors.AllocationError`) with a one-line message that names the file and the
missing or bad field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from scheduling.allocation.coverage import CoverageError, CoverageInstance
from scheduling.allocation.tapp import TappError, TappInstance
from scheduling.jsonio import load_json, show, write_json

__all__ = [
    "tapp_from_dict",
    "tapp_to_dict",
    "read_tapp",
    "coverage_from_dict",
    "coverage_to_dict",
    "read_coverage",
    "write_json",
]

_MISSING = object()




def _field(d: dict, name: str, source: str, error: type[Exception], default: Any = _MISSING) -> Any:
    if name in d and d[name] is not None:
        return d[name]
    if default is not _MISSING and default is not None:
        return default
    raise error(f"{source}: missing field {name!r}")




def _array(value: Any, name: str, source: str, error: type[Exception]) -> np.ndarray:
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise error(f"{source}: {name}: expected a rectangular array of numbers, got {show(value)}") from None


def _number(value: Any, name: str, source: str, error: type[Exception], whole: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not (math.isfinite(value) and value == int(value))):
        raise error(f"{source}: {name}: expected {'a whole number' if whole else 'a number'}, got {show(value)}")
    return int(value) if whole else float(value)


def _object(d: Any, source: str, error: type[Exception]) -> dict:
    if not isinstance(d, dict):
        raise error(f"{source}: expected a JSON object, got {type(d).__name__}")
    return d


# --- TAPP ---------------------------------------------------------------------------------------------


def tapp_from_dict(d: Any, theta: float | None = None, source: str = "instance") -> TappInstance:
    """A :class:`TappInstance` from its JSON object; ``theta`` is used when the object has none."""
    d = _object(d, source, TappError)
    profiles = _array(_field(d, "profiles", source, TappError), "profiles", source, TappError)
    time_threshold = _array(_field(d, "time_threshold", source, TappError), "time_threshold", source, TappError)
    workload = _array(_field(d, "workload", source, TappError), "workload", source, TappError)
    th = _array(_field(d, "theta", source, TappError, theta), "theta", source, TappError)
    try:
        return TappInstance(profiles, time_threshold, workload, th)
    except TappError as err:  # the instance's own checks name the field; add where it came from
        raise TappError(f"{source}: {err}") from None


def tapp_to_dict(instance: TappInstance) -> dict:
    return {
        "profiles": instance.profiles.tolist(),
        "time_threshold": instance.time_threshold.tolist(),
        "workload": instance.workload.tolist(),
        "theta": instance.theta.tolist(),
    }


def read_tapp(path: str | Path, theta: float | None = None) -> TappInstance:
    return tapp_from_dict(load_json(path, TappError), theta=theta, source=str(path))


# --- coverage -----------------------------------------------------------------------------------------


def coverage_from_dict(d: Any, rho: float | None = None, eta: float | None = None, source: str = "instance") -> CoverageInstance:
    """A :class:`CoverageInstance` from its JSON object; ``rho`` and ``eta`` are used when the object
    has none (then the dataclass defaults, 0.5 and 1.0)."""
    d = _object(d, source, CoverageError)
    e = CoverageError
    sensing_rate = _array(_field(d, "sensing_rate", source, e), "sensing_rate", source, e)
    rate = _array(_field(d, "rate", source, e), "rate", source, e)
    subarea = _array(_field(d, "subarea", source, e), "subarea", source, e)
    if not np.isfinite(subarea).all() or (subarea != np.round(subarea)).any():
        raise CoverageError(f"{source}: subarea: expected whole numbers (subarea ids 0..n_subareas-1)")
    n_subareas = _number(_field(d, "n_subareas", source, e), "n_subareas", source, e, whole=True)
    task_bits = _number(_field(d, "task_bits", source, e), "task_bits", source, e)
    optional = {}
    for name, given in (("rho", rho), ("eta", eta)):
        value = given if d.get(name) is None else d[name]
        if value is not None:
            optional[name] = _number(value, name, source, e)
    try:
        return CoverageInstance(sensing_rate, rate, subarea.astype(np.int64), n_subareas, task_bits, **optional)
    except CoverageError as err:
        raise CoverageError(f"{source}: {err}") from None


def coverage_to_dict(instance: CoverageInstance) -> dict:
    return {
        "sensing_rate": instance.sensing_rate.tolist(),
        "rate": instance.rate.tolist(),
        "subarea": instance.subarea.tolist(),
        "n_subareas": int(instance.n_subareas),
        "task_bits": float(instance.task_bits),
        "rho": float(instance.rho),
        "eta": float(instance.eta),
    }


def read_coverage(path: str | Path, rho: float | None = None, eta: float | None = None) -> CoverageInstance:
    return coverage_from_dict(load_json(path, CoverageError), rho=rho, eta=eta, source=str(path))

