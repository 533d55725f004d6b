"""The mutation gate's allow-list rules (tools/mutation.py): a rule stands for many survivors at once,
so it must match only what it says (a change of letter case in SQL text; a changed default of a
parameter the function never reads), nothing else: a false "equivalent" hides a real bug."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "tools" / "mutation.py"
spec = importlib.util.spec_from_file_location("mutation_tool", PATH)
mutation = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mutation  # its dataclasses look their module up
spec.loader.exec_module(mutation)


@pytest.mark.parametrize("before, after", [
    ('self._db.execute("PRAGMA journal_mode=WAL")', 'self._db.execute("pragma journal_mode=wal")'),
    ('"WHERE edges.owner = excluded.owner OR edges.owner = \'\'",', '"where edges.owner = excluded.owner or edges.owner = \'\'",'),
    ('n = self._execute("UPDATE edges SET x = 0 WHERE edge_id = ?", (e,))', 'n = self._execute("UPDATE EDGES SET X = 0 WHERE EDGE_ID = ?", (e,))'),
    ('"AND device_id = ? AND answered = 0",', '"and device_id = ? and answered = 0",'),
    ('"last_seen_unix = excluded.last_seen_unix, "', '"LAST_SEEN_UNIX = EXCLUDED.LAST_SEEN_UNIX, "'),
])
def test_sql_case_matches_a_case_change_of_sql(before: str, after: str) -> None:
    assert mutation.sql_case_only(before, after)


@pytest.mark.parametrize("before, after", [
    ('self._params.get("password")', 'self._params.get("PASSWORD")'),  # not SQL: a key
    ('x("SELECT a FROM t", "password")', 'x("select a from t", "PASSWORD")'),  # SQL, and a key beside it
    ('x("SELECT a FROM t WHERE b = \'Yes\'")', 'x("select a from t where b = \'yes\'")'),  # quoted text
    ('self._db.execute("ROLLBACK")', 'self._db.execute("XXROLLBACKXX")'),  # not only case
    ('self._db.execute("ROLLBACK")', 'self._db.execute(None)'),
    ('x("SELECT a FROM t", b)', 'x("select a from t", c)'),  # code beside it changed too
    ('x("SELECT a")', 'x("SELECT a")'),
    ('raise E("select a device and a split from the list")', 'raise E("SELECT A DEVICE AND A SPLIT FROM THE LIST")'),  # English
    ('x("SELECT pg_advisory_xact_lock(%s)")', 'x("SELECT PG_ADVISORY_XACT_LOCK(%S)")'),  # a placeholder
    ('x("SELECT a FROM t WHERE id = :deviceId")', 'x("select a from t where id = :deviceid")'),  # a named parameter
])
def test_sql_case_matches_nothing_else(before: str, after: str) -> None:
    assert not mutation.sql_case_only(before, after)


def test_a_rule_never_explains_a_mutant_no_test_reaches() -> None:
    rule = {"rule": "sql-case", "reason": "r"}
    v = mutation.Survivor("m", "f.py", 1, "g", 'x("SELECT a")', 'x("select a")')
    assert mutation.explains(rule, v)
    v.why = "no test reaches it"
    assert not mutation.explains(rule, v)


def test_the_allow_list_loads_and_names_only_known_rules(tmp_path: Path) -> None:
    assert any(e.get("rule") == "sql-case" for e in mutation.load_allow_list(mutation.ALLOW_LIST))
    bad = tmp_path / "allow.toml"
    bad.write_text('[[equivalent_rule]]\nrule = "anything-goes"\nreason = "no"\n')
    with pytest.raises(SystemExit, match="anything-goes"):
        mutation.load_allow_list(bad)


def test_unread_default_matches_only_a_default_the_body_never_reads(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "def exact(inst, seed: int = 0, limit: float = 60.0):\n"
        "    return inst * limit\n\n\n"
        "class C:\n"
        "    def run(self, seed=0):\n"
        "        return seed\n"
    )

    def survivor(function: str, before: str, after: str) -> object:
        return mutation.Survivor("k", "m.py", 1, function, before, after)

    head = "def exact(inst, seed: int = 0, limit: float = 60.0):"
    assert mutation.unread_default(survivor("exact", head, head.replace("seed: int = 0", "seed: int = 1")), tmp_path)
    assert not mutation.unread_default(survivor("exact", head, head.replace("60.0", "61.0")), tmp_path)  # limit is read
    assert not mutation.unread_default(survivor("exact", head, head.replace("seed: int = 0", "seed: int = 1").replace("60.0", "61.0")), tmp_path)
    assert not mutation.unread_default(survivor("C.run", "def run(self, seed=0):", "def run(self, seed=1):"), tmp_path)  # read
    assert not mutation.unread_default(survivor("missing", head, head.replace("= 0", "= 1")), tmp_path)
    # the body's own `seed=0` is behaviour (a method that ignores its seed and hard-codes one), not a default
    body = "    rng = np.random.default_rng(seed=0)"
    assert not mutation.unread_default(survivor("exact", body, body.replace("seed=0", "seed=1")), tmp_path)
    (tmp_path / "f.py").write_text("def f(a, seed=0):\n    return locals()['seed'] + a\n")
    reads_frame = mutation.Survivor("k", "f.py", 1, "f", "def f(a, seed=0):", "def f(a, seed=1):")
    assert not mutation.unread_default(reads_frame, tmp_path)


def test_a_rule_applies_only_to_the_files_it_names() -> None:
    rule = {"rule": "sql-case", "reason": "r", "files": ["cloud_server/registry.py"]}
    inside = mutation.Survivor("m", "cloud_server/registry.py", 1, "g", 'x("SELECT a")', 'x("select a")')
    elsewhere = mutation.Survivor("m", "cloud_server/panel.py", 1, "g", 'x("SELECT a")', 'x("select a")')
    assert mutation.explains(rule, inside) and not mutation.explains(rule, elsewhere)


def kept_copy(tmp_path: Path) -> tuple[Path, Path, "mutation.Group"]:
    """A checkout (no git: every file counts) and a kept copy of one group's run with three verdicts."""
    root, work = tmp_path / "root", tmp_path / "kept" / "g"
    for base in (root, work):
        (base / "pkg").mkdir(parents=True)
        (base / "pkg" / "m.py").write_text("def f():\n    return 1\n")
        (base / "ecd").mkdir()
        (base / "ecd" / "other.py").write_text("X = 1\n")
        (base / "tests").mkdir()
        (base / "tests" / "test_m.py").write_text("def test_f():\n    assert True\n")
    (work / "mutants" / "pkg").mkdir(parents=True)
    (work / "mutants" / "ecd").mkdir()
    (work / "mutants" / "ecd" / "other.py").write_text("X = 1\n")
    codes = {"pkg.m.x_f__mutmut_1": 1, "pkg.m.x_f__mutmut_2": 0, "pkg.m.x_f__mutmut_3": 33, "pkg.m.x_f__mutmut_4": None}
    (work / "mutants" / "pkg" / "m.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    group = mutation.Group(("pkg/m.py",), ("tests/test_m.py",))
    (work / "setup.cfg").write_text(mutation.mutmut_config(group, list(group.tests)))
    fingerprint = {"test_execution": "a", "test_selection": mutation.selection_hash(list(group.tests)), "timeout": "b"}
    (work / "mutants" / "mutmut-stats.json").write_text(json.dumps({"config_fingerprint": fingerprint, "duration_by_test": {}}))
    return root, work, group


def test_a_recheck_reruns_only_the_survivors_with_the_tree_as_it_is_now(tmp_path: Path) -> None:
    root, work, group = kept_copy(tmp_path)
    (root / "ecd" / "other.py").write_text("X = 2\n")  # a module the mutated one uses: the tests run today's
    (work / "ecd" / "gone.py").write_text("")
    (work / "mutants" / "ecd" / "gone.py").write_text("")
    (root / "tests" / "test_new.py").write_text("def test_more():\n    assert 1 == 1\n")
    (root / "tests" / "test_m.py").write_text("def test_f():\n    assert 1\n")
    mutation.refresh_tree(root, work, group, "g")
    assert (work / "tests" / "test_new.py").read_text() == (root / "tests" / "test_new.py").read_text()
    assert (work / "tests" / "test_m.py").read_text() == "def test_f():\n    assert 1\n"
    assert (work / "mutants" / "tests" / "test_new.py").exists()
    assert (work / "ecd" / "other.py").read_text() == (work / "mutants" / "ecd" / "other.py").read_text() == "X = 2\n"
    assert not (work / "ecd" / "gone.py").exists() and not (work / "mutants" / "ecd" / "gone.py").exists()
    assert (work / "setup.cfg").exists()  # the tool's own, no file of the tree: the recheck reads and rewrites it
    assert mutation.reset_survivors(work, group, "g") == (2, 1)  # and the one a stopped run never ran: mutmut runs it
    codes = json.loads((work / "mutants" / "pkg" / "m.py.meta").read_text())["exit_code_by_key"]
    assert codes == {"pkg.m.x_f__mutmut_1": 1, "pkg.m.x_f__mutmut_2": None, "pkg.m.x_f__mutmut_3": None, "pkg.m.x_f__mutmut_4": None}


def test_a_recheck_takes_the_groups_added_tests_and_keeps_the_verdicts(tmp_path: Path) -> None:
    root, work, group = kept_copy(tmp_path)
    grown = replace(group, tests=("tests/test_m.py", "tests/test_new.py"))
    mutation.widen_tests(work, grown, list(grown.tests), "g")
    assert (work / "setup.cfg").read_text() == mutation.mutmut_config(grown, list(grown.tests))
    # mutmut compares this hash with its own of the new list: another would make it rerun every mutant
    stats = json.loads((work / "mutants" / "mutmut-stats.json").read_text())
    assert stats == {"config_fingerprint": {"test_execution": "a", "timeout": "b",
                                            "test_selection": mutation.selection_hash(["tests/test_m.py", "tests/test_new.py"])},
                     "duration_by_test": {}}
    with pytest.raises(mutation.GroupError, match=r"^g: tests left the group since the kept run \(tests/test_m.py\); run the group in full$"):
        mutation.widen_tests(work, replace(group, tests=("tests/test_new.py",)), ["tests/test_new.py"], "g")


def test_the_test_list_hash_is_mutmuts_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configuration = pytest.importorskip("mutmut.configuration")
    tests = ["tests/test_m.py", "tests/integration"]
    (tmp_path / "setup.cfg").write_text(mutation.mutmut_config(mutation.Group(("pkg/m.py",), tuple(tests)), tests))
    monkeypatch.chdir(tmp_path)
    configuration.reset_config()
    try:
        assert configuration.config().config_fingerprint()["test_selection"] == mutation.selection_hash(tests)
    finally:
        configuration.reset_config()


def test_a_recheck_is_refused_where_its_verdicts_no_longer_hold(tmp_path: Path) -> None:
    root, work, group = kept_copy(tmp_path)
    (root / "tests" / "test_m.py").unlink()
    with pytest.raises(mutation.GroupError, match=r"^g: test files removed since the kept run \(tests/test_m.py\)"):
        mutation.refresh_tree(root, work, group, "g")
    with pytest.raises(mutation.GroupError, match=r"^g: no kept copy in .*nowhere/g \(run the group with --keep first\)$"):
        mutation.kept_copy(tmp_path / "nowhere", "g")
    assert mutation.kept_copy(work.parent, work.name) == work
    (work / "mutants" / "pkg" / "m.py.meta").unlink()
    with pytest.raises(mutation.GroupError, match=r"^g: the kept run has no results for pkg/m.py"):
        mutation.reset_survivors(work, group, "g")


def test_a_report_scores_a_kept_run_without_running_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "codec"
    (work / "mutants" / "ecd").mkdir(parents=True)
    (work / "ecd").mkdir()
    (work / "ecd" / "codec.py").write_text("def f():\n    return 1\n")
    codes = {f"ecd.codec.x_f__mutmut_{i}": 1 for i in range(1, 5)}
    (work / "mutants" / "ecd" / "codec.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    assert mutation.main(["--module", "codec", "--report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[codec] ecd/codec.py: 4/4 killed, 100.0 %" in out and "ok: every module >= 85 %" in out
    with pytest.raises(SystemExit):  # a report, a recheck and a kept run exclude each other
        mutation.main(["--module", "codec", "--report", str(tmp_path), "--keep", str(tmp_path)])
    assert mutation.main(["--module", "edge", "--report", str(tmp_path)]) == 1  # nothing kept for it
    assert "ERROR edge: no kept copy in" in capsys.readouterr().out


def test_a_file_named_is_mutated_alone_with_its_groups_tests() -> None:
    def error(message: str):
        raise SystemExit(message)

    edge = mutation.GROUPS["edge"]
    one = mutation.choose(["edge_node/link.py"], error)
    assert one == {"edge": replace(edge, files=("edge_node/link.py",))}
    two = mutation.choose(["edge_node/link.py", "edge_node/core.py"], error)
    assert two == {"edge": replace(edge, files=("edge_node/core.py", "edge_node/link.py"))}  # the group's order
    for wanted in (["edge", "edge_node/link.py"], ["edge_node/link.py", "edge"]):
        assert mutation.choose(wanted, error) == {"edge": edge}
    assert list(mutation.choose(["auth", "codec", "auth"], error)) == ["auth", "codec"]
    with pytest.raises(SystemExit, match="--module 'nope': expected one of codec"):
        mutation.choose(["nope"], error)


def test_a_recheck_takes_a_changed_mutated_file_for_mutmut_to_mutate_again(tmp_path: Path) -> None:
    root, work, group = kept_copy(tmp_path)
    (work / "mutants" / "pkg" / "m.py").write_text("# the kept run's mutants\n")
    (root / "pkg" / "m.py").write_text("def f():\n    return 2\n")
    assert mutation.refresh_tree(root, work, group, "g") == ["pkg/m.py"]
    assert (work / "pkg" / "m.py").read_text() == "def f():\n    return 2\n"
    # mutmut mutates a source again only when it is newer than its mutants
    assert (work / "pkg" / "m.py").stat().st_mtime > (work / "mutants" / "pkg" / "m.py").stat().st_mtime
    assert not (work / "mutants" / "mutmut-stats.json").exists()  # every test mapped anew
    assert mutation.refresh_tree(root, work, group, "g") == []  # taken: nothing changed since


def test_mutmut_mutating_a_changed_file_again_keeps_the_verdicts_of_its_unchanged_functions(tmp_path: Path, monkeypatch) -> None:
    """What the recheck of a changed file relies on, pinned against the mutmut installed."""
    configuration = pytest.importorskip("mutmut.configuration")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "mutants" / "pkg").mkdir(parents=True)
    (tmp_path / "setup.cfg").write_text("[mutmut]\nsource_paths=pkg\n")
    source = tmp_path / "pkg" / "m.py"
    source.write_text("def f(a):\n    return a + 1\n\n\ndef g(a):\n    return a * 2\n")
    monkeypatch.chdir(tmp_path)
    configuration.reset_config()
    try:
        from mutmut.__main__ import create_mutants_for_file

        meta = tmp_path / "mutants" / "pkg" / "m.py.meta"
        create_mutants_for_file(Path("pkg/m.py"), Path("mutants/pkg/m.py"))
        verdicts = json.loads(meta.read_text())
        verdicts["exit_code_by_key"] = dict.fromkeys(verdicts["exit_code_by_key"], 1)  # all killed
        meta.write_text(json.dumps(verdicts))
        source.write_text("def f(a):\n    return a + 1\n\n\ndef g(a):\n    return a * 3\n")
        os.utime(source, (time.time() + 5, time.time() + 5))
        create_mutants_for_file(Path("pkg/m.py"), Path("mutants/pkg/m.py"))
        codes = json.loads(meta.read_text())["exit_code_by_key"]
    finally:
        configuration.reset_config()
    assert {k for k, v in codes.items() if v == 1} == {k for k in codes if ".x_f__" in k} != set()
    assert {k for k, v in codes.items() if v is None} == {k for k in codes if ".x_g__" in k} != set()
