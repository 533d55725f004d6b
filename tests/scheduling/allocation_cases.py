"""What the allocation tests share: hypothesis settings, a small TAPP instance, and the seeded community
(who is active where, with how much time and work) the TAPP instances are drawn from.
"""

from __future__ import annotations

import numpy as np

from hypothesis import HealthCheck, settings

from scheduling.allocation.tapp import TappInstance

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def small_tapp() -> TappInstance:
    return TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), 0.4)


def random_community(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profiles, time thresholds, workloads): ``n`` participants partly active in ``m`` subregions
    (everyone somewhere), T in 1..5, each subregion's work up to half the time of those active there."""
    raw = rng.random((n, m)) * (rng.random((n, m)) < 0.7)
    raw[np.arange(n), rng.integers(0, m, n)] += 0.5  # everyone is active somewhere
    p = raw / raw.sum(axis=1, keepdims=True)
    t = rng.integers(1, 6, n)
    cap = np.array([t[p[:, j] > 1e-6].sum() for j in range(m)])
    w = np.array([rng.integers(0, max(1, c // 2) + 1) for c in cap])
    return p, t, w
