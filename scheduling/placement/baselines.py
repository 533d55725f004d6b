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
* **BBO_PSO** (§3.1, citing Meng et al. [47]): "a heuristic algorithm is used to select a mobile
  edge server which maximizes the total cost fitness for each data type" — that sentence is all the
  paper says. Kept: one server per carried data type (as LF, DIS and random), chosen by
  biogeography-based optimisation hybridised with particle swarm optimisation, fitness = 1 / total
  cost (star service costs, as in the colonies). **Reconstructed** (ours; [47]'s operators are not in
  the paper): a habitat is a vector of positions in [0, 1), one per carried type, decoded to the
  ⌊position·|capable servers|⌋-th capable server of that type; 20 habitats, 50 generations, seeded;
  per generation, habitats ranked by cost get immigration λ = 1 − rank/n and emigration μ = rank'/n
  (rank' = 1 for the worst … n for the best), each type of each habitat immigrates with probability
  λ from a habitat picked by roulette on μ (Simon's BBO); mutation: each position redrawn with
  probability 0.05; then a PSO step x += v, v = 0.7·v + 1.5·r1·(personal best − x) + 1.5·r2·(global
  best − x), positions clipped to [0, 1); the two best habitats are kept unchanged (elitism).
  Labelled "bbo_pso".
"""

from __future__ import annotations

import math

import numpy as np

from scheduling.placement.exact import lp_relaxation
from scheduling.placement.heuristics import star_cost
from scheduling.placement.problem import Placement, PlacementProblem, evaluate

__all__ = ["lowest_cost_first", "min_average_distance", "random_placement", "apx2_standin", "cmsa_standin", "bbo_pso"]


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


def single_server_cost(problem: PlacementProblem, types: np.ndarray, chosen: np.ndarray, cost_us: np.ndarray) -> float:
    """:func:`~scheduling.placement.heuristics.star_cost` when data type ``types[t]`` goes to server
    ``chosen[t]`` alone (vectorised over users: each user pays each server it uses once)."""
    carriers = problem.user_types[:, types]
    cost = float(problem.processing_cost[chosen, types].sum())
    for j in np.unique(chosen):
        cost += float(problem.activation_cost[j]) + float(cost_us[carriers[:, chosen == j].any(axis=1), j].sum())
    return cost


def bbo_pso(problem: PlacementProblem, seed: int = 0, habitats: int = 20, generations: int = 50, mutation: float = 0.05,
            inertia: float = 0.7, c1: float = 1.5, c2: float = 1.5, elites: int = 2) -> Placement:
    """BBO hybridised with PSO choosing one server per carried type (module notes: reconstruction)."""
    rng = np.random.default_rng(seed)
    cost_us = problem.user_server_cost()
    types = _carried(problem)
    capable = [np.flatnonzero(np.isfinite(problem.processing_cost[:, b])) for b in types]

    def decode(position: np.ndarray) -> np.ndarray:
        open_ = np.zeros((problem.n_servers, problem.n_types), dtype=bool)
        for t, (b, servers) in enumerate(zip(types, capable)):
            open_[servers[min(int(position[t] * len(servers)), len(servers) - 1)], b] = True
        return open_

    def fitness(pop: np.ndarray) -> np.ndarray:
        return np.array([single_server_cost(problem, types, np.array([servers[min(int(h[t] * len(servers)), len(servers) - 1)]
                                                                      for t, servers in enumerate(capable)]), cost_us) for h in pop])

    n, k = habitats, len(types)
    x = rng.random((n, k))
    v = np.zeros((n, k))
    cost = fitness(x)
    personal, personal_cost = x.copy(), cost.copy()
    for _ in range(generations):
        order = np.argsort(cost, kind="stable")  # best first
        x, v, cost = x[order], v[order], cost[order]
        personal, personal_cost = personal[order], personal_cost[order]
        rank = np.arange(n)  # 0 = best
        immigration = rank / n
        emigration = (n - rank) / n
        new = x.copy()
        for h in range(elites, n):
            for t in range(k):
                if rng.random() < immigration[h]:
                    new[h, t] = x[rng.choice(n, p=emigration / emigration.sum()), t]
            redraw = rng.random(k) < mutation
            new[h, redraw] = rng.random(int(redraw.sum()))
        best = personal[int(np.argmin(personal_cost))]
        r1, r2 = rng.random((n, k)), rng.random((n, k))
        v = inertia * v + c1 * r1 * (personal - new) + c2 * r2 * (best[None, :] - new)
        moved = np.clip(new + v, 0.0, np.nextafter(1.0, 0.0))
        moved[:elites] = x[:elites]
        v[:elites] = 0.0
        x = moved
        cost = fitness(x)
        better = cost < personal_cost
        personal[better], personal_cost[better] = x[better], cost[better]
    return evaluate(problem, decode(personal[int(np.argmin(personal_cost))]), "bbo_pso")
