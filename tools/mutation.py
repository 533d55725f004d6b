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

Each group runs only its own tests (``GROUPS``, in tools/mutation_groups.py): a mutant is judged by the tests that are meant
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
``--recheck DIR`` then brings that copy up to date with the checkout, reruns only its survivors and
runs the mutants it never ran (a run stopped before its end is finished so): minutes instead of an
hour for a group whose tests were extended. The group's test list may have grown since (mutmut is
told the verdicts still hold, or it would rerun every mutant). A mutated file that changed is
re-mutated: mutmut 3 runs the mutants of its changed functions anew and keeps the others' verdicts.
It refuses when a test file was removed or a test left the group's list since; a killed mutant keeps
its verdict, so a test weakened in place is not noticed, and mutmut maps only new test functions
(extend by adding them): the figure that counts is a full run's, and a recheck's report says it is one.

``--report DIR`` prints a kept run's scores against the current allow-list without running anything.

``--module`` names a group, or one of its files: a file named is mutated alone, against its group's
tests (``--module edge_node/link.py``: the edge group's link alone, against the edge tests).

Usage: ``python tools/mutation.py [--module NAME]... [--jobs N] [--root PATH] [--keep DIR | --recheck DIR | --report DIR]``
or ``make mutation``.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its modules beside it, when loaded from elsewhere too

from mutation_groups import GROUPS, Group  # noqa: E402
from mutation_scores import (  # noqa: E402,F401 (re-exported: the tests read them from here)
    ALLOW_LIST, MODULE_MIN, NO_TESTS_CODES, OVERALL_MIN, ROOT, SPINNER, SURVIVED_CODES, FileScore, GroupError, Survivor,
    apply_allow_list, explains, load_allow_list, report, score_file, sql_case_only, unmatched, unread_default,
)


# the packages copied into mutmut's mutants/ folder (only the group's files are mutated there)
PACKAGES = ("ecd", "ecd_cli", "device_agent", "edge_node", "cloud_server", "scheduling", "models", "research")
# other folders and files the tests read (the security matrix checks the authorization table in
# docs/explanation/security.md)
ALSO_COPY = ("data", "proto", "deploy", "benchmarks", "docs", "README.md")
# what this tool writes into a copy (beside mutmut's mutants/): no file of the tree, never removed by a recheck
OWN_FILES = ("setup.cfg", "mutmut.log")
NOT_MUTATED_LINES = (r"^\s*(log|logger|logging)\.(debug|info|warning|error|exception|critical)\(",)

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
        for rel in refresh_tree(root, work, group, name):
            print(f"[{name}] {rel} changed since the kept run: mutmut re-mutates it and runs the mutants of its changed "
                  "functions anew, besides those counted below (the others keep their verdicts); every test is mapped anew",
                  flush=True)
        widen_tests(work, group, tests, name)
        rerun, never_run = reset_survivors(work, group, name)
        print(f"[{name}] rechecking {rerun} survivors of the kept run and running the {never_run} mutants it never ran, "
              "against the tests as they are now", flush=True)
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


def refresh_tree(root: Path, work: Path, group: Group, name: str) -> list[str]:
    """Bring a kept copy up to date with the checkout (tests, the other modules, data), refusing
    where its verdicts would no longer hold: a test file removed (it may be what killed some). Tests
    added only kill more. A mutated file that changed is taken as it is now and returned: mutmut 3
    re-mutates it, resets the verdicts of the functions whose source changed (its own hash per
    function) and keeps the others'; every test is mapped to the functions it reaches anew (the
    stats are dropped), since a changed function may be reached by other tests now. Not caught: a
    test weakened in place, a test function extended in place (mutmut maps only new test names to
    the functions they reach, so extend by adding test functions), or an unchanged function whose
    killed mutants the change elsewhere made harmless; that is why a recheck never replaces the
    full run before a release."""
    now = set(tree_files(root))
    kept = {str(p.relative_to(work)) for p in work.rglob("*")
            if p.is_file() and p.relative_to(work).parts[0] != "mutants" and "__pycache__" not in p.parts
            and str(p.relative_to(work)) not in OWN_FILES}
    gone = sorted(rel for rel in kept - now if rel.startswith("tests/"))
    if gone:
        raise GroupError(f"{name}: test files removed since the kept run ({', '.join(gone[:3])}); run the group in full")
    changed = [rel for rel in group.files if (root / rel).read_bytes() != (work / rel).read_bytes()]
    for rel in changed:
        (work / rel).unlink()
        shutil.copy2(root / rel, work / rel)
        os.utime(work / rel)  # newer than its mutants: mutmut re-mutates it
    if changed:
        (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
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
    return changed


def selection_hash(tests: list[str]) -> str:
    """mutmut's hash of a test list (3.8's ``Config.config_fingerprint``, "test_selection"); a test pins it to mutmut's own."""
    return hashlib.sha256(repr(tuple(tests)).encode()).hexdigest()[:12]


def widen_tests(work: Path, group: Group, tests: list[str], name: str) -> None:
    """Give a kept copy the group's test list as it is now. Tests added only kill more, so the kept
    verdicts still hold; mutmut keeps a hash of the list it ran with and, finding another, would reset
    every verdict and rerun the group in full, so that hash is brought up to date too (mutmut then maps
    the new tests to the functions they reach, as it does for new test functions). A test that left
    the list is refused, as a removed test file is: it may be what killed some."""
    config = work / "setup.cfg"
    parser = configparser.ConfigParser()
    parser.read_string(config.read_text())
    before = parser.get("mutmut", "pytest_add_cli_args_test_selection", fallback="").split()
    dropped = [t for t in before if t not in tests]
    if dropped:
        raise GroupError(f"{name}: tests left the group since the kept run ({', '.join(dropped[:3])}); run the group in full")
    config.write_text(mutmut_config(group, tests))
    stats_path = work / "mutants" / "mutmut-stats.json"
    if before == tests or not stats_path.exists():
        return
    stats = json.loads(stats_path.read_text())
    if stats.get("config_fingerprint"):  # an empty one: mutmut compares nothing
        stats["config_fingerprint"]["test_selection"] = selection_hash(tests)
        stats_path.write_text(json.dumps(stats, indent=4))


def reset_survivors(work: Path, group: Group, name: str) -> tuple[int, int]:
    """Mark the kept run's survivors (and mutants no test reached) as not yet run; return how many, and
    how many mutants the kept run never ran (a run stopped before its end): mutmut runs both."""
    count = never_run = 0
    for rel in group.files:
        meta_path = work / "mutants" / (rel + ".meta")
        if not meta_path.exists():
            raise GroupError(f"{name}: the kept run has no results for {rel}; run the group in full")
        meta = json.loads(meta_path.read_text())
        codes = meta["exit_code_by_key"]
        for key, code in codes.items():
            if code is None:
                never_run += 1
            elif code in SURVIVED_CODES | NO_TESTS_CODES:
                codes[key] = None
                count += 1
        meta_path.write_text(json.dumps(meta, indent=4))
    return count, never_run


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
                     help="rerun only the survivors of a run kept with --keep DIR, and run the mutants it never ran "
                          "(finishes a stopped run), against the current tests, the group's added test files included "
                          "(a mutated file that changed is re-mutated: the mutants of its changed functions run anew; "
                          "refused where a test file went or a test left the group)")
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
