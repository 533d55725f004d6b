"""The mutation gate's reading of a run (tools/mutation.py): each file's mutants and survivors as
mutmut recorded them, the allow-list of equivalent mutants (``tools/mutation_equivalent.toml`` and
two checked rules), and the report with the pass/fail verdict."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOW_LIST = Path(__file__).with_name("mutation_equivalent.toml")

MODULE_MIN = 0.85
OVERALL_MIN = 0.90

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code)
# a failing test, a timeout or a crash (-11 SIGSEGV, -9 SIGKILL, -6 SIGABRT: onnxruntime aborts the
# process on a setting it rejects, e.g. a mutated session config value): noticed
KILLED_CODES = {1, 3, 36, -24, 24, 152, 255, -11, -9, -6}
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}  # no mapped test reaches the function: survives as far as the gate goes


class GroupError(RuntimeError):
    pass


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
