"""TAPP instances from real check-ins (paper 002 uses Yelp users with > 30 reviews, 3x3 grids, three
cities; we use the Foursquare NYC check-in CSV, read by :mod:`research.foursquare`).

Choices (ours): participants = trajectories (``tid``) with more than 30 check-ins; the three
"cities" are the participants split into latitude terciles of their median check-in; each area's
3x3 grid spans the 2nd–98th percentiles of its participants' check-ins (points outside fall into the
edge cells); a profile is the share of a participant's check-ins per cell. :func:`load_areas` takes
the alternatives the TAPP investigation (:mod:`research.tapp_investigation`) tries: one city-wide
area, another grid size, and equal-count cells (each row and column boundary at a quantile of the
area's check-ins, so every cell holds about as many check-ins). Every participant has the
same time threshold (as in the paper's §5.1), 10 unit tasks, and the requested work is 30 % of the
area's total time, split over the cells following the community profile ("com-distribution") or
uniformly ("uni-distribution"), rounded by largest remainder; a cell never gets more work than its
active participants' time (the excess goes to the other cells in proportion).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from scheduling.allocation.tapp import TappError, TappInstance
from research.foursquare import read_checkins

__all__ = ["load_areas", "area_instance", "checkin_instance"]


def load_areas(path: str | Path, min_checkins: int = 30, areas: int = 3, grid: int = 3, cells: str = "bbox",
               margin: float = 2.0) -> list[np.ndarray]:
    """Per area, the participants' profiles (participants x grid²). ``cells``: ``bbox`` (a regular grid
    over the ``margin``-th to (100 − ``margin``)-th percentiles, 2nd–98th by default; 0 = the full
    extent) or ``quantile`` (equal-count rows and columns)."""
    if cells not in ("bbox", "quantile"):
        raise TappError(f"cells: expected 'bbox' or 'quantile', got {cells!r}")
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for c in read_checkins(path):
        points[c.tid].append((c.lat, c.lon))
    users = [np.array(p) for _, p in sorted(points.items()) if len(p) > min_checkins]
    if len(users) < areas:
        raise TappError(f"{path}: only {len(users)} participants have more than {min_checkins} check-ins")
    order = np.argsort([np.median(u[:, 0]) for u in users], kind="stable")
    result = []
    for group in np.array_split(order, areas):
        pts = np.vstack([users[i] for i in group])
        lo, hi = np.percentile(pts, margin, axis=0), np.percentile(pts, 100 - margin, axis=0)
        edges = [np.quantile(pts[:, axis], np.linspace(0, 1, grid + 1)[1:-1]) for axis in (0, 1)]
        profiles = []
        for i in group:
            if cells == "bbox":
                cell = np.clip(((users[i] - lo) / np.maximum(hi - lo, 1e-12) * grid).astype(int), 0, grid - 1)
            else:
                cell = np.stack([np.searchsorted(edges[axis], users[i][:, axis], side="right") for axis in (0, 1)], axis=1)
            counts = np.bincount(cell[:, 0] * grid + cell[:, 1], minlength=grid * grid).astype(np.float64)
            profiles.append(counts / counts.sum())
        result.append(np.array(profiles))
    return result


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    raw = shares / shares.sum() * total
    out = np.floor(raw).astype(np.int64)
    out[np.argsort(-(raw - out), kind="stable")[: total - out.sum()]] += 1
    return out


def area_instance(profiles: np.ndarray, theta: float, distribution: str = "com", time_threshold: int = 10, work_share: float = 0.3) -> TappInstance:
    if distribution not in ("com", "uni"):
        raise TappError(f"distribution: expected 'com' or 'uni', got {distribution!r}")
    n, m = profiles.shape
    total = int(work_share * n * time_threshold)
    shares = profiles.mean(axis=0) if distribution == "com" else np.ones(m)
    shares = np.where(profiles.sum(axis=0) > 0, shares, 0.0)  # no work where nobody goes
    capacity = (profiles > 1e-6).sum(axis=0) * time_threshold
    work = _largest_remainder(shares, total)
    while (work > capacity).any():  # a cell's participants cannot do more than their time: spread the rest
        over = work > capacity
        spill = int((work - capacity)[over].sum())
        work = np.minimum(work, capacity)
        room = np.where(work < capacity, shares, 0.0)
        work += np.minimum(_largest_remainder(room, spill), capacity - work)
    return TappInstance(profiles, np.full(n, time_threshold), work, np.full(n, theta))


def checkin_instance(path: str | Path, area: int, theta: float, distribution: str = "com") -> TappInstance:
    """The TAPP instance of one area (0, 1 or 2) of a check-in CSV."""
    areas = load_areas(path)
    if not 0 <= area < len(areas):
        raise TappError(f"area: expected 0..{len(areas) - 1}, got {area}")
    return area_instance(areas[area], theta, distribution)
