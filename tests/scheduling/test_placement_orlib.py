"""Paper 003's placement, exact anchors: the exact solver and the CLI reproduce every shipped OR-Library
optimum (data/orlib), from either file format; missing or malformed data fails, never skips.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli import ecd

from scheduling.placement import PlacementError, read_orlib, solve


ORLIB = Path(__file__).resolve().parents[2] / "data" / "orlib"  # shipped with the repository (see its README.md)
OPTIMA = {
    "cap71": 932615.750, "cap72": 977799.400, "cap73": 1010641.450, "cap74": 1034976.975,
    "cap101": 796648.437, "cap102": 854704.200, "cap103": 893782.112, "cap104": 928941.750,
    "cap131": 793439.562, "cap132": 851495.325, "cap133": 893076.712, "cap134": 928941.750,
}


def orlib_file(name: str) -> Path:
    """The shipped OR-Library instance ``name``; a missing file FAILS the test (never a skip): CI must
    not go green on the exact solver's anchors because the data was not checked out."""
    path = ORLIB / f"{name}.txt"
    if not path.is_file():
        pytest.fail(f"OR-Library data missing: {path} (shipped in data/orlib, see data/orlib/README.md); "
                    "the exact-optimum tests cannot run without it", pytrace=False)
    return path


@pytest.mark.parametrize("name", sorted(OPTIMA))
def test_exact_reproduces_orlib_optimum(name: str) -> None:
    placement = solve(read_orlib(orlib_file(name)), "exact")
    assert abs(placement.total_cost - OPTIMA[name]) / OPTIMA[name] <= 1e-6


def test_orlib_files_ship_with_the_repository() -> None:
    assert ORLIB.is_dir(), f"OR-Library data missing: {ORLIB} (shipped with the repository, see data/orlib/README.md)"
    assert sorted(p.stem for p in ORLIB.glob("cap*.txt")) == sorted(OPTIMA)
    readme = (ORLIB / "README.md").read_text()
    assert "Beasley" in readme and all(f"{v:.3f}" in readme for v in OPTIMA.values())


def test_missing_orlib_data_fails_the_test_not_skips_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ORLIB", tmp_path / "orlib")  # a checkout without data/orlib
    outcome: BaseException | None = None
    try:
        orlib_file("cap71")
    except BaseException as e:  # a skip (pytest.skip.Exception) must not escape: it would mark this test skipped
        outcome = e
    assert type(outcome) is pytest.fail.Exception, f"expected a failure, got {outcome!r}"
    assert "OR-Library data missing" in str(outcome) and str(tmp_path / "orlib" / "cap71.txt") in str(outcome)


def test_orlib_tests_fail_in_a_checkout_without_the_data(tmp_path: Path) -> None:
    """This very file, run where data/orlib does not exist: its OR-Library tests fail, none skips."""
    copy = tmp_path / "tests" / "scheduling" / "test_placement_orlib.py"  # ORLIB = parents[2] / "data" / "orlib"
    copy.parent.mkdir(parents=True)
    copy.write_text(Path(__file__).read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", "-k", "exact_reproduces_orlib or shipped_orlib or capa_format_file or ship_with",
         "-o", "addopts=", str(copy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")]))},
    )
    summary = proc.stdout.strip().splitlines()[-1]
    n = len(OPTIMA)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert re.fullmatch(rf"{2 * n + 3 + 1} failed, \d+ deselected in .*", summary), proc.stdout[-2000:]  # no skip, no pass
    assert "OR-Library data missing" in proc.stdout


@pytest.mark.parametrize("name", sorted(OPTIMA))
def test_cli_reproduces_every_shipped_orlib_optimum(name: str) -> None:
    proc = ecd("placement", "solve", "--orlib", str(orlib_file(name)), "--method", "exact", "--json")
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout)["total_cost"] - OPTIMA[name]) / OPTIMA[name] <= 1e-6


def capa_format(source: Path, target: Path) -> Path:
    """A file in the format of OR-Library's large capa-capc instances, made from a small one: the word
    'capacity' in the capacity column, each customer's costs wrapped seven to a line."""
    tokens = source.read_text().split()
    m, n = int(tokens[0]), int(tokens[1])
    lines = [f" {m} {n}"]
    lines += [f" capacity {tokens[2 + 2 * j + 1]}" for j in range(m)]
    rest = tokens[2 + 2 * m :]
    for i in range(n):
        record = rest[i * (m + 1) : (i + 1) * (m + 1)]
        lines.append(f" {record[0]}")
        lines += [" " + " ".join(record[1 + k : 1 + k + 7]) for k in range(0, m, 7)]
    target.write_text("\n".join(lines) + "\n")
    return target


@pytest.mark.parametrize("name", ["cap71", "cap101", "cap134"])
def test_cli_reproduces_the_optimum_from_a_capa_format_file(tmp_path: Path, name: str) -> None:
    path = capa_format(orlib_file(name), tmp_path / f"{name}_capa.txt")
    assert "capacity" in path.read_text()
    proc = ecd("placement", "solve", "--orlib", str(path), "--method", "exact", "--json")
    assert proc.returncode == 0, proc.stderr
    assert abs(json.loads(proc.stdout)["total_cost"] - OPTIMA[name]) / OPTIMA[name] <= 1e-6
    a, b = read_orlib(path), read_orlib(orlib_file(name))
    assert np.array_equal(a.activation_cost, b.activation_cost) and np.array_equal(a.service_cost, b.service_cost)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "line 1: the file ends where the number of sites m"),
        ("2.5 1\n", "line 1: the number of sites m (first line: 'm n'): expected a whole number >= 1, got '2.5'"),
        ("2 1\n 0 10\n 0 twenty\n 1 5 6\n", "line 3: the fixed cost of site 2: expected a number, got 'twenty'"),
        ("2 1\n 0 10\n cap 20\n 1 5 6\n", "line 3: the capacity of site 2 (a number or the word 'capacity'): expected a number, got 'cap'"),
        ("2 1\n 0 10\n 0 20\n 1 5\n nan\n", "line 5: the cost of serving customer 1 from site 2: expected a finite number >= 0, got 'nan'"),
        ("2 1\n 0 10\n 0 -20\n 1 5 6\n", "line 3: the fixed cost of site 2: expected a finite number >= 0, got '-20'"),
        ("2 1\n 0 10\n 0 20\n 1 5\n", "line 4: the file ends where the cost of serving customer 1 from site 2 was expected"),
        ("2 1\n 0 10\n 0 20\n 1 5 6\n 7\n", "line 5: unexpected '7' after the last customer"),
    ],
)
def test_malformed_orlib_files_name_the_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(PlacementError) as e:
        read_orlib(path)
    assert str(e.value).startswith(f"{path}, line ") and needle in str(e.value) and "\n" not in str(e.value)
    proc = ecd("placement", "solve", "--orlib", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and needle in proc.stderr
