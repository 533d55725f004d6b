"""Quality decisions: participants' reports → data qualities, reputations and outliers; and
CrowdPower's site selection (paper 001, :mod:`scheduling.quality.crowdpower`).

``assess(Reports(values), method="crowdpower")`` with ``method`` one of :data:`METHODS` returns a
:class:`QualityAssessment`: ``crowdpower`` (the paper's qualities, reputations and distance-based
outliers) or ``crowdpower_mad`` (ours: the same qualities and reputations, outliers by the median /
MAD rule, which catches symmetric outliers the paper's rule misses — see
:mod:`scheduling.quality.crowdpower`). ``choose_site(sites, event, ...)`` returns a :class:`SiteSelection`
(``select_site`` is the same as a tuple). JSON readers and writers are in
:mod:`scheduling.quality.io`. Every error is a :class:`QualityError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from scheduling.errors import QualityError
from scheduling.quality import crowdpower
from scheduling.quality.crowdpower import (
    EVENTS,
    CrowdPowerError,
    Participant,
    Site,
    SiteScore,
    SiteSelection,
    select_site,
)

__all__ = [
    "METHODS",
    "Reports",
    "QualityAssessment",
    "assess",
    "choose_site",
    "select_site",
    "Site",
    "Participant",
    "SiteScore",
    "SiteSelection",
    "EVENTS",
    "QualityError",
    "CrowdPowerError",
]

FILLS = ("mean", "ffill")


@dataclass(frozen=True)
class Reports:
    """What the participants sent: ``values[i, k]`` is participant i's reading in time slot k, NaN
    where it sent nothing. Every participant must have sent something."""

    values: np.ndarray  # (participants, slots)

    def __post_init__(self) -> None:
        try:
            v = np.array(self.values, dtype=np.float64)
        except (TypeError, ValueError):
            raise QualityError("values: expected a (participants x slots) array of numbers (NaN = missing)") from None
        if v.ndim != 2 or v.size == 0:
            raise QualityError(f"values: expected a non-empty (participants x slots) array, got shape {list(v.shape)}")
        if np.isinf(v).any():
            raise QualityError("values: infinite readings")
        silent = np.isnan(v).all(axis=1)
        if silent.any():
            raise QualityError(f"values: participant {int(np.argmax(silent))} sent nothing")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)

    @property
    def n_participants(self) -> int:
        return self.values.shape[0]

    @property
    def n_slots(self) -> int:
        return self.values.shape[1]

    @property
    def missing(self) -> np.ndarray:
        return np.isnan(self.values)


@dataclass(frozen=True)
class QualityAssessment:
    method: str
    quality: np.ndarray  # (participants, slots): each slot's column sums to 1
    centroid: np.ndarray  # (slots,): the quality-weighted truth estimate per slot
    reputation: np.ndarray  # (participants,)
    outliers: np.ndarray  # (participants, slots) bool: malicious or faulty readings

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "quality": self.quality.tolist(),
            "centroid": self.centroid.tolist(),
            "reputation": self.reputation.tolist(),
            "outliers": self.outliers.tolist(),
        }


def _crowdpower(reports: Reports, fill: str = "mean") -> QualityAssessment:
    """Algorithm 1 (qualities, per slot), Algorithm 2 (reputations) and §3.7.3 (outliers, per slot
    on the filled readings); missing readings filled with ``fill`` (``mean`` or ``ffill``)."""
    quality, centroid = crowdpower.data_quality(reports.values, fill=fill)
    filled = crowdpower.fill_missing(reports.values, fill)
    flags = np.stack([crowdpower.outliers(filled[:, k]) for k in range(filled.shape[1])], axis=1)
    return QualityAssessment("crowdpower", quality, centroid, crowdpower.reputation(quality), flags)


def _crowdpower_mad(reports: Reports, fill: str = "mean") -> QualityAssessment:
    """Ours: :func:`_crowdpower`'s qualities and reputations; outliers by
    :func:`~scheduling.quality.crowdpower.outliers_mad` per slot on the filled readings."""
    quality, centroid = crowdpower.data_quality(reports.values, fill=fill)
    filled = crowdpower.fill_missing(reports.values, fill)
    flags = np.stack([crowdpower.outliers_mad(filled[:, k]) for k in range(filled.shape[1])], axis=1)
    return QualityAssessment("crowdpower_mad", quality, centroid, crowdpower.reputation(quality), flags)


#: method name -> ``fn(reports, fill=...)``
METHODS: Mapping[str, Callable[..., QualityAssessment]] = {"crowdpower": _crowdpower, "crowdpower_mad": _crowdpower_mad}


def assess(reports: Reports, method: str = "crowdpower", fill: str = "mean") -> QualityAssessment:
    """Qualities, reputations and outliers of ``reports`` with ``method`` (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise QualityError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(reports, Reports):
        raise QualityError(f"reports: expected a Reports, got {type(reports).__name__}")
    if fill not in FILLS:
        raise QualityError(f"fill: expected one of {', '.join(FILLS)}, got {fill!r}")
    return METHODS[method](reports, fill=fill)


def choose_site(
    sites: Sequence[Site], event: str, level: float = 5.0, budget: float = 10.0, event_position: tuple[float, float] = (0.0, 0.0)
) -> SiteSelection:
    """CrowdPower site selection (§3.6): every site's score and the best eligible one (or None)."""
    best, scores = select_site(list(sites), event, level, budget, event_position)
    return SiteSelection(best, scores)
