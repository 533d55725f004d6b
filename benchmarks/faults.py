"""Faults under load, as an operator meets them: every tier its own process on loopback, real
servers, a fault injected mid-stream, and a hard deadline on each scenario.

Scenarios (issue 12):

* ``edge-kill``     — two edge nodes; kill -9 the busier one while the agents stream.
* ``cloud-restart`` — ten agents on one edge; kill -9 the cloud, start it again on the same port and
  the same registry file.
* ``term-edge``, ``term-cloud``, ``term-agent`` — SIGTERM one tier mid-stream (the cloud is started
  again once it has exited; the agent is started again with the same ``--state`` when the agent has
  that flag).

The control plane's own failures (issue 29; the checks in ``_fault_control.py``):

* ``replica-kill`` — two cloud replicas on one PostgreSQL registry, the edge and agents given both
  (``--cloud A,B``, the follower first); kill -9 of that follower mid-stream. Exactly one replica
  leads before and after; placement versions strictly increasing (an edge and a device join after
  the kill, so the leader places again).
* ``leader-kill`` — the same with the leader first in the list: kill -9 of the leader, which the
  edge and agents use; the survivor must lead within 15 s.
* ``gray-edge`` — two edges, ``--paced-agents`` agents at ``--paced-fps``; SIGSTOP of the busier edge
  for ``--stop-s`` (75 s), then SIGCONT. No agent may go more than 15 s without an answer.
* ``disk-full`` — the registry (SQLite) on a 4 MB tmpfs (root only), filled to the last byte for
  ``--full-s`` while the agents stream; meanwhile an edge node and a device start. Frames must flow,
  the cloud's log name the full disk and its end once each with no traceback, the operator view
  keep the edges alive, the new edge wait and then serve, the new device be told "registry disk
  full" and register once space returns.

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

    python benchmarks/faults.py [--scenarios edge-kill cloud-restart term-edge term-cloud term-agent
        replica-kill leader-kill gray-edge disk-full] [--agents 3] [--frames 3000] [--cloud-agents 10]
        [--cloud-frames 600] [--paced-agents 4] [--paced-fps 10] [--stop-s 75] [--full-s 30] [--deadline-s 300]
        [--root .] [--out results/faults.json]

``--root`` is the checkout whose tiers are run (default: the current directory), so the same harness
measures a worktree of an older commit: ``cd /tmp/before && python /path/to/benchmarks/faults.py``.

The parts: what is computed from a run's samples ``_fault_run.py``, the verdict and tables
``_fault_report.py``, the control-plane scenarios ``_fault_control.py``; processes ``_procs.py``,
counting ``_counts.py``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import _fault_control as control
from _counts import (
    AgentFlags,
    agent_count,
    read_report,
    start_harness,
    totals,
    write_results,
)
from _fault_report import ScenarioResult, print_result, print_summary, verdict
from _fault_run import Run, events, find_wedges, recovery_times
from _procs import Cluster, Deadline, StartError, Tier, pace

EDGE_RECOVERY_TARGET_S = 10.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    edges: int
    load: str  # "agents": --agents x --frames; "many": --cloud-agents x --cloud-frames; "paced": --paced-*
    fault: Callable[[Run], str]  # injects the fault, returns the tier it hit
    recovery_target_s: float | None = None
    clouds: int = 1  # replicas; more than one share a PostgreSQL registry
    registry: str = "sqlite"  # "sqlite", "postgres" or "small-disk" (SQLite on a tmpfs the scenario fills)
    check: Callable[[Run, float | None], None] | None = None  # the scenario's own checks (_fault_control.py)
    first: str = "leader"  # with replicas: the one first in the tiers' --cloud list ("leader" or "follower")


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
            tier = run.cluster.start_service("cloud", name, ["cloud-server", *run.flags.plain, "--port", str(port),
                                                              "--metrics-port", "0", "--db", run.db], run.deadline)
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
    Scenario("edge-kill", "kill -9 one of two edge nodes mid-stream", 2, "agents", kill_edge, EDGE_RECOVERY_TARGET_S),
    Scenario("cloud-restart", "kill -9 the cloud mid-stream, start it again (same port, same registry)", 1, "many",
             restart_cloud(signal.SIGKILL)),
    Scenario("term-edge", "SIGTERM one of two edge nodes mid-stream", 2, "agents", term_edge, EDGE_RECOVERY_TARGET_S),
    Scenario("term-cloud", "SIGTERM the cloud mid-stream, start it again once it exited", 1, "agents", restart_cloud(signal.SIGTERM)),
    Scenario("term-agent", "SIGTERM one agent mid-stream (start it again with its --state if it has the flag)", 1, "agents", term_agent),
    # issue 29: the control plane's own failures
    Scenario("replica-kill", "two cloud replicas on PostgreSQL; kill -9 the follower the edge and agents use mid-stream",
             1, "agents", control.kill_replica, clouds=2, registry="postgres", check=control.check_replicas, first="follower"),
    Scenario("leader-kill", "two cloud replicas on PostgreSQL; kill -9 the leader, which the edge and agents use, mid-stream",
             1, "agents", control.kill_replica, clouds=2, registry="postgres", check=control.check_replicas, first="leader"),
    Scenario("gray-edge", "SIGSTOP one of two edge nodes for --stop-s, then SIGCONT (a hung edge)", 2, "paced",
             control.stop_edge, check=control.check_stalls),
    Scenario("disk-full", "fill the registry's filesystem for --full-s; an edge and a device start meanwhile", 1, "paced",
             control.fill_disk, registry="small-disk", check=control.check_disk_full),
)


# --- one scenario --------------------------------------------------------------------------------


def load(sc: Scenario, opts: argparse.Namespace) -> tuple[int, int, float]:
    """Agents, frames each, frames per second each."""
    if sc.load == "many":
        return opts.cloud_agents, opts.cloud_frames, opts.fps
    if sc.load == "paced":
        return opts.paced_agents, int(opts.paced_fps * opts.paced_s), opts.paced_fps
    return opts.agents, opts.frames, opts.fps


def registry_for(sc: Scenario, scenario_dir: Path, registries: control.Registries) -> str:
    if sc.registry == "postgres":
        return registries.postgres()
    if sc.registry == "small-disk":
        return str(registries.small_disk(scenario_dir / "registry"))
    return str(scenario_dir / "cloud.sqlite3")


def run_scenario(sc: Scenario, opts: argparse.Namespace, root: Path, flags: AgentFlags,
                 registries: control.Registries) -> ScenarioResult:
    n_agents, frames, fps = load(sc, opts)
    scenario_dir = opts.logs / sc.name
    scenario_dir.mkdir(parents=True, exist_ok=True)
    deadline = Deadline(opts.deadline_s)
    t_wall = time.perf_counter()
    fault_at, target = None, ""
    alive_at_end: set[str] = set()
    end_s = 0.0
    db = registry_for(sc, scenario_dir, registries)
    with Cluster(root, opts.python, scenario_dir, opts.sample_s) as cluster:
        panel = ["--panel-port", "0"] if sc.registry == "small-disk" else []  # the operator view's edges, checked there
        clouds = [cluster.start_service("cloud", "cloud" if sc.clouds == 1 else f"cloud-{k}",
                                        ["cloud-server", *flags.plain, "--port", "0", "--metrics-port", "0", "--db", db, *panel],
                                        deadline)
                  for k in range(sc.clouds)]
        if sc.clouds > 1:
            clouds = control.preferred(cluster, clouds, deadline, sc.first)
        cloud_arg = ",".join(c.target for c in clouds)
        edges = [cluster.start_service("edge", f"edge-{i}", ["edge-node", *flags.plain, "--cloud", cloud_arg, "--port", "0",
                                                              "--metrics-port", "0"], deadline) for i in range(sc.edges)]
        run = Run(cluster, deadline, opts, flags, scenario_dir, clouds[0], edges, [], {}, {}, clouds=clouds,
                  cloud_arg=cloud_arg, db=db, fps=fps)
        if sc.clouds > 1:
            cluster.guards.append(control.watch_leaders(run))
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
        fault_at = run.fault_at if run.fault_at is not None else \
            min((when for t in cluster.tiers for when, _ in t.signals if when >= t_before), default=None)
        cluster.wait_exit(run.agents, deadline)
        cluster.sample()
        end_s = cluster.now()
        alive_at_end = {t.name for t in cluster.tiers if t.alive}
        if sc.check is not None:
            sc.check(run, fault_at)
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
        logs=str(scenario_dir), notes=run.notes, passed=False, failures=[], checks=run.checks,
    )
    result.failures = verdict(result, sc.recovery_target_s) + run.failures
    result.passed = not result.failures
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=[s.name for s in SCENARIOS], choices=[s.name for s in SCENARIOS])
    parser.add_argument("--agents", type=int, default=3, help="agents in every scenario but cloud-restart")
    parser.add_argument("--frames", type=int, default=3000, help="frames each of those agents is asked to send")
    parser.add_argument("--cloud-agents", type=int, default=10, help="agents in cloud-restart")
    parser.add_argument("--cloud-frames", type=int, default=600, help="frames each cloud-restart agent is asked to send")
    parser.add_argument("--paced-agents", type=int, default=4, help="agents in gray-edge and disk-full")
    parser.add_argument("--paced-fps", type=float, default=10.0, help="frames per second each of those agents sends")
    parser.add_argument("--paced-s", type=float, default=110.0, help="seconds each of those agents streams")
    parser.add_argument("--stop-s", type=float, default=75.0, help="gray-edge: seconds the edge node stays stopped")
    parser.add_argument("--full-s", type=float, default=30.0, help="disk-full: seconds the registry's disk stays full")
    parser.add_argument("--late-frames", type=int, default=100, help="disk-full: frames of the device that registers meanwhile")
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
    root, code, flags = start_harness(opts, "ecd-faults-")
    results = []
    t0 = time.perf_counter()
    by_name = {s.name: s for s in SCENARIOS}
    errors: dict[str, str] = {}
    with ExitStack() as stack:
        registries = control.Registries(stack)
        for name in opts.scenarios:
            try:
                r = run_scenario(by_name[name], opts, root, flags, registries)
            except (StartError, TimeoutError) as e:  # a tier or a registry that never came up: nothing measured
                errors[name] = str(e)
                print(f"\n== {name}: could not run: {e}")
                continue
            print_result(r)
            results.append(r)
    print_summary(results)
    write_results(opts.out, code, flags, opts, t0, scenarios=[asdict(r) for r in results], errors=errors)
    return 0 if all(r.passed for r in results) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
