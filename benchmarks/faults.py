"""Faults under load, as an operator meets them: every tier its own process on loopback, real
servers, a fault injected mid-stream, and a hard deadline on each scenario.

Scenarios (issue 12):

* ``edge-kill``     — two edge nodes; kill -9 the busier one while the agents stream.
* ``cloud-restart`` — ten agents on one edge; kill -9 the cloud, start it again on the same port and
  the same registry file.
* ``term-edge``, ``term-cloud``, ``term-agent`` — SIGTERM one tier mid-stream (the cloud is started
  again once it has exited; the agent is started again with the same ``--state`` when the agent has
  that flag).

For each scenario it prints, and writes to JSON, the frames sent / answered once / lost / never sent /
duplicated to the application (per agent and in total), the recovery time (from the fault to the first
frame answered again by the agents it stalled, and to every agent answering again), and the tiers that
wedged: alive, with frames outstanding, and no progress for ``--wedge-s`` seconds (an agent: frames
asked and not answered; an edge: frames computed or queued and not answered; the cloud: an edge holds
frames for it). Acceptance: 0 lost, 0 never sent, 0 duplicated, no wedge, recovery < 10 s after an
edge fault.

How frames are counted: the agent's ``--report`` (written on every exit by the extended agent; today's
agent writes it only on success); an agent that exits without one is counted from its last metrics
sample (frames made and answered, at most ``--sample-s`` old), and, if it never got that far, as
answered 0 and lost = asked. The output says which source each agent's count came from. Progress,
recovery and wedges come from the tiers' Prometheus endpoints, sampled every ``--sample-s``.

The agent's flags are read from its ``--help``: ``--fps`` and ``--state`` are passed only if it has them.

    python benchmarks/faults.py [--scenarios edge-kill cloud-restart term-edge term-cloud term-agent]
        [--agents 3] [--frames 3000] [--cloud-agents 10] [--cloud-frames 600] [--deadline-s 300]
        [--root .] [--out results/faults.json]

``--root`` is the checkout whose tiers are run (default: the current directory), so the same harness
measures a worktree of an older commit: ``cd /tmp/before && python /path/to/benchmarks/faults.py``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from _procs import (
    AgentCount,
    AgentFlags,
    Cluster,
    Deadline,
    StartError,
    Tier,
    Totals,
    Wedge,
    agent_count,
    clean_json,
    code_under_test,
    first_progress,
    flat_runs,
    install_sigterm,
    pace,
    read_report,
    totals,
    use_root,
)

EDGE_RECOVERY_TARGET_S = 10.0


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

    def agent_args(self, name: str, frames: int, state: Path | None = None) -> list[str]:
        report = self.dir / f"{name}.report.json"
        self.reports[name] = report
        self.asked[name] = frames
        args = ["device-agent", "--cloud", self.cloud.target, "--name", name, "--frames", str(frames),
                "--report", str(report), "--metrics-port", "0"]
        if self.opts.fps and self.flags.fps:
            args += ["--fps", str(self.opts.fps)]
        if state is not None and self.flags.state:
            args += ["--state", str(state)]
        return args


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    edges: int
    many_agents: bool  # --cloud-agents x --cloud-frames instead of --agents x --frames
    fault: Callable[[Run], str]  # injects the fault, returns the tier it hit
    recovery_target_s: float | None = None


@dataclass
class ScenarioResult:
    name: str
    description: str
    agents: list[AgentCount]
    totals: Totals
    target: str
    fault_at_s: float | None
    recovery_first_s: float | None  # fault -> first frame answered again by an agent it stalled
    recovery_all_s: float | None  # fault -> every agent streaming at the fault answered again
    affected: list[str]  # agents with no answer for more than the stall threshold after the fault
    not_recovered: list[str]
    streaming_at_fault: int  # agents that had frames to send when the fault hit
    wedges: list[Wedge]
    deadline_hit: bool
    service_answered: dict[str, int]  # frames each server answered (resent frames included)
    exit_codes: dict[str, int | None]
    events: list[str]
    elapsed_s: float
    logs: str
    notes: list[str]
    passed: bool
    failures: list[str]


# --- faults --------------------------------------------------------------------------------------


def busiest_edge(run: Run) -> Tier:
    run.cluster.sample()
    return max((e for e in run.edges if e.alive), key=lambda e: e.answered)


def kill_edge(run: Run) -> str:
    edge = busiest_edge(run)
    run.cluster.signal(edge, signal.SIGKILL)
    return edge.name


def term_edge(run: Run) -> str:
    edge = busiest_edge(run)
    run.cluster.signal(edge, signal.SIGTERM)
    return edge.name


def start_cloud_again(run: Run) -> None:
    """The cloud on its old port and registry file; a port not yet free is tried again (paced)."""
    port = run.cloud.port
    for attempt in range(1, 100):
        name = f"cloud-r{len(run.clouds)}" if attempt == 1 else f"cloud-r{len(run.clouds)}-try{attempt}"
        try:
            tier = run.cluster.start_service("cloud", name, ["cloud-server", "--port", str(port), "--metrics-port", "0",
                                                              "--db", str(run.dir / "cloud.sqlite3")], run.deadline)
        except StartError as e:
            if run.deadline.remaining() < 5:
                run.notes.append(f"the cloud did not start again on port {port}: {e}")
                return
            run.notes.append(f"restart attempt {attempt} failed: {str(e).splitlines()[-1]}")
            pace(0.5, run.deadline)
            continue
        run.cloud = tier
        run.clouds.append(tier)
        return


def restart_cloud(sig: signal.Signals) -> Callable[[Run], str]:
    def fault(run: Run) -> str:
        old = run.cloud
        run.cluster.sample()
        run.cluster.signal(old, sig)
        if not run.cluster.wait_exit([old], run.deadline, timeout_s=30.0):
            run.notes.append(f"{old.name} still running 30 s after {sig.name}: killed")
            run.cluster.signal(old, signal.SIGKILL)
            run.cluster.wait_exit([old], run.deadline, timeout_s=10.0)
        pace(run.opts.down_s, run.deadline)
        start_cloud_again(run)
        return old.name

    return fault


def term_agent(run: Run) -> str:
    victim = run.agents[0]
    run.cluster.sample()  # its counts as fresh as they can be, for an agent that writes no report
    run.cluster.signal(victim, signal.SIGTERM)
    run.stopped.add(victim.name)
    if run.flags.state:  # the same device again: its identity must survive the restart
        run.cluster.wait_exit([victim], run.deadline, timeout_s=30.0)
        name = f"{victim.name}-again"
        again = run.cluster.spawn("agent", name, run.agent_args(name, run.opts.restart_frames, run.dir / f"{victim.name}.state"))
        run.agents.append(again)
        try:
            run.cluster.wait_ready([again], run.deadline, timeout_s=60.0)
        except StartError as e:
            run.notes.append(str(e))
        before = (victim.ready or {}).get("device_id")
        after = (again.ready or {}).get("device_id")
        run.notes.append(f"{name}: device id {'kept' if before and before == after else 'CHANGED'} across the restart "
                         f"({before} -> {after})")
    return victim.name


SCENARIOS = (
    Scenario("edge-kill", "kill -9 one of two edge nodes mid-stream", 2, False, kill_edge, EDGE_RECOVERY_TARGET_S),
    Scenario("cloud-restart", "kill -9 the cloud mid-stream, start it again (same port, same registry)", 1, True,
             restart_cloud(signal.SIGKILL)),
    Scenario("term-edge", "SIGTERM one of two edge nodes mid-stream", 2, False, term_edge, EDGE_RECOVERY_TARGET_S),
    Scenario("term-cloud", "SIGTERM the cloud mid-stream, start it again once it exited", 1, False, restart_cloud(signal.SIGTERM)),
    Scenario("term-agent", "SIGTERM one agent mid-stream (start it again with its --state if it has the flag)", 1, False, term_agent),
)


# --- one scenario --------------------------------------------------------------------------------


def run_scenario(sc: Scenario, opts: argparse.Namespace, root: Path, flags: AgentFlags) -> ScenarioResult:
    n_agents, frames = (opts.cloud_agents, opts.cloud_frames) if sc.many_agents else (opts.agents, opts.frames)
    scenario_dir = opts.logs / sc.name
    scenario_dir.mkdir(parents=True, exist_ok=True)
    deadline = Deadline(opts.deadline_s)
    t_wall = time.perf_counter()
    fault_at, target = None, ""
    alive_at_end: set[str] = set()
    end_s = 0.0
    with Cluster(root, opts.python, scenario_dir, opts.sample_s) as cluster:
        cloud = cluster.start_service("cloud", "cloud", ["cloud-server", "--port", "0", "--metrics-port", "0",
                                                         "--db", str(scenario_dir / "cloud.sqlite3")], deadline)
        edges = [cluster.start_service("edge", f"edge-{i}", ["edge-node", "--cloud", cloud.target, "--port", "0",
                                                              "--metrics-port", "0"], deadline) for i in range(sc.edges)]
        run = Run(cluster, deadline, opts, flags, scenario_dir, cloud, edges, [], {}, {}, clouds=[cloud])
        for i in range(n_agents):
            name = f"agent-{i}"
            run.agents.append(cluster.spawn("agent", name, run.agent_args(name, frames, scenario_dir / f"{name}.state")))
        cluster.start_tracker()
        cluster.wait_ready(run.agents, deadline, timeout_s=120.0)
        streaming = cluster.wait_until(lambda: all(a.answered > 0 or not a.alive for a in run.agents), deadline, 120.0)
        if not streaming:
            run.notes.append("not every agent answered a first frame within 120 s; fault injected anyway")
        pace(opts.fault_after_s, deadline)
        t_before = cluster.now()
        target = sc.fault(run)  # each fault samples every tier just before its signal
        fault_at = min((when for t in cluster.tiers for when, _ in t.signals if when >= t_before), default=None)
        cluster.wait_exit(run.agents, deadline)
        cluster.sample()
        end_s = cluster.now()
        alive_at_end = {t.name for t in cluster.tiers if t.alive}
    deadline_hit = any(a.name in alive_at_end for a in run.agents)

    counts = [agent_count(a, run.asked[a.name], run.reports[a.name], stopped=a.name in run.stopped) for a in run.agents]
    for c in counts:  # an agent on SIGTERM: the report, if it wrote one, tells whether it was written
        if c.stopped:
            run.notes.append(f"{c.name} (SIGTERM): exit {c.exit_code}, "
                             f"{'wrote its report' if read_report(run.reports[c.name]) else 'wrote NO report'}")
    wedges = find_wedges(run, end_s, alive_at_end, opts.wedge_s)
    recovery = recovery_times(run, fault_at, counts, stall_s=max(1.0, 3 * opts.sample_s), window_s=opts.stall_window_s)
    tot = totals(counts)
    result = ScenarioResult(
        name=sc.name, description=f"{sc.description} ({n_agents} agents x {frames} frames)", agents=counts, totals=tot,
        target=target, fault_at_s=fault_at, **recovery, wedges=wedges, deadline_hit=deadline_hit,
        service_answered={t.name: t.answered for t in cluster.tiers if t.kind != "agent"},
        exit_codes={t.name: t.returncode for t in cluster.tiers}, events=events(cluster), elapsed_s=time.perf_counter() - t_wall,
        logs=str(scenario_dir), notes=run.notes, passed=False, failures=[],
    )
    result.failures = verdict(result, sc)
    result.passed = not result.failures
    return result


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


def verdict(r: ScenarioResult, sc: Scenario) -> list[str]:
    t = r.totals
    failures = []
    if t.lost:
        failures.append(f"{t.lost} lost")
    if t.unsent:
        failures.append(f"{t.unsent} never sent")
    if t.sent_unknown:
        failures.append(f"{t.sent_unknown} agents uncounted")
    if t.duplicated:
        failures.append(f"{t.duplicated} duplicated")
    if r.deadline_hit:
        failures.append("deadline hit")
    if r.wedges:
        failures.append("wedged: " + ", ".join(short_names({w.tier for w in r.wedges}, r)))
    bad_exit = [c for c in r.agents if not c.stopped and c.exit_code != 0 and not (r.deadline_hit and c.exit_reason.startswith("killed"))]
    if bad_exit:
        failures.append("agents failed: " + ", ".join(f"{c.name} exit {c.exit_code}" for c in bad_exit))
    if not r.streaming_at_fault:
        failures.append("no agent was streaming at the fault: nothing measured")
    elif sc.recovery_target_s is not None and (r.recovery_all_s is None or r.recovery_all_s >= sc.recovery_target_s):
        failures.append(f"recovery {'never' if r.recovery_all_s is None else f'{r.recovery_all_s:.1f} s'} "
                        f"(target < {sc.recovery_target_s:g} s)")
    return failures


# --- output --------------------------------------------------------------------------------------


def _n(v: object) -> str:
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def print_result(r: ScenarioResult) -> None:
    print(f"\n== {r.name}: {r.description}")
    for line in r.events:
        print(f"   {line}")
    print(f"   {'agent':<14} {'exit':>4} {'source':>7} {'asked':>6} {'sent':>6} {'answered':>8} {'lost':>5} {'unsent':>6} "
          f"{'dup':>4} {'dropped':>7} {'moves':>5} {'p50 s':>6} {'p95 s':>6}  why")
    for c in r.agents:
        print(f"   {c.name:<14} {_n(c.exit_code):>4} {c.source:>7} {c.asked:>6} {_n(c.sent):>6} {c.answered:>8} {_n(c.lost):>5} "
              f"{_n(c.unsent):>6} {c.duplicated:>4} {c.duplicates_dropped:>7} {_n(c.moves):>5} {_n(c.latency_p50_s):>6} "
              f"{_n(c.latency_p95_s):>6}  {c.exit_reason[:90]}")
    t = r.totals
    print(f"   {'total':<14} {'':>4} {'':>7} {t.asked:>6} {t.sent:>6} {t.answered:>8} {t.lost:>5} {t.unsent:>6} {t.duplicated:>4} "
          f"{t.duplicates_dropped:>7}")
    print(f"   fault: {r.target} at {_n(r.fault_at_s)} s; recovery: first {_n(r.recovery_first_s)} s, all "
          f"{'never' if r.not_recovered else _n(r.recovery_all_s)} s; stalled agents: {', '.join(r.affected) or 'none'}"
          f"{'; never answered again: ' + ', '.join(r.not_recovered) if r.not_recovered else ''}")
    for w in r.wedges:
        print(f"   wedged: {w.tier} made no progress for {w.seconds:.1f} s from {w.start_s:.1f} s"
              f"{' (still at the end)' if w.open_at_end else ''}")
    print("   servers answered: " + ", ".join(f"{k} {v}" for k, v in r.service_answered.items()))
    for note in r.notes:
        print(f"   note: {note}")
    print(f"   {'PASS' if r.passed else 'FAIL: ' + '; '.join(r.failures)}  ({r.elapsed_s:.0f} s, logs {r.logs})")


def short_names(names: set[str], r: ScenarioResult) -> list[str]:
    """Tier names, the agents among them as a count."""
    agents = {c.name for c in r.agents} & names
    return ([f"{len(agents)} agents"] if agents else []) + sorted(names - agents)


def print_summary(results: list[ScenarioResult]) -> None:
    print(f"\n{'scenario':<14} {'sent':>6} {'answered':>8} {'lost':>5} {'unsent':>6} {'dup':>4} {'no report':>9} "
          f"{'recovery first/all s':>20} {'stalls':>6} {'wedged at end':>13} {'runtime s':>9}  verdict")
    for r in results:
        t = r.totals
        rec = f"{_n(r.recovery_first_s)}/{'never' if r.not_recovered else _n(r.recovery_all_s)}"
        at_end = short_names({w.tier for w in r.wedges if w.open_at_end}, r) + (["deadline"] if r.deadline_hit else [])
        print(f"{r.name:<14} {t.sent:>6} {t.answered:>8} {t.lost:>5} {t.unsent:>6} {t.duplicated:>4} {t.without_report:>9} "
              f"{rec:>20} {len(r.wedges):>6} {', '.join(at_end) or 'no':>13} {r.elapsed_s:>9.0f}  {'PASS' if r.passed else 'FAIL'}")
    print("stalls: tiers alive with frames outstanding and no progress for --wedge-s seconds (each is a failure);"
          " wedged at end: still so when the scenario ended")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=[s.name for s in SCENARIOS], choices=[s.name for s in SCENARIOS])
    parser.add_argument("--agents", type=int, default=3, help="agents in every scenario but cloud-restart")
    parser.add_argument("--frames", type=int, default=3000, help="frames each of those agents is asked to send")
    parser.add_argument("--cloud-agents", type=int, default=10, help="agents in cloud-restart")
    parser.add_argument("--cloud-frames", type=int, default=600, help="frames each cloud-restart agent is asked to send")
    parser.add_argument("--restart-frames", type=int, default=100, help="frames of the agent started again in term-agent")
    parser.add_argument("--fps", type=float, default=0.0, help="frames per second per agent, if the agent has --fps (0 = unpaced)")
    parser.add_argument("--fault-after-s", type=float, default=3.0, help="seconds after every agent got a first answer")
    parser.add_argument("--down-s", type=float, default=1.0, help="seconds the cloud stays down before it is started again")
    parser.add_argument("--deadline-s", type=float, default=300.0, help="hard limit on one scenario, seconds")
    parser.add_argument("--stall-window-s", type=float, default=15.0,
                        help="a stall that begins this long after the fault is still the fault's")
    parser.add_argument("--wedge-s", type=float, default=10.0, help="no progress this long with frames outstanding = wedged")
    parser.add_argument("--sample-s", type=float, default=0.25, help="seconds between two samples of every tier")
    parser.add_argument("--root", type=Path, default=Path("."), help="the checkout whose tiers run (default: the current directory)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter the tiers run under")
    parser.add_argument("--logs", type=Path, default=None, help="where logs, reports and registries go (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=Path("results/faults.json"))
    opts = parser.parse_args()
    install_sigterm()
    root = use_root(opts.root)
    opts.logs = opts.logs or Path(tempfile.mkdtemp(prefix="ecd-faults-"))
    code = code_under_test(root, opts.python)
    flags = AgentFlags.detect(root, opts.python)
    print(f"code under test: {code['ecd_file']} (commit {code['commit']}, {code['modified_files']} files modified); "
          f"agent flags: {asdict(flags)}; logs: {opts.logs}")
    results = []
    t0 = time.perf_counter()
    by_name = {s.name: s for s in SCENARIOS}
    errors: dict[str, str] = {}
    for name in opts.scenarios:
        try:
            r = run_scenario(by_name[name], opts, root, flags)
        except (StartError, TimeoutError) as e:  # a tier that never came up: the scenario measured nothing
            errors[name] = str(e)
            print(f"\n== {name}: could not run: {e}")
            continue
        print_result(r)
        results.append(r)
    print_summary(results)
    out = {"code": code, "agent_flags": asdict(flags), "options": {k: str(v) for k, v in vars(opts).items()},
           "runtime_s": round(time.perf_counter() - t0, 1), "scenarios": [asdict(r) for r in results], "errors": errors}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(clean_json(out), indent=2))
    print(f"\nwrote {opts.out} ({out['runtime_s']:.0f} s in all)")
    return 0 if all(r.passed for r in results) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
