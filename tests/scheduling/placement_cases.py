"""Seeded placement instances shared by the placement tests: every type has a capable server, a fifth
of the (server, type) pairs are incapable.
"""

from __future__ import annotations

import numpy as np

from scheduling.placement import PlacementProblem


def random_problem(rng: np.random.Generator, m: int, n: int, k: int, coordinates: bool) -> PlacementProblem:
    ipc = rng.uniform(1, 5, (m, k))
    ipc[rng.random((m, k)) < 0.2] = np.inf
    for b in range(k):
        ipc[rng.integers(m), b] = rng.uniform(1, 5)  # every type has a capable server
    types = rng.random((n, k)) < 0.5
    types[np.arange(n), rng.integers(0, k, n)] = True
    if coordinates:
        return PlacementProblem(rng.uniform(5, 20, m), ipc, types, server_pos=rng.uniform(0, 10, (m, 2)), user_pos=rng.uniform(0, 10, (n, 2)))
    return PlacementProblem(rng.uniform(5, 20, m), ipc, types, service_cost=rng.uniform(0, 15, (n, m)))
