"""Reading placement instances: OR-Library ``cap`` files and our JSON format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scheduling.placement.problem import PlacementError, PlacementProblem

__all__ = ["read_orlib", "read_instance", "instance_from_dict"]


def _tokens(text: str) -> list[tuple[str, int]]:
    return [(token, number) for number, line in enumerate(text.splitlines(), start=1) for token in line.split()]


def read_orlib(path: str | Path) -> PlacementProblem:
    """An OR-Library facility-location file (Beasley's ``cap*`` collection), read as *uncapacitated*
    facility location: ``m n``; m records ``capacity fixed_cost``; per customer its demand then m
    costs of serving all its demand from each site (records may wrap over lines). Every file of the
    UFL collection reads: cap71–cap134 give a number as each capacity, the large capa–capc instances
    the literal word ``capacity`` (irrelevant here: capacities and demands are ignored). One data type,
    star service costs. A malformed file raises a :class:`PlacementError` naming the file, the line
    and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        raise PlacementError(f"--orlib: no such file {path}") from None
    except UnicodeDecodeError:
        raise PlacementError(f"{path}: not a text file") from None
    tokens = _tokens(text)
    pos = 0
    last_line = tokens[-1][1] if tokens else 1  # where the file ends

    def take(what: str, word: str | None = None, whole: bool = False) -> float | None:
        nonlocal pos
        if pos >= len(tokens):
            raise PlacementError(f"{path}, line {last_line}: the file ends where {what} was expected")
        token, line = tokens[pos]
        pos += 1
        if word is not None and token.lower() == word:
            return None
        try:
            value = float(token)
        except ValueError:
            raise PlacementError(f"{path}, line {line}: {what}: expected a number, got {token!r}") from None
        if not np.isfinite(value) or value < 0:
            raise PlacementError(f"{path}, line {line}: {what}: expected a finite number >= 0, got {token!r}")
        if whole and (value != int(value) or value < 1):
            raise PlacementError(f"{path}, line {line}: {what}: expected a whole number >= 1, got {token!r}")
        return value

    m = int(take("the number of sites m (first line: 'm n')", whole=True))  # type: ignore[arg-type]
    n = int(take("the number of customers n (first line: 'm n')", whole=True))  # type: ignore[arg-type]
    fixed = np.empty(m)
    for j in range(m):
        take(f"the capacity of site {j + 1} (a number or the word 'capacity')", word="capacity")
        fixed[j] = take(f"the fixed cost of site {j + 1}")
    cost = np.empty((n, m))
    for i in range(n):
        take(f"the demand of customer {i + 1}")
        for j in range(m):
            cost[i, j] = take(f"the cost of serving customer {i + 1} from site {j + 1}")
    if pos < len(tokens):
        token, line = tokens[pos]
        raise PlacementError(f"{path}, line {line}: unexpected {token!r} after the last customer "
                             f"({m} sites and {n} customers need {pos} values)")
    return PlacementProblem(
        activation_cost=fixed,
        processing_cost=np.zeros((m, 1)),
        user_types=np.ones((n, 1), dtype=bool),
        service_cost=cost,
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
    if not isinstance(d, dict):
        raise PlacementError(f"{source}: expected a JSON object, got {type(d).__name__}")
    for name in ("types", "servers", "users"):
        if name in d and not isinstance(d[name], (list, tuple)):
            raise PlacementError(f"{source}: {name}: expected a list, got {type(d[name]).__name__}")
    try:
        types = [str(t) for t in d["types"]]
        if not types:
            raise PlacementError("types: the list of data types is empty")
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
