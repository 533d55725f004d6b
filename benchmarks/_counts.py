"""Each agent's frames as the application saw them, the agent's flags, and the results written, for
``benchmarks/faults.py`` and ``benchmarks/load.py`` (the processes themselves are ``_procs.py``'s).

An agent is counted from its ``--report`` file, else the report it printed, else its last metrics
sample (one that died without a report); ``lost + unsent = asked - answered`` for a fixed-count run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterable, Sequence

from _metrics import Sample
from _procs import Tier, install_sigterm, use_root

# --- the agent's flags: today's and the extended contract ----------------------------------------


@dataclass(frozen=True)
class AgentFlags:
    """Which of the extended agent's flags the code under test has (read from ``--help``)."""

    fps: bool
    state: bool
    until_sigterm: bool  # --frames 0 streams until SIGTERM
    insecure: bool = False  # the tiers refuse plaintext unless told --insecure (the same code's cloud and edge too)

    @classmethod
    def from_help(cls, text: str) -> AgentFlags:
        flat = " ".join(text.split())
        frames = re.search(r"--frames FRAMES (.*?)\(default", flat)
        return cls(fps="--fps" in flat, state="--state" in flat,
                   until_sigterm=bool(frames and re.search(r"\b0 =.*(SIGTERM|until|stop)", frames.group(1))),
                   insecure="--insecure" in flat)

    @property
    def plain(self) -> list[str]:
        """What a plaintext tier of the code under test is started with."""
        return ["--insecure"] if self.insecure else []

    @classmethod
    def detect(cls, root: Path, python: str) -> AgentFlags:
        done = subprocess.run([python, "-m", "ecd_cli", "device-agent", "--help"], cwd=root, capture_output=True,
                              text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(root)})
        if done.returncode != 0:
            raise SystemExit(f"`ecd device-agent --help` in {root} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        return cls.from_help(done.stdout)


def code_under_test(root: Path, python: str) -> dict:
    """Which checkout the tiers import (``ecd.__file__`` as a tier sees it) and its commit."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    ecd_file = subprocess.run([python, "-c", "import ecd; print(ecd.__file__)"], cwd=root, capture_output=True,
                              text=True, timeout=60, check=False, env=env).stdout.strip()
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           check=False).stdout.splitlines()
    return {"root": str(root), "ecd_file": ecd_file, "commit": head, "modified_files": len(dirty)}


# --- per-agent accounting --------------------------------------------------------------------------


@dataclass
class AgentCount:
    """One agent's frames, as the application saw them.

    ``lost``: sent and never answered; ``unsent``: asked for but never sent (an agent that gave up);
    ``lost + unsent = asked - answered`` for a fixed-count run. ``duplicated``: answers delivered
    beyond one per sent frame; ``duplicates_dropped``: answers the agent caught and dropped.
    ``source``: ``report`` (its --report file), ``metrics`` (no report: its last metrics sample, at
    most one sample period old), or ``none`` (never ready: counted as answered 0, lost = asked)."""

    name: str
    asked: int  # --frames (0 = until stopped)
    exit_code: int | None
    source: str
    sent: int | None
    answered: int
    errors: int
    lost: int | None
    unsent: int | None
    duplicated: int
    duplicates_dropped: int
    stopped: bool = False  # the scenario stopped it on purpose: its unsent frames are no loss
    exit_reason: str = ""
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p99_s: float | None = None
    moves: int | None = None
    edges: list[str] = field(default_factory=list)
    device_id: str = ""


def _num(d: dict, key: str) -> float | None:
    v = d.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def count_agent(name: str, asked: int, exit_code: int | None, report: dict | None, last: Sample | None,
                stopped: bool = False, message: str = "", device_id: str = "") -> AgentCount:
    if report is not None:
        answered = int(report.get("answered", report.get("frames", 0)))
        sent = int(report.get("sent", answered))  # today's report exists only when every sent frame was answered
        lost = int(report.get("lost", max(0, sent - answered)))
        source = "report"
    elif last is not None:
        answered, sent = last.answered, last.made
        lost = None if sent is None else max(0, sent - answered)
        source = "metrics"
    else:
        answered, sent, lost, source = 0, None, (asked or None), "none"
    unsent = None
    if asked > 0 and not stopped and sent is not None:
        unsent = max(0, asked - sent)
    r = report or {}
    return AgentCount(
        name=name, asked=asked, exit_code=exit_code, source=source, sent=sent, answered=answered,
        errors=int(r.get("errors", 0)), lost=lost, unsent=unsent,
        duplicated=max(0, answered - sent) if sent is not None else 0,
        duplicates_dropped=int(r.get("duplicates_dropped", 0)), stopped=stopped,
        exit_reason=str(r.get("exit", "")) or message,
        latency_p50_s=_num(r, "latency_p50_s"), latency_p95_s=_num(r, "latency_p95_s"), latency_p99_s=_num(r, "latency_p99_s"),
        moves=r.get("moves"), edges=list(r.get("edges", [])), device_id=str(r.get("device_id", device_id)),
    )


def read_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def agent_count(tier: Tier, asked: int, report_path: Path, stopped: bool = False) -> AgentCount:
    """Count a finished agent from its report file, else its printed report, else its last sample."""
    report = read_report(report_path) or tier.last_json()
    message = ""
    if tier.returncode is not None and tier.returncode < 0:
        message = f"killed by {signal.Signals(-tier.returncode).name}"
    elif tier.returncode not in (0, None):
        lines = [re.sub(r"^\s*[\d.]+ ", "", line).strip() for line in tier.log_tail(3).splitlines()]
        message = lines[-1] if lines else ""
    return count_agent(tier.name, asked, tier.returncode, report, tier.samples[-1] if tier.samples else None,
                       stopped, message, str((tier.ready or {}).get("device_id", "")))


@dataclass
class Totals:
    agents: int
    asked: int
    sent: int
    answered: int
    errors: int
    lost: int
    unsent: int
    duplicated: int
    duplicates_dropped: int
    without_report: int  # counted from metrics or not at all
    sent_unknown: int  # agents whose sent count is unknown (lost counted as asked - answered)


def totals(counts: Sequence[AgentCount]) -> Totals:
    return Totals(
        agents=len(counts),
        asked=sum(c.asked for c in counts),
        sent=sum(c.sent or 0 for c in counts),
        answered=sum(c.answered for c in counts),
        errors=sum(c.errors for c in counts),
        lost=sum(c.lost or 0 for c in counts),
        unsent=sum(c.unsent or 0 for c in counts),
        duplicated=sum(c.duplicated for c in counts),
        duplicates_dropped=sum(c.duplicates_dropped for c in counts),
        without_report=sum(c.source != "report" for c in counts),
        sent_unknown=sum(c.sent is None for c in counts),
    )


def cpu_between(tier: Tier, start: float, end: float) -> float | None:
    """CPU seconds a tier spent between two of the cluster's clock readings, from its samples."""
    inside = [s for s in tier.samples if start <= s.t <= end and s.cpu_s is not None]
    return round(inside[-1].cpu_s - inside[0].cpu_s, 2) if len(inside) >= 2 else None


def tier_usage(tiers: Iterable[Tier]) -> dict:
    """CPU seconds (whole process life) and peak RSS of a group of tiers."""
    tiers = list(tiers)
    return {
        "processes": len(tiers),
        "cpu_s": round(sum(t.cpu_s for t in tiers), 2),
        "rss_peak_mb_max": round(max((t.rss_peak_bytes for t in tiers), default=0) / 2**20, 1),
        "rss_peak_mb_sum": round(sum(t.rss_peak_bytes for t in tiers) / 2**20, 1),
    }


def clean_json(value: object) -> object:
    """NaN and infinities as null: the JSON written is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def start_harness(opts: argparse.Namespace, logs_prefix: str) -> tuple[Path, dict, AgentFlags]:
    """How the fault and load harnesses start: SIGTERM unwinds, the project is imported from
    ``--root``, logs go to ``--logs`` (else a new temp dir); the code under test and its agent's
    flags, printed and returned as ``(root, code, flags)``."""
    install_sigterm()
    root = use_root(opts.root)
    opts.logs = opts.logs or Path(tempfile.mkdtemp(prefix=logs_prefix))
    code = code_under_test(root, opts.python)
    flags = AgentFlags.detect(root, opts.python)
    print(f"code under test: {code['ecd_file']} (commit {code['commit']}, {code['modified_files']} files modified); "
          f"agent flags: {asdict(flags)}; logs: {opts.logs}")
    return root, code, flags


def write_results(path: Path, code: dict, flags: AgentFlags, opts: argparse.Namespace, t0: float, **results: object) -> None:
    """The strict JSON a harness writes: what ran, with which flags and options, how long, then ``results``."""
    out = {"code": code, "agent_flags": asdict(flags), "options": {k: str(v) for k, v in vars(opts).items()},
           "runtime_s": round(time.perf_counter() - t0, 1), **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean_json(out), indent=2))
    print(f"\nwrote {path} ({out['runtime_s']:.0f} s in all)")
