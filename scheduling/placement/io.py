"""Reading placement instances: OR-Library ``cap`` files and our JSON format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scheduling.placement.problem import PlacementError, PlacementProblem

__all__ = ["read_orlib", "read_instance", "instance_from_dict"]


def read_orlib(path: str | Path) -> PlacementProblem:
    """An OR-Library capacitated facility location file, read as *uncapacitated* (capacities
    ignored): ``m n``; m lines ``capacity fixed_cost``; per customer its demand then m costs of
    serving all its demand from each site. One data type, star service costs."""
    path = Path(path)
    try:
        tokens = path.read_text().split()
    except (FileNotFoundError, IsADirectoryError):
        raise PlacementError(f"--orlib: no such file {path}") from None
    try:
        values = [float(t) for t in tokens]
    except ValueError as e:
        raise PlacementError(f"{path}: not an OR-Library file ({e})") from None
    if len(values) < 2 or values[0] != int(values[0]) or values[1] != int(values[1]) or values[0] < 1 or values[1] < 1:
        raise PlacementError(f"{path}: the first line must be 'm n' (sites, customers)")
    m, n = int(values[0]), int(values[1])
    expected = 2 + 2 * m + n * (1 + m)
    if len(values) != expected:
        raise PlacementError(f"{path}: expected {expected} numbers for {m} sites and {n} customers, found {len(values)}")
    sites = np.array(values[2 : 2 + 2 * m]).reshape(m, 2)
    customers = np.array(values[2 + 2 * m :]).reshape(n, 1 + m)
    return PlacementProblem(
        activation_cost=sites[:, 1],
        processing_cost=np.zeros((m, 1)),
        user_types=np.ones((n, 1), dtype=bool),
        service_cost=customers[:, 1:],
        type_names=("data",),
    )


def read_instance(path: str | Path) -> PlacementProblem:
    """An instance in our JSON format (see :func:`instance_from_dict`) from a file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlacementError(f"--instance: no such file {path}") from None
    except json.JSONDecodeError as e:
        raise PlacementError(f"{path}: not valid JSON ({e})") from None
    return instance_from_dict(d, str(path))


def instance_from_dict(d: dict, source: str = "instance") -> PlacementProblem:
    """JSON: {"types": [...], "servers": [{"x", "y", "activation_cost", "processing_cost": {type: cost}}],
    "users": [{"x", "y", "types": [...]}]}. A server lacking a type in processing_cost cannot process it.
    Other keys (e.g. an "id" per server and user) are carried along and ignored."""
    try:
        types = [str(t) for t in d["types"]]
        index = {t: b for b, t in enumerate(types)}
        servers, users = d["servers"], d["users"]
        if not servers:
            raise PlacementError("servers: the server set is empty")
        ipc = np.full((len(servers), len(types)), np.inf)
        for j, s in enumerate(servers):
            for t, v in s.get("processing_cost", {}).items():
                if t not in index:
                    raise PlacementError(f"servers[{j}].processing_cost: unknown data type {t!r}")
                ipc[j, index[t]] = float(v)
        user_types = np.zeros((len(users), len(types)), dtype=bool)
        for i, u in enumerate(users):
            for t in u.get("types", []):
                if t not in index:
                    raise PlacementError(f"users[{i}].types: unknown data type {t!r}")
                user_types[i, index[t]] = True

        def position(rows: list, name: str) -> np.ndarray:
            out = np.full((len(rows), 2), np.nan)
            for i, r in enumerate(rows):
                if r.get("x") is None or r.get("y") is None:
                    raise PlacementError(f"{name}[{i}]: no location (x, y)")
                out[i] = (float(r["x"]), float(r["y"]))
            return out

        return PlacementProblem(
            activation_cost=np.array([float(s["activation_cost"]) for s in servers]),
            processing_cost=ipc,
            user_types=user_types,
            server_pos=position(servers, "servers"),
            user_pos=position(users, "users"),
            type_names=tuple(types),
        )
    except KeyError as e:
        raise PlacementError(f"{source}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as e:
        if isinstance(e, PlacementError):
            raise
        raise PlacementError(f"{source}: {e}") from None
