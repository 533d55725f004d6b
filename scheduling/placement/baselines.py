"""Paper 003's baselines (§3.1) and two labelled stand-ins.

* **LF** (low cost first): for each data type, the server with the lowest IPC_j(b).
* **DIS** (minimum average distance): for each data type, the server with the lowest average
  (star) service cost to the users carrying it.
* **random**: for each data type, a uniformly random capable server (seeded).
* **APX2 stand-in** — Luan et al.'s APX2 could not be recovered; ours is an LP-relaxation rounding:
  solve the star-cost LP, open every (server, type) with q ≥ ½, and for any carried type left
  without a server open its largest-q server. Labelled "apx2_standin".
* **CMSA stand-in** — Luan et al.'s connected multi-agent simulated annealing could not be
  recovered; ours is plain simulated annealing over the open (server, type) pairs, flipping one pair
  per step (geometric cooling, seeded), started from LF. Labelled "cmsa_standin".
"""

from __future__ import annotations

import math

import numpy as np

from scheduling.placement.exact import lp_relaxation
from scheduling.placement.heuristics import star_cost
from scheduling.placement.problem import Placement, PlacementProblem, evaluate

__all__ = ["lowest_cost_first", "min_average_distance", "random_placement", "apx2_standin", "cmsa_standin"]


def _carried(problem: PlacementProblem) -> np.ndarray:
    return np.flatnonzero(problem.user_types.any(axis=0))


def _lf_open(problem: PlacementProblem) -> np.ndarray:
    open_ = np.zeros((problem.n_servers, problem.n_types), dtype=bool)
    for b in _carried(problem):
        key = np.lexsort((problem.activation_cost, problem.processing_cost[:, b]))
        open_[key[0], b] = True
    return open_


def lowest_cost_first(problem: PlacementProblem, seed: int = 0) -> Placement:
    return evaluate(problem, _lf_open(problem), "lf")


def min_average_distance(problem: PlacementProblem, seed: int = 0) -> Placement:
    cost_us = problem.user_server_cost()
    open_ = np.zeros((problem.n_servers, problem.n_types), dtype=bool)
    for b in _carried(problem):
        mean = cost_us[problem.user_types[:, b]].mean(axis=0)
        mean[np.isinf(problem.processing_cost[:, b])] = np.inf
        open_[int(np.argmin(mean)), b] = True
    return evaluate(problem, open_, "dis")


def random_placement(problem: PlacementProblem, seed: int = 0) -> Placement:
    rng = np.random.default_rng(seed)
    open_ = np.zeros((problem.n_servers, problem.n_types), dtype=bool)
    for b in _carried(problem):
        open_[rng.choice(np.flatnonzero(np.isfinite(problem.processing_cost[:, b]))), b] = True
    return evaluate(problem, open_, "random")


def apx2_standin(problem: PlacementProblem, seed: int = 0) -> Placement:
    q = lp_relaxation(problem)
    open_ = q >= 0.5 - 1e-9
    for b in _carried(problem):
        if not open_[:, b].any():
            open_[int(np.argmax(q[:, b])), b] = True
    return evaluate(problem, open_, "apx2_standin")


def cmsa_standin(problem: PlacementProblem, seed: int = 0, steps: int = 4000, cooling: float = 0.999) -> Placement:
    rng = np.random.default_rng(seed)
    cost_us = problem.user_server_cost()
    capable = np.argwhere(np.isfinite(problem.processing_cost))
    current = _lf_open(problem)
    f = star_cost(problem, current, cost_us)
    best, best_f = current.copy(), f
    temperature = 0.05 * f
    for _ in range(steps):
        j, b = capable[rng.integers(len(capable))]
        trial = current.copy()
        trial[j, b] = not trial[j, b]
        g = star_cost(problem, trial, cost_us)  # inf when a carried type loses its last server
        if np.isfinite(g) and (g < f or rng.random() < math.exp(-(g - f) / max(temperature, 1e-12))):
            current, f = trial, g
            if f < best_f:
                best, best_f = current.copy(), f
        temperature *= cooling
    return evaluate(problem, best, "cmsa_standin")
