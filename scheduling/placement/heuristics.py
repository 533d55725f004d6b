"""OTACS and TTACS (paper 003 §2.4): k-means clustering, ant colony per cluster, merge, reallocate.

* Phase 1 (Eqs. 9–10): k-means on the users' initial locations (on their cost vectors when the
  instance has no coordinates — the paper allows any clustering), k in 2..k_max by the best average
  silhouette (computed on a seeded sample of at most 1,000 users). Each cluster gets the servers
  nearest to its centroid — at least one (the paper requires ≥ 1 per cluster).
* Phase 2 (Eqs. 6–8, 11–12): per cluster, ants pick one server for each data type the cluster's
  users carry with P ∝ τ^α·η^β, η = 1 / (IPC_j(b) + AC_j + mean star cost of the cluster's users of
  b to j); fitness f = the cluster's objective; deposit Q/f, evaporation ρ.
* Phase 3 (Eq. 13): the union WS of the clusters' (server, type) choices.
* Phase 4, OTACS (Eq. 20): a heuristic over WS — users go to their cheapest open server of each
  type, then greedy drop/add of (server, type) pairs within WS while the total cost falls.
* Phase 4, TTACS: an ant colony over WS choosing a server per (cluster, type), whose fitness
  multiplies the cost by (1 + λ·imbalance), imbalance = (max−min users per server)/N +
  (max−min items per server)/items — the load balance of Eqs. 21–24, normalised.

**Extension (ours, labelled ``otacs_ls``)**: phase 4's drop/add extended with add and swap moves
over *every* capable server, not only WS. On the OR-Library instances the silhouette picks k = 2
clusters on the users' cost vectors, so WS holds at most two servers while the optima open 4–15;
the paper's OTACS cannot get close there, and this variant is how far a local search takes it.

Choices the paper leaves open (ours): the ACO parameters (ants 8, iterations 25, α 1, β 2, ρ 0.1,
Q = the first ant's cost; a choice of cost 0 deposits as one of cost Q·1e-9), λ = 0.5, the number
of servers per cluster (servers nearer to the cluster's centroid than to any other), and the fitness
inside the colonies uses star service costs (Σ of round trips; the tour is never longer), while the
reported total cost uses the tours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduling.placement.problem import Placement, PlacementProblem, evaluate

__all__ = ["ACOParams", "kmeans", "silhouette", "cluster_users", "otacs", "otacs_ls", "ttacs", "star_cost"]


@dataclass(frozen=True)
class ACOParams:
    ants: int = 8
    iterations: int = 25
    alpha: float = 1.0
    beta: float = 2.0
    rho: float = 0.1
    balance_weight: float = 0.5  # TTACS's λ
    k_max: int = 10
    silhouette_sample: int = 1000


def star_cost(problem: PlacementProblem, open_: np.ndarray, cost_us: np.ndarray | None = None, users: np.ndarray | None = None) -> float:
    """Facility cost + star service cost, users on their cheapest open server per type (fast).

    With ``users``, only those users count (a cluster's objective, Eq. 11)."""
    cost_us = problem.user_server_cost() if cost_us is None else cost_us
    users = np.arange(problem.n_users) if users is None else users
    types = problem.user_types[users]
    uses = np.zeros((len(users), problem.n_servers), dtype=bool)
    used_pairs = np.zeros_like(open_)
    for b in np.flatnonzero(types.any(axis=0)):
        servers = np.flatnonzero(open_[:, b])
        if len(servers) == 0:
            return np.inf
        rows = np.flatnonzero(types[:, b])
        best = servers[np.argmin(cost_us[np.ix_(users[rows], servers)], axis=1)]
        uses[rows, best] = True
        used_pairs[best, b] = True
    active = used_pairs.any(axis=1)
    return float(problem.activation_cost[active].sum() + problem.processing_cost[used_pairs].sum() + cost_us[users][uses].sum())


def _load_imbalance(problem: PlacementProblem, open_: np.ndarray, cost_us: np.ndarray) -> float:
    users_per = np.zeros(problem.n_servers)
    items_per = np.zeros(problem.n_servers)
    for b in np.flatnonzero(problem.user_types.any(axis=0)):
        servers = np.flatnonzero(open_[:, b])
        users = np.flatnonzero(problem.user_types[:, b])
        best = servers[np.argmin(cost_us[np.ix_(users, servers)], axis=1)]
        np.add.at(items_per, best, problem.user_items[users, b])
        users_per += np.bincount(best, minlength=problem.n_servers) > 0  # approximate: per type
    active = users_per > 0
    if not active.any():
        return 0.0
    u, d = users_per[active], items_per[active]
    return float((u.max() - u.min()) / problem.n_users + (d.max() - d.min()) / max(problem.user_items.sum(), 1))


# --- phase 1: clustering ----------------------------------------------------------------------------


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns labels."""
    n = len(points)
    centres = [points[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(points[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else points[rng.integers(n)])
    c = np.array(centres, dtype=np.float64)
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iterations):
        d = ((points[:, None, :] - c[None]) ** 2).sum(-1)
        new = np.argmin(d, axis=1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        for z in range(k):
            members = points[labels == z]
            if len(members):
                c[z] = members.mean(axis=0)
    return labels


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """Average silhouette (Eqs. 9–10)."""
    ks = np.unique(labels)
    if len(ks) < 2:
        return -1.0
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    s = np.zeros(len(points))
    for idx in range(len(points)):
        own = labels == labels[idx]
        if own.sum() <= 1:
            continue
        a = d[idx, own].sum() / (own.sum() - 1)
        b = min(d[idx, labels == z].mean() for z in ks if z != labels[idx])
        s[idx] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(s.mean())


def cluster_users(problem: PlacementProblem, p: ACOParams, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """(labels per user, servers per cluster)."""
    points = problem.user_pos if problem.has_coordinates else problem.service_cost
    n = len(points)
    sample = rng.choice(n, size=min(n, p.silhouette_sample), replace=False)
    best_labels, best_score = np.zeros(n, dtype=np.int64), -np.inf
    for k in range(2, min(p.k_max, n - 1, problem.n_servers) + 1):
        labels = kmeans(points, k, rng)
        score = silhouette(points[sample], labels[sample])
        if score > best_score:
            best_labels, best_score = labels, score
    clusters = np.unique(best_labels)
    if problem.has_coordinates:
        centres = np.array([points[best_labels == z].mean(axis=0) for z in clusters])
        d = np.sqrt(((problem.server_pos[:, None, :] - centres[None]) ** 2).sum(-1))
    else:  # a server's "distance" to a cluster: its mean cost to the cluster's users
        d = np.stack([problem.service_cost[best_labels == z].mean(axis=0) for z in clusters], axis=1)
    home = np.argmin(d, axis=1)
    servers = [np.flatnonzero(home == z) if (home == z).any() else np.array([int(np.argmin(d[:, z]))]) for z in range(len(clusters))]
    return np.searchsorted(clusters, best_labels), servers


# --- phase 2: ant colony per cluster ----------------------------------------------------------------


def _colony(
    choices: list[tuple[int, np.ndarray, np.ndarray]],
    fitness,
    shape: tuple[int, int],
    p: ACOParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Generic ACO: for each (key, candidate servers, heuristic η) pick one server; returns the best
    open_ matrix found. ``fitness(open_)`` is minimised."""
    tau = [np.ones(len(c)) for _, c, _ in choices]
    best, best_f, q = None, np.inf, None
    for _ in range(p.iterations):
        solutions = []
        for _ant in range(p.ants):
            open_ = np.zeros(shape, dtype=bool)
            picks = []
            for (b, cands, eta), t in zip(choices, tau):
                w = t**p.alpha * eta**p.beta
                k = rng.choice(len(cands), p=w / w.sum())
                open_[cands[k], b] = True
                picks.append(k)
            f = fitness(open_)
            q = q or (f if np.isfinite(f) and f > 0 else 1.0)
            solutions.append((f, picks))
            if f < best_f:
                best, best_f = open_, f
        for t in tau:
            t *= 1 - p.rho  # Eq. 8
        for f, picks in solutions:  # Eq. 7; a choice that costs nothing deposits as one costing Q·1e-9 (not Q/0)
            for t, k in zip(tau, picks):
                t[k] += q / max(f, q * 1e-9)
    assert best is not None
    return best


def _choice(problem: PlacementProblem, b: int, users: np.ndarray, servers: np.ndarray, cost_us: np.ndarray):
    """(type, candidate servers, heuristic η) for one colony decision: the servers of ``servers``
    that can process ``b`` (every capable server if none can), η = 1 / (IPC + AC + mean star cost
    of ``users`` carrying b)."""
    cands = servers[np.isfinite(problem.processing_cost[servers, b])]
    if len(cands) == 0:
        cands = np.flatnonzero(np.isfinite(problem.processing_cost[:, b]))
    carriers = users[problem.user_types[users, b]]
    eta = 1.0 / (problem.processing_cost[cands, b] + problem.activation_cost[cands] + cost_us[np.ix_(carriers, cands)].mean(axis=0) + 1e-9)
    return int(b), cands, eta


def _cluster_choices(problem: PlacementProblem, users: np.ndarray, servers: np.ndarray, cost_us: np.ndarray):
    return [_choice(problem, b, users, servers, cost_us) for b in np.flatnonzero(problem.user_types[users].any(axis=0))]


def _merged_set(problem: PlacementProblem, p: ACOParams, rng: np.random.Generator):
    """Phases 1–3: the union WS of each cluster's ant-colony choice."""
    cost_us = problem.user_server_cost()
    labels, cluster_servers = cluster_users(problem, p, rng)
    merged = np.zeros((problem.n_servers, problem.n_types), dtype=bool)
    per_cluster = []
    for z, servers in enumerate(cluster_servers):
        users = np.flatnonzero(labels == z)
        if len(users) == 0:
            continue
        choices = _cluster_choices(problem, users, servers, cost_us)

        def fitness(open_: np.ndarray, users=users) -> float:
            return star_cost(problem, open_, cost_us, users)

        chosen = _colony(choices, fitness, merged.shape, p, rng)
        merged |= chosen
        per_cluster.append((users, choices))
    return merged, per_cluster, cost_us


# --- phase 4 ----------------------------------------------------------------------------------------


def _toggle_pass(problem: PlacementProblem, open_: np.ndarray, current: float, candidates, cost_us: np.ndarray):
    """One first-improvement pass adding or dropping each candidate (server, type) pair."""
    improved = False
    for j, b in candidates:
        trial = open_.copy()
        trial[j, b] = not trial[j, b]
        c = star_cost(problem, trial, cost_us)
        if c < current - 1e-9:
            open_, current, improved = trial, c, True
    return open_, current, improved


def _reallocate(problem: PlacementProblem, merged: np.ndarray, cost_us: np.ndarray) -> np.ndarray:
    """OTACS's heuristic (Eq. 20): drop / add (server, type) pairs within WS while the cost falls."""
    open_, current = merged.copy(), star_cost(problem, merged, cost_us)
    candidates = list(zip(*np.nonzero(merged)))
    improved = True
    while improved:
        open_, current, improved = _toggle_pass(problem, open_, current, candidates, cost_us)
    return open_


def _local_search(problem: PlacementProblem, start: np.ndarray, cost_us: np.ndarray) -> np.ndarray:
    """First-improvement add / drop / swap over every capable (server, type) pair."""
    open_, current = start.copy(), star_cost(problem, start, cost_us)
    capable = [tuple(x) for x in np.argwhere(np.isfinite(problem.processing_cost)) if problem.user_types[:, x[1]].any()]
    improved = True
    while improved:
        open_, current, improved = _toggle_pass(problem, open_, current, capable, cost_us)
        for j, b in [tuple(x) for x in np.argwhere(open_)]:  # swap an open pair for a closed one
            for j2 in np.flatnonzero(np.isfinite(problem.processing_cost[:, b]) & ~open_[:, b]):
                trial = open_.copy()
                trial[j, b], trial[j2, b] = False, True
                c = star_cost(problem, trial, cost_us)
                if c < current - 1e-9:
                    open_, current, improved = trial, c, True
                    break
    return open_


def otacs(problem: PlacementProblem, seed: int = 0, params: ACOParams = ACOParams()) -> Placement:
    rng = np.random.default_rng(seed)
    merged, _, cost_us = _merged_set(problem, params, rng)
    return evaluate(problem, _reallocate(problem, merged, cost_us), "otacs")


def otacs_ls(problem: PlacementProblem, seed: int = 0, params: ACOParams = ACOParams()) -> Placement:
    """OTACS followed by add / drop / swap over all servers (our extension, see the module notes)."""
    rng = np.random.default_rng(seed)
    merged, _, cost_us = _merged_set(problem, params, rng)
    start = _reallocate(problem, merged, cost_us)
    return evaluate(problem, _local_search(problem, start, cost_us), "otacs_ls")


def ttacs(problem: PlacementProblem, seed: int = 0, params: ACOParams = ACOParams()) -> Placement:
    rng = np.random.default_rng(seed)
    merged, per_cluster, cost_us = _merged_set(problem, params, rng)
    ws_servers = np.flatnonzero(merged.any(axis=1))
    choices = [_choice(problem, b, users, ws_servers, cost_us) for users, cluster_choices in per_cluster for b, _, _ in cluster_choices]

    def fitness(open_: np.ndarray) -> float:
        return star_cost(problem, open_, cost_us) * (1 + params.balance_weight * _load_imbalance(problem, open_, cost_us))

    return evaluate(problem, _colony(choices, fitness, merged.shape, params, rng), "ttacs")
