"""Allocation's edges (papers 002, 004): the facade that dispatches on the instance, its errors, JSON I/O
and its bad fields, and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli import ecd

from ecd.errors import EcdError
from scheduling import allocation
from scheduling.allocation import coverage, io, tapp
from scheduling.allocation.coverage import CoverageError
from scheduling.allocation.tapp import TappError, TappInfeasible, TappInstance
from scheduling.errors import AllocationError

from allocation_cases import small_tapp


def test_facade_dispatches_on_the_instance_type() -> None:
    t = small_tapp()
    c = coverage.random_instance(8, 3, 3, seed=1)
    assert set(allocation.METHODS) == set(allocation.PROBLEMS) == {"tapp", "coverage"}
    assert allocation.METHODS["tapp"] is tapp.METHODS and allocation.METHODS["coverage"] is coverage.METHODS
    assert allocation.problem_of(t) == "tapp" and allocation.problem_of(c) == "coverage"
    for method in allocation.METHODS["tapp"]:
        got = allocation.allocate(t, method)
        assert isinstance(got, tapp.TappAllocation) and got.method == method
        assert np.array_equal(got.x, tapp.allocate(t, method).x)
    for method in allocation.METHODS["coverage"]:
        got = allocation.allocate(c, method, seed=2)
        assert isinstance(got, coverage.CoverageAllocation) and got.method == method
        assert got.objective == coverage.allocate(c, method, seed=2).objective
    # the default method is the problem's own
    assert allocation.allocate(t).method == allocation.DEFAULT_METHOD["tapp"] == "tapp"
    assert allocation.allocate(c).method == allocation.DEFAULT_METHOD["coverage"] == "proposed"


def test_facade_wrong_method_names_method_and_lists_the_known_ones() -> None:
    with pytest.raises(TappError, match=r"^method: expected one of tapp, baseline1, baseline2, exhaustive, tapp_plus, exact, got 'proposed'$"):
        allocation.allocate(small_tapp(), "proposed")
    with pytest.raises(CoverageError, match=r"^method: expected one of proposed, benchmark1, .*brute_force, exact, got 'greedy'$"):
        allocation.allocate(coverage.random_instance(8, 3, 3, seed=1), "greedy")
    with pytest.raises(AllocationError, match="instance: expected one of TappInstance, CoverageInstance, got dict"):
        allocation.allocate({"profiles": []})  # type: ignore[call-overload]


def test_errors_share_one_base() -> None:
    for cls in (TappError, TappInfeasible, CoverageError):
        assert issubclass(cls, AllocationError) and issubclass(cls, EcdError) and issubclass(cls, ValueError)


def test_tapp_theta_of_the_wrong_length_is_a_clean_error() -> None:
    with pytest.raises(TappError, match=r"theta: expected one value or 3 values, got shape \[2\]"):
        TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), np.array([0.1, 0.2]))


def test_tapp_json_round_trip(tmp_path: Path) -> None:
    inst = TappInstance(np.array([[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]), np.array([3, 3, 3]), np.array([3, 3]), np.array([0.4, 0.5, 0.6]))
    path = io.write_json(tmp_path / "tapp.json", io.tapp_to_dict(inst))
    back = io.read_tapp(path)
    for name in ("profiles", "time_threshold", "workload", "theta"):
        assert np.array_equal(getattr(back, name), getattr(inst, name)), name
    assert back.time_threshold.dtype == np.int64 and back.workload.dtype == np.int64
    assert np.array_equal(allocation.allocate(back).x, allocation.allocate(inst).x)


def test_tapp_json_theta_default_and_precedence() -> None:
    d = {"profiles": [[0.5, 0.5], [1.0, 0.0]], "time_threshold": [2, 2], "workload": [1, 1]}
    assert io.tapp_from_dict(d, theta=0.7).theta.tolist() == [0.7, 0.7]
    assert io.tapp_from_dict({**d, "theta": 0.3}, theta=0.7).theta.tolist() == [0.3, 0.3]  # the file's own wins
    with pytest.raises(TappError, match=r"^instance: missing field 'theta'$"):
        io.tapp_from_dict(d)


def test_coverage_json_round_trip(tmp_path: Path) -> None:
    inst = coverage.random_instance(7, 3, 4, seed=5, rho=0.25, eta=2.0)
    path = io.write_json(tmp_path / "coverage.json", io.coverage_to_dict(inst))
    back = io.read_coverage(path)
    for name in ("sensing_rate", "rate", "subarea"):
        assert np.array_equal(getattr(back, name), getattr(inst, name)), name
    assert (back.n_subareas, back.task_bits, back.rho, back.eta) == (inst.n_subareas, inst.task_bits, inst.rho, inst.eta)
    assert np.issubdtype(back.subarea.dtype, np.integer)
    assert allocation.allocate(back, seed=3).objective == allocation.allocate(inst, seed=3).objective


def test_coverage_json_defaults() -> None:
    d = {"sensing_rate": [1.0, 2.0, 3.0], "rate": [[1.0], [2.0], [3.0]], "subarea": [0, 1, 1], "n_subareas": 2, "task_bits": 10}
    assert (io.coverage_from_dict(d).rho, io.coverage_from_dict(d).eta) == (0.5, 1.0)
    assert io.coverage_from_dict(d, rho=0.9).rho == 0.9
    assert io.coverage_from_dict({**d, "rho": 0.1}, rho=0.9).rho == 0.1


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, AllocationError)
    return msg


def _refusal(path: Path, valid: dict, change: dict, read, error: type[Exception]) -> tuple[Path, str]:
    """``valid`` with ``change`` made (None drops a field), written to ``path`` and read: ``error``'s message, on one line."""
    path.write_text(json.dumps({k: v for k, v in {**valid, **change}.items() if v is not None}))
    with pytest.raises(error) as e:
        read(path)
    return path, _one_line(e)


TAPP_OK = {"profiles": [[0.5, 0.5], [1.0, 0.0]], "time_threshold": [2, 2], "workload": [1, 1], "theta": 0.5}
COVERAGE_OK = {"sensing_rate": [1.0, 2.0, 3.0], "rate": [[1.0], [2.0], [3.0]], "subarea": [0, 1, 1], "n_subareas": 2, "task_bits": 10}


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(workload=None), "missing field 'workload'"),
        (dict(profiles=None), "missing field 'profiles'"),
        (dict(time_threshold=None), "missing field 'time_threshold'"),
        (dict(profiles="abc"), "profiles: expected a rectangular array of numbers"),
        (dict(profiles=[[0.5, 0.5], [1.0]]), "profiles: expected a rectangular array of numbers"),
        (dict(time_threshold=[2, "x"]), "time_threshold: expected a rectangular array of numbers"),
        (dict(workload=[1, 1, 1]), "workload: expected 2 values"),
        (dict(profiles=[[0.5, 0.6], [1.0, 0.0]]), "sum to 1"),
    ],
)
def test_tapp_json_bad_field(tmp_path: Path, change: dict, needle: str) -> None:
    path, msg = _refusal(tmp_path / "t.json", TAPP_OK, change, io.read_tapp, TappError)
    assert msg.startswith(f"{path}: ") and needle in msg


@pytest.mark.parametrize(
    "change,needle",
    [
        (dict(task_bits=None), "missing field 'task_bits'"),
        (dict(rate=None), "missing field 'rate'"),
        (dict(n_subareas=2.5), "n_subareas: expected a whole number"),
        (dict(n_subareas="two"), "n_subareas: expected a whole number"),
        (dict(task_bits="big"), "task_bits: expected a number"),
        (dict(rho="high"), "rho: expected a number"),
        (dict(subarea=[0, 1.5, 1]), "subarea: expected whole numbers"),
        (dict(rate=[[1.0], [2.0]]), "rate: expected shape"),
        (dict(rho=2.0), "rho: expected a value in [0, 1]"),
    ],
)
def test_coverage_json_bad_field(tmp_path: Path, change: dict, needle: str) -> None:
    path, msg = _refusal(tmp_path / "c.json", COVERAGE_OK, change, io.read_coverage, CoverageError)
    assert msg.startswith(f"{path}: ") and needle in msg


@pytest.mark.parametrize("reader,error", [(io.read_tapp, TappError), (io.read_coverage, CoverageError)])
def test_json_bad_files(tmp_path: Path, reader, error: type) -> None:
    with pytest.raises(error, match="no such file") as e:
        reader(tmp_path / "missing.json")
    _one_line(e)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(error, match="not valid JSON") as e:
        reader(bad)
    _one_line(e)
    bad.write_text("[1, 2]")
    with pytest.raises(error, match="expected a JSON object, got list") as e:
        reader(bad)
    _one_line(e)


def test_allocate_cli(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"profiles": [[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]], "time_threshold": [3, 3, 3], "workload": [3, 3], "theta": 0.4}))
    proc = ecd("allocate", "tapp", "--instance", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert np.array(d["allocation"]).sum(axis=0).tolist() == [3, 3]
    proc = ecd("allocate", "coverage", "--random", "8", "3", "3", "--json")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["scheduled"]) == 3
    path.write_text(json.dumps({"profiles": [[0.5, 0.6]], "time_threshold": [1], "workload": [1, 0]}))
    proc = ecd("allocate", "tapp", "--instance", str(path))
    assert proc.returncode != 0 and "sum to 1" in proc.stderr and "Traceback" not in proc.stderr
    proc = ecd("allocate", "coverage", "--random", "3", "3", "2")
    assert proc.returncode != 0 and "fewer subbands than users" in proc.stderr


def test_allocate_cli_reads_coverage_files_and_rejects_mismatched_sources(tmp_path: Path) -> None:
    path = io.write_json(tmp_path / "c.json", io.coverage_to_dict(coverage.random_instance(6, 2, 3, seed=4)))
    proc = ecd("allocate", "coverage", "--instance", str(path), "--method", "brute_force", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["method"] == "brute_force"
    proc = ecd("allocate", "coverage", "--instance", str(path), "--method", "tapp")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "method: expected one of proposed" in proc.stderr
    proc = ecd("allocate", "coverage", "--checkins", str(tmp_path / "x.csv"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "--checkins" in proc.stderr
    proc = ecd("allocate", "tapp", "--instance", str(tmp_path / "missing.json"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "no such file" in proc.stderr
    path.write_text(json.dumps({"profiles": [[1.0]], "time_threshold": [1]}))
    proc = ecd("allocate", "tapp", "--instance", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "missing field 'workload'" in proc.stderr
