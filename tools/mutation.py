#!/usr/bin/env python3
"""Mutation testing gate (issue 19): do the tests fail when an important behaviour breaks?

Small deliberate bugs ("mutants") are put into the core modules, one at a time, by mutmut 3; a
mutant that no test notices "survives". This script prints, per module, how many mutants there
were, how many the tests killed, how many survived, how many are known to be equivalent (listed
with a reason in ``tools/mutation_equivalent.toml``), and the score
``killed / (mutants - equivalent)``; then every survivor with its file:line and the mutation. It
exits 1 when a module scores below 85 % or all of them together below 90 %.

Why mutmut 3 and not cosmic-ray 8: cosmic-ray writes each mutant to disk and starts a fresh test
process for it, with many operators (every binary operator replaced by every other one): 2,393
mutants for scheduling/allocation/tapp.py alone, some hours here. mutmut 3 compiles every mutant of
a file into it at once, switches between them at run time, forks each run from a warm test process
and runs only the mapped tests that reach the mutated function: about 8,000 mutants in all.

How it keeps the checkout clean: each module group is tested in a fresh temporary copy of the tree
(the files git tracks or would add), where mutmut writes its ``mutants/`` folder; the copy is removed
when the group ends, on an error or an interrupt too. Nothing under the checkout is written.

Each group runs only its own tests (``GROUPS`` below): a mutant is judged by the tests that are meant
to pin its module, so a run stays within reasonable time. Test files named there that do not exist
(yet) are left out, and said so.

Logging calls (``log.info(...)`` and the like) are not mutated, as PIT does by default: what a log
line says is no contract of the module.

Why the gate once "could not target" the services, the policy and the records (issue 28): no group
named them, and the security matrix (tests/integration/test_security.py) compares its table with
README.md's, which was not copied into mutmut's ``mutants/`` folder: the tests failed on the
unmutated copy ("failed to collect stats"). README.md is copied now (``ALSO_COPY``), and nothing in
those modules is skipped: mutmut 3 mutates async servicers, async generators and the interceptor as
they are. One limit stays: mutmut maps a function to the tests that were running when it was
called, so a function reached only while a module-scoped fixture is built (a server's constructor)
is judged by the first test that built it alone. Tests that pin such code start their own server
(tests/ecd/transport/test_auth.py does).

A full run of every group takes hours on two cores. ``--keep DIR`` keeps each group's copy, and
``--recheck DIR`` then brings that copy up to date with the checkout and reruns only its survivors:
minutes instead of an hour for a group whose tests were extended. It refuses when a mutated file
changed or a test file was removed since; a killed mutant keeps its verdict, so a test weakened in
place is not noticed, and mutmut maps only new test functions (extend by adding them): the figure that
counts is a full run's, and a recheck's report says it is one.

``--report DIR`` prints a kept run's scores against the current allow-list without running anything.

``--module`` names a group, or one of its files: a file named is mutated alone, against its group's
tests (``--module edge_node/service.py``: the services group without the cloud's).

Usage: ``python tools/mutation.py [--module NAME]... [--jobs N] [--root PATH] [--keep DIR | --recheck DIR | --report DIR]``
or ``make mutation``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOW_LIST = Path(__file__).with_name("mutation_equivalent.toml")

MODULE_MIN = 0.85
OVERALL_MIN = 0.90


@dataclass(frozen=True)
class Group:
    """Source files mutated together, and the tests that must notice."""

    files: tuple[str, ...]
    tests: tuple[str, ...]
    timeout_s: int = 120  # a test stuck (e.g. on a queue that never drains) fails after this


GROUPS: dict[str, Group] = {
    "codec": Group(("ecd/codec.py",), ("tests/ecd/test_codec.py", "tests/ecd/test_codec_and_proto.py", "tests/ecd/transport/test_serde.py")),
    "partition": Group(
        ("ecd/partition.py", "ecd/manifest.py"),
        (
            "tests/ecd/test_partition.py",
            "tests/ecd/test_manifest.py",
            "tests/ecd/test_block_runner.py",
            "tests/ecd/test_partition_sessions.py",
        ),
    ),
    "distribution": Group(("ecd/distribution.py",), ("tests/ecd/test_distribution.py", "tests/edge_node/test_backpressure.py")),
    "split": Group(("ecd/split.py", "ecd/leakage.py"), ("tests/ecd/test_split.py", "tests/ecd/test_split_checks.py", "tests/ecd/test_split_values.py",
                                                       "tests/ecd/test_leakage_values.py")),
    "placement": Group(
        (
            "scheduling/placement/heuristics.py",
            "scheduling/placement/baselines.py",
            "scheduling/placement/exact.py",
            "scheduling/placement/problem.py",
        ),
        ("tests/scheduling/test_placement_orlib.py", "tests/scheduling/test_placement_exact.py",
         "tests/scheduling/test_placement_heuristics.py", "tests/scheduling/test_placement_tours.py",
         "tests/scheduling/test_placement_io.py", "tests/scheduling/test_placement_quality.py"),
        timeout_s=30,  # its slowest test takes 4 s; a mutated 2-opt that never stops must not cost 120 s
    ),
    "allocation": Group(
        ("scheduling/allocation/tapp.py", "scheduling/allocation/tapp_model.py", "scheduling/allocation/tapp_phases.py",
         "scheduling/allocation/tapp_exact.py", "scheduling/allocation/tapp_plus.py", "scheduling/allocation/coverage.py"),
        ("tests/scheduling/test_allocation_tapp.py", "tests/scheduling/test_allocation_coverage.py",
         "tests/scheduling/test_allocation_io.py", "tests/scheduling/test_allocation_values.py",
         "tests/scheduling/test_tapp_exact_values.py", "tests/scheduling/test_tapp_plus_values.py",
         "tests/scheduling/test_coverage_values.py"),
        timeout_s=40,  # its slowest test takes 8 s; a mutated local search that never stops must not cost 120 s
    ),
    "quality": Group(
        ("scheduling/quality/crowdpower.py",),
        ("tests/scheduling/test_quality.py", "tests/scheduling/test_crowdpower_quality_values.py",
         "tests/scheduling/test_crowdpower_site_values.py"),
    ),
    "auth": Group(
        ("ecd/transport/auth.py",),
        ("tests/ecd/transport/test_auth.py", "tests/integration/test_security.py"),
        timeout_s=60,
    ),
    "types": Group(("ecd/types.py",), ("tests/ecd/test_types.py", "tests/edge_node/test_stream_header.py")),
    # the services last: they change most often
    "edge": Group(
        ("edge_node/core.py",),
        ("tests/edge_node", "tests/integration/test_bad_input.py"),
        timeout_s=180,
    ),
    "cloud": Group(
        ("cloud_server/core.py", "cloud_server/devices.py", "cloud_server/assignment.py", "cloud_server/leases.py",
         "cloud_server/edges.py", "cloud_server/live_placement.py", "cloud_server/crowdsensing.py", "cloud_server/served.py"),
        (
            "tests/cloud_server/test_core.py",
            "tests/cloud_server/test_core_control.py",
            "tests/cloud_server/test_core_edges.py",
            "tests/cloud_server/test_core_placement.py",
            "tests/cloud_server/test_core_crowdsensing.py",
            "tests/cloud_server/test_core_heads.py",
            "tests/cloud_server/test_leader.py",
            "tests/cloud_server/test_campaigns.py",
            "tests/cloud_server/test_heads_and_registry.py",
            "tests/cloud_server/test_placement_service.py",
            "tests/cloud_server/test_edge_ownership.py",
            "tests/cloud_server/test_leases.py",
            "tests/cloud_server/test_sites.py",
            "tests/cloud_server/test_writers.py",
            "tests/integration/test_bad_input.py",
        ),
        timeout_s=180,
    ),
    "services": Group(
        ("edge_node/service.py", "cloud_server/service.py", "cloud_server/scheduler_service.py"),
        ("tests/edge_node", "tests/cloud_server/test_service_operator.py", "tests/integration/test_security.py",
         "tests/integration/test_bad_input.py"),
        timeout_s=180,
    ),
    "registry": Group(
        ("cloud_server/registry.py", "cloud_server/registry_db.py", "cloud_server/registry_records.py",
         "cloud_server/registry_schema.py"),
        ("tests/cloud_server/test_registry_backends.py", "tests/cloud_server/test_heads_and_registry.py",
         "tests/cloud_server/test_registry_values.py", "tests/cloud_server/test_registry_tables.py",
         "tests/cloud_server/test_registry_migrations.py"),
    ),
}

# the packages copied into mutmut's mutants/ folder (only the group's files are mutated there)
PACKAGES = ("ecd", "ecd_cli", "device_agent", "edge_node", "cloud_server", "scheduling", "models", "research")
# other folders and files the tests read (the security matrix checks README.md's authorization table)
ALSO_COPY = ("data", "proto", "deploy", "benchmarks", "docs", "README.md")
NOT_MUTATED_LINES = (r"^\s*(log|logger|logging)\.(debug|info|warning|error|exception|critical)\(",)

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code)
# a failing test, a timeout or a crash (-11 SIGSEGV, -9 SIGKILL, -6 SIGABRT: onnxruntime aborts the
# process on a setting it rejects, e.g. a mutated session config value): noticed
KILLED_CODES = {1, 3, 36, -24, 24, 152, 255, -11, -9, -6}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}  # no mapped test reaches the function: survives as far as the gate goes


@dataclass
class Survivor:
    name: str
    file: str
    line: int
    function: str
    before: str
    after: str
    why: str = "survived"  # or "no test reaches it"


@dataclass
class FileScore:
    file: str
    mutants: int = 0
    killed: int = 0
    survivors: list[Survivor] = field(default_factory=list)
    equivalent: list[tuple[Survivor, str]] = field(default_factory=list)

    @property
    def survived(self) -> int:
        return len(self.survivors)

    @property
    def score(self) -> float:
        judged = self.mutants - len(self.equivalent)
        return self.killed / judged if judged else 1.0


class GroupError(RuntimeError):
    pass


# --- the copy --------------------------------------------------------------------------------


def tree_files(root: Path) -> list[str]:
    """The files of the working tree: tracked, and untracked but not ignored (new tests included)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True, capture_output=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", ".cache", "results", "__pycache__", ".hypothesis", ".pytest_cache"}
        return [
            str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not any(part in skip or part.startswith(".venv") for part in p.relative_to(root).parts)
        ]
    return [f for f in out.decode().split("\0") if f and (root / f).is_file()]


def make_copy(root: Path, dest: Path) -> None:
    for rel in tree_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def mutmut_config(group: Group, tests: list[str]) -> str:
    def block(key: str, values) -> str:
        return f"{key} =\n" + "".join(f"    {v}\n" for v in values)

    return (
        "[mutmut]\n"
        + block("source_paths", PACKAGES)
        + block("only_mutate", group.files)
        + block("also_copy", ALSO_COPY)
        + block("pytest_add_cli_args_test_selection", tests)
        + block("pytest_add_cli_args", ["-p", "no:cacheprovider", f"--timeout={group.timeout_s}"])
        + block("do_not_mutate_patterns", NOT_MUTATED_LINES)
        # grpc servers run in threads: fork workers from a clean server process, not the stats run
        + "process_isolation = forkserver\n"
        + "use_git_change_detection = false\n"
    )


# --- one group -------------------------------------------------------------------------------


def run_group(name: str, group: Group, root: Path, jobs: int, verbose: bool,
              keep: Path | None = None, recheck: Path | None = None) -> list[FileScore]:
    """Mutate the group's files in a fresh copy and run their tests; the copy is removed after, unless
    ``keep`` names a folder for it. ``recheck`` names such a folder instead: its survivors are run again
    against the tests as they are now, and its killed mutants keep their verdicts."""
    tests = [t for t in group.tests if (root / t).exists()]
    missing = [t for t in group.tests if t not in tests]
    if missing:
        print(f"[{name}] not in this tree, left out: {', '.join(missing)}", flush=True)
    if not tests:
        raise GroupError(f"{name}: none of its tests exist ({', '.join(group.tests)})")
    if recheck is not None:
        work = kept_copy(recheck, name)
        refresh_tree(root, work, group, name)
        (work / "setup.cfg").write_text(mutmut_config(group, tests))  # a changed test list makes mutmut rerun all
        print(f"[{name}] rechecking {reset_survivors(work, group, name)} survivors of the kept run against the tests as they are now",
              flush=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"ecd-mutation-{name}-")) if keep is None else keep / name
        if keep is not None:
            remove(work)
            work.mkdir(parents=True)
    try:
        if recheck is None:
            make_copy(root, work)
            (work / "setup.cfg").write_text(mutmut_config(group, tests))
            # it must exist before Python starts: a PYTHONPATH entry missing at start-up is cached as
            # absent, and the tests would then import the checkout instead of the mutants
            (work / "mutants").mkdir()
        env = dict(os.environ)
        # subprocesses the tests start import the mutated copy too, not the editable checkout
        env["PYTHONPATH"] = os.pathsep.join([str(work / "mutants"), *filter(None, [env.get("PYTHONPATH")])])
        env.pop("MUTANT_UNDER_TEST", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        log_path = work / "mutmut.log"
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            # its own session: mutmut forks a server and workers; all of them go when the group ends
            proc = subprocess.Popen(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)],
                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
            try:
                proc.wait()
            finally:
                end_session(proc)
        text = log_path.read_text(errors="replace").replace("\r", "\n")
        if verbose:
            print(text)
        if proc.returncode != 0 or "Failed to run clean test" in text or "failed to collect stats" in text:
            lines = [line for line in text.splitlines() if line.strip() and not SPINNER.match(line)]
            tail = "\n".join(lines[-40:])
            raise GroupError(f"{name}: mutmut failed (exit {proc.returncode}); the tests may fail on the unmutated tree:\n{tail}")
        scores = [score_file(work, f, name) for f in group.files]
        print(f"[{name}] {sum(s.mutants for s in scores)} mutants in {time.monotonic() - t0:.0f} s", flush=True)
        return scores
    finally:
        if keep is None and recheck is None:
            remove(work)
        else:
            print(f"[{name}] the copy is kept in {work}", flush=True)


def kept_copy(kept: Path, name: str) -> Path:
    """Group ``name``'s copy that ``--keep`` left under ``kept``; refused where there is none."""
    work = kept / name
    if not (work / "mutants").is_dir():
        raise GroupError(f"{name}: no kept copy in {work} (run the group with --keep first)")
    return work


def refresh_tree(root: Path, work: Path, group: Group, name: str) -> None:
    """Bring a kept copy up to date with the checkout (tests, the other modules, data), refusing
    where its verdicts would no longer hold: a mutated file that changed (its mutants are not the
    file's any more), or a test file removed (it may be what killed some). Tests added only kill
    more. Not caught: a test weakened in place, or a test function extended in place (mutmut maps
    only new test names to the functions they reach, so extend by adding test functions); that is
    why a recheck never replaces the full run before a release."""
    for rel in group.files:
        if (root / rel).read_bytes() != (work / rel).read_bytes():
            raise GroupError(f"{name}: {rel} changed since the kept run; its mutants are stale: run the group in full")
    now = set(tree_files(root))
    kept = {str(p.relative_to(work)) for p in work.rglob("*")
            if p.is_file() and p.relative_to(work).parts[0] != "mutants" and "__pycache__" not in p.parts}
    gone = sorted(rel for rel in kept - now if rel.startswith("tests/"))
    if gone:
        raise GroupError(f"{name}: test files removed since the kept run ({', '.join(gone[:3])}); run the group in full")
    in_mutants = PACKAGES + ALSO_COPY + ("tests",)
    for rel in sorted(kept - now):  # other files gone: gone from the copy too
        for base in (work, work / "mutants"):
            (base / rel).unlink(missing_ok=True)
    for rel in sorted(now - set(group.files)):
        targets = [work / rel] + ([work / "mutants" / rel] if rel.split("/", 1)[0] in in_mutants else [])
        for target in targets:
            if target.exists() and target.read_bytes() == (root / rel).read_bytes():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)  # a fresh file, never one shared with another copy
            shutil.copy2(root / rel, target)


def reset_survivors(work: Path, group: Group, name: str) -> int:
    """Mark the kept run's survivors (and mutants no test reached) as not yet run; return how many."""
    count = 0
    for rel in group.files:
        meta_path = work / "mutants" / (rel + ".meta")
        if not meta_path.exists():
            raise GroupError(f"{name}: the kept run has no results for {rel}; run the group in full")
        meta = json.loads(meta_path.read_text())
        codes = meta["exit_code_by_key"]
        for key, code in codes.items():
            if code in SURVIVED_CODES | NO_TESTS_CODES:
                codes[key] = None
                count += 1
        meta_path.write_text(json.dumps(meta, indent=4))
    return count


def end_session(proc: subprocess.Popen) -> None:
    """Kill mutmut and every process it started (its fork server and workers), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def remove(work: Path) -> None:
    """Remove the copy; a straggler that was still writing into it gets a few more tries."""
    for _ in range(50):
        shutil.rmtree(work, ignore_errors=True)
        if not work.exists():
            return
        time.sleep(0.1)
    print(f"warning: could not remove {work}", file=sys.stderr)


def score_file(work: Path, rel: str, group: str) -> FileScore:
    meta_path = work / "mutants" / (rel + ".meta")
    if not meta_path.exists():
        raise GroupError(f"{group}: mutmut left no results for {rel}")
    codes: dict[str, int | None] = json.loads(meta_path.read_text())["exit_code_by_key"]
    unchecked = [k for k, c in codes.items() if c is None]
    if unchecked:
        raise GroupError(f"{group}: {len(unchecked)} mutants of {rel} were not run (e.g. {unchecked[0]})")
    score = FileScore(rel, mutants=len(codes))
    left = {k: c for k, c in codes.items() if c not in KILLED_CODES}
    score.killed = score.mutants - len(left)
    strange = {k: c for k, c in left.items() if c not in SURVIVED_CODES | NO_TESTS_CODES}
    if strange:
        raise GroupError(f"{group}: mutants of {rel} with unexpected outcomes: {strange}")
    diffs = mutant_diffs(work, sorted(left))
    source = (work / rel).read_text()
    for key in sorted(left, key=mutant_order):
        s = describe(key, diffs[key], rel, source)
        if left[key] in NO_TESTS_CODES:
            s.why = "no test reaches it"
        score.survivors.append(s)
    score.survivors.sort(key=lambda v: v.line)
    return score


def mutant_order(key: str) -> tuple[str, int]:
    head, _, n = key.rpartition("__mutmut_")
    return head, int(n) if n.isdigit() else 0


def mutant_diffs(work: Path, keys: list[str]) -> dict[str, str]:
    """Each mutant's unified diff against its function, as ``mutmut show`` prints it."""
    if not keys:
        return {}
    code = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        "print(json.dumps({k: get_diff_for_mutant(k) for k in json.load(sys.stdin)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, input=json.dumps(keys), capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout)
    out = {}
    for k in keys:  # the slow, public way
        out[k] = subprocess.run([sys.executable, "-m", "mutmut", "show", k], cwd=work, capture_output=True, text=True).stdout
    return out


def function_of(key: str) -> str:
    """``ecd.codec.x_decode__mutmut_8`` → ``decode``; ``…xǁCloudLinkǁsubmit__mutmut_3`` → ``CloudLink.submit``."""
    mangled = key.rpartition(".")[2].rpartition("__mutmut_")[0]
    if mangled.startswith("xǁ"):
        _, cls, fn = mangled.split("ǁ", 2)
        return f"{cls}.{fn}"
    return mangled.removeprefix("x_")


def _function_node(source: str, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    nodes: list[ast.AST] = list(ast.parse(source).body)
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        node = next((n for n in nodes if getattr(n, "name", None) == part), None)
        if node is None:
            return None
        if i == len(parts) - 1:
            return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        nodes = list(getattr(node, "body", []))
    return None


def function_start(source: str, qualname: str) -> int:
    """The first line (decorators included) of ``qualname`` in ``source``; 0 if not found."""
    node = _function_node(source, qualname)
    return min([node.lineno, *(d.lineno for d in node.decorator_list)]) if node else 0


HUNK = re.compile(r"^@@ -(\d+)")
SPINNER = re.compile("^[\u2800-\u28ff]")  # mutmut's progress spinner


def describe(key: str, diff: str, rel: str, source: str) -> Survivor:
    fn = function_of(key)
    start = function_start(source, fn)
    line, before, after, old_line = 0, [], [], 0
    for text in diff.splitlines():
        if text.startswith(("---", "+++")):
            continue
        m = HUNK.match(text)
        if m:
            old_line = int(m.group(1))
            continue
        if text.startswith("-"):
            before.append(text[1:].strip())
            line = line or (start + old_line - 1 if start else 0)
            old_line += 1
        elif text.startswith("+"):
            after.append(text[1:].strip())
            line = line or (start + old_line - 1 if start else 0)
        else:
            old_line += 1
    return Survivor(key, rel, line, fn, " / ".join(before), " / ".join(after))


# --- the allow-list --------------------------------------------------------------------------


def normalise(code: str) -> str:
    return re.sub(r"\s+", " ", code).strip()


# SQL text whose letter case a mutant may change: the project writes SQL keywords in capitals (an
# English message's lower-case "and" is no SQL), and an upsert's "excluded." names
SQL_TEXT = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|FROM|WHERE|AND|OR|SET|"
                      r"VALUES|ORDER BY|GROUP BY|LIMIT)\b|\bexcluded\.\w")
STRING = re.compile(r"\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'")


def sql_case_only(before: str, after: str) -> bool:
    """The mutant changed only the letter case of SQL statements (``"SELECT … FROM devices"`` to
    ``"select … from devices"``): every string literal it changed is SQL, holds no quoted text of
    its own, and differs only in case."""
    olds, news = STRING.findall(before), STRING.findall(after)
    if before == after or len(olds) != len(news) or STRING.sub('""', before) != STRING.sub('""', after):
        return False
    changed = [("".join(o), "".join(n)) for o, n in zip(olds, news) if o != n]
    return bool(changed) and all(
        o.lower() == n.lower() and SQL_TEXT.search(o) and not re.search(r"'[^']*[A-Za-z]", o)
        and not re.search(r"%|:\w|\$\$|\{", o)  # placeholders (%s, :name), dollar quotes, f-string fields
        for o, n in changed
    )


def unread_default(v: Survivor, root: Path = ROOT) -> bool:
    """The mutant changed only the default value of a parameter that the function's body never reads
    (``seed: int = 0`` to ``= 1`` in a deterministic method that takes ``seed`` for a common signature)."""
    if v.before == v.after or not v.before.lstrip().startswith(("def ", "async def ")):
        return False  # only the signature line: a keyword argument or assignment in the body is behaviour
    path = root / v.file
    node = _function_node(path.read_text(), v.function) if path.exists() else None
    if node is None:
        return False
    read = {n.id for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    if read & {"locals", "vars", "inspect", "sys"}:
        return False  # the frame's variables may be read without naming them
    params = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
    for name in (p for p in params if p not in read):
        default = re.compile(rf"\b{name}(\s*:\s*[^=,()]+)?\s*=\s*[^,()]+")
        if default.sub(name, v.before) == default.sub(name, v.after):
            return True
    return False


# rules an allow-list entry may name instead of one mutant (``[[equivalent_rule]]``)
RULES = {"sql-case": lambda v: sql_case_only(v.before, v.after), "unread-default": unread_default}


def load_allow_list(path: Path) -> list[dict]:
    """The allow-list's entries: one mutant each (``[[equivalent]]``), or a rule (``[[equivalent_rule]]``)."""
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text())
    entries = data.get("equivalent", [])
    for e in entries:
        missing = {"file", "function", "before", "after", "reason"} - set(e)
        if missing:
            raise SystemExit(f"{path}: entry {e} lacks {', '.join(sorted(missing))}")
    rules = data.get("equivalent_rule", [])
    for r in rules:
        if not {"rule", "reason"} <= set(r) <= {"rule", "reason", "files"} or r["rule"] not in RULES:
            raise SystemExit(f"{path}: rule {r} needs rule (one of {', '.join(RULES)}), reason and optionally files")
    return entries + rules


def explains(entry: dict, v: Survivor) -> bool:
    """Whether an allow-list entry (one mutant, or a rule over the files it names) accounts for ``v``."""
    if v.why != "survived":  # a mutant no test reaches is never equivalent
        return False
    if "rule" in entry:
        return v.file in entry.get("files", [v.file]) and RULES[entry["rule"]](v)
    return (entry["file"], entry["function"]) == (v.file, v.function) and normalise(entry["before"]) == normalise(v.before) \
        and normalise(entry["after"]) == normalise(v.after)


def apply_allow_list(scores: list[FileScore], entries: list[dict]) -> list[dict]:
    """Move survivors the allow-list explains to ``equivalent``; return entries nothing matched."""
    used: set[int] = set()
    for s in scores:
        keep = []
        for v in s.survivors:
            for i, e in enumerate(entries):
                if explains(e, v):
                    s.equivalent.append((v, e["reason"]))
                    used.add(i)
                    break
            else:
                keep.append(v)
        s.survivors = keep
    return [e for i, e in enumerate(entries) if i not in used]


def unmatched(scores: list[FileScore], entries: list[dict]) -> list[dict]:
    """Allow-list entries that explained no survivor of the files checked."""
    used = [v for s in scores for v, _ in s.equivalent]
    return [e for e in entries if "rule" not in e and not any(explains(e, v) for v in used)]


# --- report ----------------------------------------------------------------------------------


def report(scores: list[FileScore], stale: list[dict], checked_files: set[str]) -> bool:
    rows = [("module", "mutants", "killed", "survived", "equivalent", "score")]
    for s in scores:
        rows.append((s.file, str(s.mutants), str(s.killed), str(s.survived), str(len(s.equivalent)), f"{100 * s.score:.1f} %"))
    total = FileScore("overall", sum(s.mutants for s in scores), sum(s.killed for s in scores))
    total.equivalent = [e for s in scores for e in s.equivalent]
    total.survivors = [v for s in scores for v in s.survivors]
    rows.append(("overall", str(total.mutants), str(total.killed), str(total.survived), str(len(total.equivalent)),
                 f"{100 * total.score:.1f} %"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for i, r in enumerate(rows):
        if i == len(rows) - 1:
            print("  ".join("-" * w for w in widths))
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
    if total.survivors:
        print("\nsurvivors (no test failed with this change):")
        for v in total.survivors:
            note = "" if v.why == "survived" else f"  [{v.why}]"
            print(f"  {v.file}:{v.line} {v.function}: {v.before}  ->  {v.after}{note}")
    stale = [e for e in stale if e["file"] in checked_files]
    if stale:
        print(f"\nallow-list entries that matched no survivor ({ALLOW_LIST.name}; remove or fix them):")
        for e in stale:
            print(f"  {e['file']} {e['function']}: {e['before']}  ->  {e['after']}")
    low = [s for s in scores if s.score < MODULE_MIN]
    ok = not low and total.score >= OVERALL_MIN
    print()
    for s in low:
        print(f"FAIL {s.file}: {100 * s.score:.1f} % < {100 * MODULE_MIN:.0f} %")
    if total.score < OVERALL_MIN:
        print(f"FAIL overall: {100 * total.score:.1f} % < {100 * OVERALL_MIN:.0f} %")
    if ok:
        print(f"ok: every module >= {100 * MODULE_MIN:.0f} %, overall {100 * total.score:.1f} % >= {100 * OVERALL_MIN:.0f} %")
    return ok


def choose(wanted: list[str], error) -> dict[str, Group]:
    """The groups to run, by name: a group named runs whole; a file named is mutated alone (with the
    other files named from its group), against its group's tests."""
    chosen: dict[str, Group] = {}
    for want in wanted:
        hits = [g for g, grp in GROUPS.items() if want == g or want in grp.files]
        if not hits:
            error(f"--module {want!r}: expected one of {', '.join(GROUPS)} or one of their files")
        for h in hits:
            whole = GROUPS[h]
            if want == h or chosen.get(h) == whole:
                chosen[h] = whole
            elif want not in (files := chosen[h].files if h in chosen else ()):
                chosen[h] = replace(whole, files=tuple(f for f in whole.files if f in (*files, want)))
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--module", action="append", default=[], metavar="NAME",
                   help=f"a group ({', '.join(GROUPS)}) or one of its files (mutated alone, against the group's tests); repeatable (default: all)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants run at once (default: CPU count)")
    p.add_argument("--root", type=Path, default=ROOT, help="the tree to copy and test (default: this checkout)")
    p.add_argument("--verbose", action="store_true", help="print mutmut's own output")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--keep", type=Path, metavar="DIR", help="keep each group's copy (mutants, verdicts) in DIR/GROUP")
    how.add_argument("--report", type=Path, metavar="DIR",
                     help="print the scores of a run kept with --keep DIR against the current allow-list; runs nothing")
    how.add_argument("--recheck", type=Path, metavar="DIR",
                     help="rerun only the survivors of a run kept with --keep DIR against the current tests "
                          "(refused where a mutated file changed or a test file went)")
    args = p.parse_args(argv)

    chosen = choose(args.module or list(GROUPS), p.error)

    # an interrupt or SIGTERM unwinds through run_group's finally, which removes the copy
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = args.root.resolve()
    entries = load_allow_list(ALLOW_LIST)
    scores: list[FileScore] = []
    errors: list[str] = []
    t0 = time.monotonic()
    for name, group in chosen.items():
        try:
            if args.report:
                work = kept_copy(args.report.resolve(), name)
                got = [score_file(work, f, name) for f in group.files]
                print(f"[{name}] the kept run in {work}", flush=True)
            else:
                got = run_group(name, group, root, args.jobs, args.verbose,
                                args.keep and args.keep.resolve(), args.recheck and args.recheck.resolve())
            apply_allow_list(got, entries)
            for s in got:  # as it goes: a full run takes a while
                print(f"[{name}] {s.file}: {s.killed}/{s.mutants - len(s.equivalent)} killed, {100 * s.score:.1f} %", flush=True)
            scores += got
        except GroupError as e:
            errors.append(str(e))
            print(f"ERROR {e}", flush=True)
    stale = unmatched(scores, entries)
    ok = report(scores, stale, {s.file for s in scores}) if scores else False
    for e in errors:
        print(f"ERROR {e.splitlines()[0]}")
    print(f"\n{len(chosen)} group(s) in {time.monotonic() - t0:.0f} s")
    if args.recheck:
        print(f"a recheck of {args.recheck}: the kept run's killed verdicts were carried over, not rerun; "
              "the figure that counts is a full run's")
    return 0 if ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
