"""Exact anchors for MESAP (paper 003): a MILP for star service costs, exhaustive search for tiny
instances with tour costs.

With one data type and star service costs, MESAP is uncapacitated facility location, so the
OR-Library ``cap`` instances' known optima check the MILP (``data/orlib/README.md``).

MILP (scipy.optimize.milp, HiGHS): y_j (server active), q_jb (j processes b), w_ijb (user i's type
b goes to j), z_ij (user i uses j) with Σ_j w_ijb = 1, w_ijb ≤ q_jb, q_jb ≤ y_j, w_ijb ≤ z_ij;
minimise Σ AC_j y_j + Σ IPC_j(b) q_jb + Σ c_ij z_ij. With one type z ≡ w and w may stay continuous
(for fixed y the best assignment is integral); with several types w is binary.
"""

from __future__ import annotations

import itertools

import numpy as np

from ecd.errors import MissingExtraError
from scheduling.placement.problem import (
    InfeasibleError,
    Placement,
    PlacementError,
    PlacementProblem,
    _tour_length,
    evaluate,
)

__all__ = ["solve_milp", "solve_exhaustive", "lp_relaxation"]

EXHAUSTIVE_MAX_PAIRS = 12


def _scipy():
    """scipy's sparse matrices and HiGHS MILP, imported on first use: only the exact and LP-based
    methods need them (the ``cloud`` extra), so the heuristics run on a runtime-only install."""
    try:
        from scipy import sparse
        from scipy.optimize import Bounds, LinearConstraint, milp
    except ImportError:
        raise MissingExtraError("method: the exact and LP-based placement methods need scipy: pip install 'ecd-runtime[cloud]'") from None
    return sparse, Bounds, LinearConstraint, milp


def _model(problem: PlacementProblem):
    m, k = problem.n_servers, problem.n_types
    cost_us = problem.user_server_cost()
    capable = ~np.isinf(problem.processing_cost)
    pairs = [(i, b) for i, b in zip(*np.nonzero(problem.user_types))]
    n_y, n_q, n_w = m, m * k, len(pairs) * m
    single = k == 1
    n_z = 0 if single else problem.n_users * m
    n = n_y + n_q + n_w + n_z
    y0, q0, w0, z0 = 0, n_y, n_y + n_q, n_y + n_q + n_w
    c = np.zeros(n)
    c[y0:q0] = problem.activation_cost
    c[q0:w0] = np.where(capable, problem.processing_cost, 0.0).ravel()
    if single:
        for p, (i, b) in enumerate(pairs):
            c[w0 + p * m : w0 + (p + 1) * m] = cost_us[i]
    else:
        c[z0:] = cost_us.ravel()
    upper = np.ones(n)
    upper[q0:w0] = capable.ravel().astype(float)  # q_jb = 0 where j cannot process b
    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0

    def add(entries, low, high):
        nonlocal r
        for col, val in entries:
            rows.append(r)
            cols.append(col)
            vals.append(val)
        lo.append(low)
        hi.append(high)
        r += 1

    for p, (i, b) in enumerate(pairs):
        add([(w0 + p * m + j, 1.0) for j in range(m)], 1.0, 1.0)  # each carried type goes somewhere
        for j in range(m):
            add([(w0 + p * m + j, 1.0), (q0 + j * k + b, -1.0)], -np.inf, 0.0)  # w <= q
            if not single:
                add([(w0 + p * m + j, 1.0), (z0 + i * m + j, -1.0)], -np.inf, 0.0)  # w <= z
    for j in range(m):
        for b in range(k):
            add([(q0 + j * k + b, 1.0), (y0 + j, -1.0)], -np.inf, 0.0)  # q <= y
    sparse = _scipy()[0]
    a = sparse.csr_matrix((vals, (rows, cols)), shape=(r, n))
    integrality = np.zeros(n)
    integrality[:w0] = 1
    if not single:
        integrality[w0:z0] = 1
    return c, a, np.array(lo), np.array(hi), upper, integrality, (y0, q0, w0, z0), pairs


def _check_star(problem: PlacementProblem) -> None:
    if problem.has_coordinates and problem.n_types > 1:
        raise PlacementError(
            "method=exact: the MILP needs star service costs (a service_cost matrix, or one data type); "
            "tour costs with several types are not linear — use method='exhaustive' on a tiny instance"
        )


def solve_milp(problem: PlacementProblem, time_limit_s: float = 300.0) -> Placement:
    """The optimum under star service costs (for coordinates with one type: round trips)."""
    _check_star(problem)
    c, a, lo, hi, upper, integrality, (y0, q0, w0, _), pairs = _model(problem)
    _, Bounds, LinearConstraint, milp = _scipy()
    res = milp(c, constraints=LinearConstraint(a, lo, hi), integrality=integrality,
               bounds=Bounds(np.zeros(len(c)), upper), options={"time_limit": time_limit_s, "mip_rel_gap": 1e-9})
    if res.x is None:
        raise InfeasibleError(f"method=exact: HiGHS found no solution ({res.message})")
    m, k = problem.n_servers, problem.n_types
    open_ = res.x[q0:w0].reshape(m, k) > 0.5
    assignment = np.full(problem.user_types.shape, -1, dtype=np.int64)
    for p, (i, b) in enumerate(pairs):
        assignment[i, b] = int(np.argmax(res.x[w0 + p * m : w0 + (p + 1) * m]))
    return evaluate(problem, open_, "exact", assignment=assignment)


def lp_relaxation(problem: PlacementProblem) -> np.ndarray:
    """The LP relaxation's q_jb (M, K), for the APX2 stand-in's rounding."""
    c, a, lo, hi, upper, _, (_, q0, w0, _), _ = _model(problem)
    _, Bounds, LinearConstraint, milp = _scipy()
    res = milp(c, constraints=LinearConstraint(a, lo, hi), integrality=np.zeros(len(c)), bounds=Bounds(np.zeros(len(c)), upper))
    if res.x is None:
        raise InfeasibleError(f"LP relaxation infeasible ({res.message})")
    return res.x[q0:w0].reshape(problem.n_servers, problem.n_types)


def _best_user_assignment(problem: PlacementProblem, open_: np.ndarray) -> np.ndarray:
    """For each user, the assignment of its types to open servers with the shortest tour / least star cost."""
    assignment = np.full(problem.user_types.shape, -1, dtype=np.int64)
    for i in range(problem.n_users):
        types = np.flatnonzero(problem.user_types[i])
        if len(types) == 0:
            continue  # a user who carries nothing uploads nothing (np.unique of no choice is a float array)
        options = [np.flatnonzero(open_[:, b]) for b in types]
        best, best_choice = np.inf, None
        for choice in itertools.product(*options):
            servers = np.unique(choice)
            if problem.has_coordinates:
                cost = _tour_length(np.vstack([problem.user_pos[i], problem.server_pos[servers]]))
            else:
                cost = problem.service_cost[i, servers].sum()
            if cost < best:
                best, best_choice = cost, choice
        assignment[i, types] = best_choice
    return assignment


def solve_exhaustive(problem: PlacementProblem) -> Placement:
    """Every set of (server, type) pairs, every user assignment: for tiny instances only."""
    capable = [(j, b) for j in range(problem.n_servers) for b in range(problem.n_types) if np.isfinite(problem.processing_cost[j, b])]
    if len(capable) > EXHAUSTIVE_MAX_PAIRS:
        raise PlacementError(f"method=exhaustive: {len(capable)} (server, type) pairs; at most {EXHAUSTIVE_MAX_PAIRS} are searched")
    carried = np.flatnonzero(problem.user_types.any(axis=0))
    best: Placement | None = None
    for mask in range(1, 2 ** len(capable)):
        open_ = np.zeros((problem.n_servers, problem.n_types), dtype=bool)
        for bit, (j, b) in enumerate(capable):
            if mask >> bit & 1:
                open_[j, b] = True
        if not open_[:, carried].any(axis=0).all():
            continue
        candidate = evaluate(problem, open_, "exhaustive", assignment=_best_user_assignment(problem, open_))
        if best is None or candidate.total_cost < best.total_cost - 1e-12:
            best = candidate
    assert best is not None
    return best
