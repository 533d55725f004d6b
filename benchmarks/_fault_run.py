"""One fault scenario's live state and what is computed from its samples afterwards, for
``benchmarks/faults.py``: the tiers that wedged (alive, frames outstanding, no progress), how long
the agents the fault stalled took to answer again, and the timeline of starts, signals and exits.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from _counts import AgentCount, AgentFlags
from _metrics import Wedge, first_progress, flat_runs
from _procs import Cluster, Deadline, Tier


@dataclass
class Run:
    """The live state of one scenario: its processes, and what the fault did to them."""

    cluster: Cluster
    deadline: Deadline
    opts: argparse.Namespace
    flags: AgentFlags
    dir: Path
    cloud: Tier
    edges: list[Tier]
    agents: list[Tier]
    asked: dict[str, int]
    reports: dict[str, Path]
    stopped: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    clouds: list[Tier] = field(default_factory=list)
    cloud_arg: str = ""  # the tiers' --cloud: every replica, the first preferred
    db: str = ""  # the registry: a SQLite file or a PostgreSQL URL
    fps: float = 0.0  # the agents' --fps (0 = unpaced)
    leaders: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # replica -> (t, ecd_scheduler_leader)
    checks: dict[str, object] = field(default_factory=dict)  # a scenario's own figures (_fault_control.py)
    failures: list[str] = field(default_factory=list)  # and what they missed
    fault_at: float | None = None  # set by a fault that sends no signal (a full disk); else the first signal's time

    def agent_args(self, name: str, frames: int, state: Path | None = None) -> list[str]:
        report = self.dir / f"{name}.report.json"
        self.reports[name] = report
        self.asked[name] = frames
        args = ["device-agent", *self.flags.plain, "--cloud", self.cloud_arg or self.cloud.target, "--name", name,
                "--frames", str(frames), "--report", str(report), "--metrics-port", "0"]
        if self.fps and self.flags.fps:
            args += ["--fps", str(self.fps)]
        if state is not None and self.flags.state:
            args += ["--state", str(state)]
        return args


def find_wedges(run: Run, end_s: float, alive_at_end: set[str], wedge_s: float) -> list[Wedge]:
    """Every tier alive with frames outstanding and no progress for ``wedge_s`` (see the module doc)."""
    out: list[Wedge] = []

    def add(tier: Tier, points: list[tuple[float, int, bool]]) -> None:
        for start, end, is_open in flat_runs(points, wedge_s, end_s if tier.name in alive_at_end else None):
            out.append(Wedge(tier.name, round(start, 2), round(end - start, 2), is_open))

    for a in run.agents:
        asked = run.asked[a.name]
        add(a, [(s.t, s.answered, asked == 0 or s.answered < asked) for s in a.samples])
    for e in run.edges:
        add(e, [(s.t, s.answered, s.pending > 0) for s in e.samples])

    def edge_holds_frames(t: float) -> bool:
        for e in run.edges:
            before = [s for s in e.samples if s.t <= t]
            if before and before[-1].pending > 0 and (e.t_exit is None or e.t_exit > t):
                return True
        return False

    for c in run.clouds:
        add(c, [(s.t, s.answered, edge_holds_frames(s.t)) for s in c.samples])
    return sorted(out, key=lambda w: w.start_s)


def recovery_times(run: Run, fault_at: float | None, counts: list[AgentCount], stall_s: float, window_s: float) -> dict:
    """Per agent streaming at the fault (the stopped one aside): the first stall (no answer for more
    than ``stall_s``) that began within ``window_s`` of the fault, and when it ended. An agent with no
    such stall was not affected; its recovery is its first answer after the fault."""
    gaps: dict[str, float | None] = {}
    affected: list[str] = []
    answered = {c.name: c.answered for c in counts}
    for a in run.agents:
        if fault_at is None or a.name in run.stopped or a.t_start > fault_at:
            continue
        before = [s for s in a.samples if s.t <= fault_at]
        if not before or (a.t_exit is not None and a.t_exit <= fault_at):
            continue
        asked = run.asked[a.name]
        if asked and before[-1].answered >= asked:
            continue  # done before the fault
        after = [s for s in a.samples if s.t >= before[-1].t]
        stalls = [r for r in flat_runs([(s.t, s.answered, not asked or s.answered < asked) for s in after], stall_s, a.t_exit)
                  if r[0] <= fault_at + window_s]
        if stalls:
            affected.append(a.name)
            _, end, _ = stalls[0]
            flat = max(s.answered for s in after if s.t <= end)
            t = first_progress(after, end, flat)
        else:
            flat = before[-1].answered
            t = first_progress(after, fault_at, flat)
        if t is None and a.t_exit is not None and answered[a.name] > flat:
            t = a.t_exit  # answered and exited between two samples
        gaps[a.name] = None if t is None else t - fault_at
    not_recovered = sorted(n for n, g in gaps.items() if g is None)
    stalled = [gaps[n] for n in affected if gaps[n] is not None]
    return {
        "recovery_first_s": round(min(stalled), 2) if stalled else None,
        "recovery_all_s": None if not_recovered or not gaps else round(max(g for g in gaps.values() if g is not None), 2),
        "affected": sorted(affected),
        "not_recovered": not_recovered,
        "streaming_at_fault": len(gaps),
    }


def events(cluster: Cluster) -> list[str]:
    """What happened when, in seconds since the scenario started: to read beside the logs."""
    ev: list[tuple[float, str]] = []
    for t in cluster.tiers:
        if t.kind != "agent" or t.name.endswith("-again"):
            ev.append((t.t_start, f"{t.name} started"))
        if t.t_ready is not None and t.kind != "agent":
            ev.append((t.t_ready, f"{t.name} READY on port {t.port}"))
        ev += [(when, f"{sig} -> {t.name}") for when, sig in t.signals]
        if t.t_exit is not None:
            ev.append((t.t_exit, f"{t.name} exited {t.returncode}"))
    return [f"{when:8.2f}  {what}" for when, what in sorted(ev)]
