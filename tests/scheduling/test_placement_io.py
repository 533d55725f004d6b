"""Paper 003's placement, its input and the CLI (scheduling/placement/io.py): bad input names the problem
and the field; the CLI's JSON and its errors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cli import ecd

from scheduling.placement import InfeasibleError, PlacementError, PlacementProblem, solve
from scheduling.placement.io import instance_from_dict


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    ok = dict(activation_cost=np.ones(2), processing_cost=np.ones((2, 2)), user_types=np.ones((2, 2), bool),
              server_pos=np.zeros((2, 2)), user_pos=np.zeros((2, 2)))
    with pytest.raises(InfeasibleError, match="no server can process data type '1'"):
        PlacementProblem(**{**ok, "processing_cost": np.array([[1.0, np.inf], [1.0, np.inf]])})
    with pytest.raises(PlacementError, match="activation_cost"):
        PlacementProblem(**{**ok, "activation_cost": np.array([1.0, -1.0])})
    with pytest.raises(PlacementError, match="processing_cost"):
        PlacementProblem(**{**ok, "processing_cost": np.array([[1.0, np.nan], [1.0, 1.0]])})
    with pytest.raises(PlacementError, match="user_pos: entry 1 has no valid location"):
        PlacementProblem(**{**ok, "user_pos": np.array([[0.0, 0.0], [np.nan, 1.0]])})
    with pytest.raises(PlacementError, match="server set is empty"):
        PlacementProblem(**{**ok, "activation_cost": np.ones(0), "processing_cost": np.ones((0, 2))})
    with pytest.raises(PlacementError, match="method"):
        solve(PlacementProblem(**ok), "greedy")
    with pytest.raises(PlacementError, match="no data types"):
        PlacementProblem(**{**ok, "processing_cost": np.ones((2, 0)), "user_types": np.ones((2, 0), bool)})
    with pytest.raises(PlacementError, match="user set is empty"):
        PlacementProblem(**{**ok, "user_types": np.ones((0, 2), bool), "user_pos": np.zeros((0, 2))})
    with pytest.raises(PlacementError, match=r"service_cost: expected shape \(2, 2\)"):
        PlacementProblem(**{**ok, "service_cost": np.ones((3, 2))})
    with pytest.raises(PlacementError, match="service_cost: costs must be finite"):
        PlacementProblem(**{**ok, "service_cost": np.array([[1.0, np.nan], [1.0, 1.0]])})
    with pytest.raises(PlacementError, match=r"server_pos: expected shape \(2, 2\)"):
        PlacementProblem(**{**ok, "server_pos": np.zeros((3, 2))})


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda d: d.update(types=[]), "types: the list of data types is empty"),
        (lambda d: d.update(servers=[]), "servers: the server set is empty"),
        (lambda d: d.update(users="all"), "users: expected a list"),
        (lambda d: d["servers"][0].update(activation_cost=float("nan")), "activation_cost: costs must be finite and >= 0"),
        (lambda d: d["servers"][0].update(activation_cost=-1), "activation_cost: costs must be finite and >= 0"),
        (lambda d: d["servers"][1]["processing_cost"].update(noise=-2), "processing_cost: costs must be finite and >= 0"),
        (lambda d: d["servers"][0].pop("activation_cost"), "missing field 'activation_cost'"),
        (lambda d: d["users"][0].update(types=["heat"]), "users[0].types: unknown data type 'heat'"),
    ],
)
def test_instance_from_dict_bad_input_names_the_field(change, needle: str) -> None:
    d = {"types": ["noise"], "servers": [{"x": 0, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1}},
                                          {"x": 1, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1}}],
         "users": [{"x": 0, "y": 1, "types": ["noise"]}]}
    change(d)
    with pytest.raises(PlacementError, match=re.escape(needle)):
        instance_from_dict(d)


def test_cli_json_and_errors(tmp_path: Path) -> None:
    instance = {
        "types": ["noise", "air"],
        "servers": [
            {"x": 0, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1, "air": 2}},
            {"x": 4, "y": 0, "activation_cost": 5, "processing_cost": {"noise": 1}},
        ],
        "users": [{"x": 0, "y": 1, "types": ["noise", "air"]}, {"x": 4, "y": 1, "types": ["noise"]}],
    }
    path = tmp_path / "i.json"
    path.write_text(json.dumps(instance))
    proc = ecd("placement", "solve", "--instance", str(path), "--method", "exhaustive", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert set(d["metrics"]) == {"NAMES", "TC", "avgLBSU", "avgLBSD"}
    assert d["total_cost"] == pytest.approx(d["facility_cost"] + d["service_cost"])
    instance["servers"][0]["processing_cost"].pop("air")
    path.write_text(json.dumps(instance))
    proc = ecd("placement", "solve", "--instance", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "'air'" in proc.stderr
    instance["users"][0].pop("x")
    path.write_text(json.dumps(instance))
    proc = ecd("placement", "solve", "--instance", str(path))
    assert proc.returncode != 0 and "users[0]: no location" in proc.stderr
    proc = ecd("placement", "solve", "--orlib", str(tmp_path / "missing.txt"))
    assert proc.returncode != 0 and "no such file" in proc.stderr
