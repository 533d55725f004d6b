"""The control plane's own failures, for ``benchmarks/faults.py`` (issue 29): cloud replicas on one
PostgreSQL registry (kill -9 of the replica the edge uses, of the scheduler leader), a hung edge
node (SIGSTOP, then SIGCONT), and the registry's disk filled to the last byte.

Each fault here is a function of the scenario's :class:`~_fault_run.Run`; each check reads what the
run recorded and adds its figures to ``run.checks`` and its misses to ``run.failures``:

* replicas: exactly one ``ecd_scheduler_leader 1`` before the fault and at the end; the survivor
  leads within ``LEADER_FAILOVER_TARGET_S`` of the leader's kill; placement versions, read from the
  registry in the order they were computed, strictly increasing;
* gray edge: no agent goes more than ``STALL_TARGET_S`` without an answer while it has frames out;
* disk full: frames answered while the disk is full; the cloud's log names the full disk once and the
  recovery once, with no traceback; the edges stay alive in the operator view; an edge node started
  meanwhile is alive (waiting) and serves once space returns; a device registering meanwhile is told
  "registry disk full" and registers once space returns.

Registries: the replicas share a database on a PostgreSQL server this module starts once per
harness run (``tests/postgres_server.py``, Debian's ``postgresql``); the disk-full scenario keeps a
SQLite registry on a small tmpfs it mounts (root only; elsewhere the scenario reports why it
cannot run).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from _fault_run import Run
from _metrics import Sample, flat_runs, metric_sum
from _procs import Cluster, Deadline, StartError, Tier, pace

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
import postgres_server  # tests/postgres_server.py: the server the registry's tests use
from small_disk import fill  # tests/small_disk.py: as the registry's disk-full test fills its disk

LEADER_FAILOVER_TARGET_S = 15.0
STALL_TARGET_S = 15.0
TMPFS_SIZE = "4m"


# --- registries ----------------------------------------------------------------------------------


class Registries:
    """Where a scenario's cloud keeps its registry; what it set up is undone when the harness ends."""

    def __init__(self, stack: ExitStack):
        self.stack = stack
        self.pg: postgres_server.PostgresServer | None = None

    def postgres(self) -> str:
        """A fresh database on the harness's PostgreSQL server (started on first use)."""
        if self.pg is None:
            reason = postgres_server.unavailable()
            if reason:
                raise StartError(reason)
            self.pg = self.stack.enter_context(postgres_server.running())
        url = self.pg.create_database()
        self.stack.callback(self.pg.drop_database, url)
        return url

    def small_disk(self, folder: Path) -> Path:
        """A tmpfs of ``TMPFS_SIZE`` at ``folder``, unmounted when the harness ends."""
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode:
            raise StartError(f"cannot mount a tmpfs for the registry (needs root): {done.stderr.strip()}")
        self.stack.callback(subprocess.run, ["umount", "-l", str(folder)], check=False)
        return folder / "cloud.sqlite3"


# --- replicas ------------------------------------------------------------------------------------


def watch_leaders(run: Run) -> Callable[[Tier, Sample], None]:
    """A sampling guard: each cloud replica's ``ecd_scheduler_leader`` at each sample."""

    def guard(tier: Tier, sample: Sample) -> None:
        if tier.kind == "cloud" and tier.alive:
            run.leaders.setdefault(tier.name, []).append((sample.t, metric_sum(tier.metrics, "ecd_scheduler_leader")))

    return guard


def leaders_at(run: Run, t: float) -> list[str]:
    """The replicas whose last sample at or before ``t`` said they lead (replicas dead by then aside)."""
    out = []
    for c in run.clouds:
        if c.t_exit is not None and c.t_exit <= t:
            continue
        seen = [v for when, v in run.leaders.get(c.name, []) if when <= t]
        if seen and seen[-1] == 1.0:
            out.append(c.name)
    return out


def preferred(cluster: Cluster, clouds: list[Tier], deadline: Deadline, first: str) -> list[Tier]:
    """The replicas in the order the tiers' ``--cloud`` lists them: the ``leader`` or a ``follower``
    first, once one of them leads (the first to start takes the lease)."""

    def leader() -> Tier | None:
        cluster.sample(clouds)
        leading = [c for c in clouds if c.metrics and metric_sum(c.metrics, "ecd_scheduler_leader") == 1.0]
        return leading[0] if len(leading) == 1 else None

    for _ in range(100):
        lead = leader()
        if lead is not None:
            rest = [c for c in clouds if c is not lead]
            return [lead, *rest] if first == "leader" else [*rest, lead]
        pace(0.2, deadline)
    raise StartError("no replica led the schedulers within 20 s of starting")


def kill_replica(run: Run) -> str:
    """kill -9 of the replica the edges and agents use (the first of their ``--cloud`` list); then an
    edge node and a device join: the replica leading afterwards places them."""
    run.cluster.sample()
    leading = leaders_at(run, run.cluster.now())
    run.checks["leaders_before"] = leading
    victim = run.clouds[0]
    run.checks["killed_was_leader"] = victim.name in leading
    run.checks["placement_versions_at_fault"] = placement_versions(run.db)
    run.cluster.signal(victim, signal.SIGKILL)
    run.cluster.wait_exit([victim], run.deadline, timeout_s=10.0)
    if victim.name in leading:  # wait for the survivor to lead, the agents streaming meanwhile
        run.cluster.wait_until(lambda: bool(leaders_at(run, run.cluster.now())), run.deadline, LEADER_FAILOVER_TARGET_S + 10.0)
    run.edges.append(run.cluster.spawn("edge", "edge-after", ["edge-node", *run.flags.plain, "--cloud", run.cloud_arg,
                                                               "--port", "0", "--metrics-port", "0"]))
    name = "agent-after"
    run.agents.append(run.cluster.spawn("agent", name, run.agent_args(name, run.opts.late_frames)))
    return victim.name


def placement_versions(url: str) -> list[int]:
    """The placement versions in the registry, in the order they were computed."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version FROM placements ORDER BY computed_unix, version")).all()
    finally:
        engine.dispose()
    return [r[0] for r in rows]


def check_replicas(run: Run, fault_at: float | None) -> None:
    before = run.checks.get("leaders_before", [])
    if len(before) != 1:
        run.failures.append(f"{len(before)} replicas led before the fault (want exactly 1: {before})")
    if fault_at is not None and run.checks.get("killed_was_leader"):
        survivor_led = [t for c in run.clouds if c.alive for t, v in run.leaders.get(c.name, []) if t > fault_at and v == 1.0]
        took = round(min(survivor_led) - fault_at, 2) if survivor_led else None
        run.checks["leader_failover_s"] = took
        if took is None or took > LEADER_FAILOVER_TARGET_S:
            run.failures.append(f"survivor led {'never' if took is None else f'after {took} s'} "
                                f"(target <= {LEADER_FAILOVER_TARGET_S:g} s)")
    at_end = leaders_at(run, run.cluster.now())
    run.checks["leaders_at_end"] = at_end
    if len(at_end) != 1:
        run.failures.append(f"{len(at_end)} replicas lead at the end (want exactly 1: {at_end})")
    before = run.checks.get("placement_versions_at_fault", [])
    run.cluster.wait_until(lambda: len(placement_versions(run.db)) > len(before), run.deadline, 30.0)  # edge-after's
    versions = placement_versions(run.db)
    run.checks["placement_versions"] = versions
    if len(versions) <= len(before):
        run.failures.append(f"no placement after the fault (versions {versions})")
    if any(b <= a for a, b in zip(versions, versions[1:])):
        run.failures.append(f"placement versions not strictly increasing: {versions}")


# --- a hung edge ---------------------------------------------------------------------------------


def stop_edge(run: Run) -> str:
    """SIGSTOP the busiest edge node for ``--stop-s``, then SIGCONT: accepted frames, no answers."""
    run.cluster.sample()
    edge = max((e for e in run.edges if e.alive), key=lambda e: e.answered)
    run.cluster.signal(edge, signal.SIGSTOP)
    try:
        pace(run.opts.stop_s, run.deadline)
    finally:
        run.cluster.signal(edge, signal.SIGCONT)
    return edge.name


def check_stalls(run: Run, _fault_at: float | None) -> None:
    """Each agent's longest time without an answer while it had frames to send."""
    longest: dict[str, float] = {}
    for a in run.agents:
        asked = run.asked[a.name]
        runs = flat_runs([(s.t, s.answered, s.answered < asked) for s in a.samples], 0.0, a.t_exit)
        longest[a.name] = round(max((end - start for start, end, _ in runs), default=0.0), 2)
    run.checks["longest_stall_s"] = longest
    slow = {n: s for n, s in longest.items() if s > STALL_TARGET_S}
    if slow:
        run.failures.append(f"agents stalled > {STALL_TARGET_S:g} s: {slow}")


# --- a full disk ---------------------------------------------------------------------------------


def operator_edges(panel_port: int) -> dict[str, bool]:
    """Each edge's ``alive`` in the cloud's operator view."""
    with urllib.request.urlopen(f"http://127.0.0.1:{panel_port}/api/overview", timeout=10) as r:
        return {e["edge_id"]: e["alive"] for e in json.load(r)["edges"]}


def writable(run: Run) -> float | None:
    """The cloud's ``ecd_registry_writable``; None where it does not export it (older code)."""
    run.cluster.sample([run.cloud])
    values = [v for name, _, v in run.cloud.metrics if name == "ecd_registry_writable"]
    return values[0] if values else None


def fill_disk(run: Run) -> str:
    """Fill the registry's filesystem for ``--full-s``; meanwhile start an edge node and a device;
    then free the space."""
    c = run.checks
    run.cluster.sample()
    run.fault_at = run.cluster.now()
    filler = fill(Path(run.db).parent)
    noticed = run.cluster.wait_until(lambda: writable(run) == 0.0, run.deadline, 30.0)
    c["cloud_noticed"] = noticed
    answered_at_full = sum(a.answered for a in run.agents)
    late = run.cluster.spawn("edge", "edge-late", ["edge-node", *run.flags.plain, "--cloud", run.cloud_arg, "--port", "0",
                                                   "--metrics-port", "0"])
    name = "agent-during"
    run.agents.append(run.cluster.spawn("agent", name, run.agent_args(name, run.opts.late_frames)))
    pace(run.opts.full_s, run.deadline)
    run.cluster.sample()
    c["answered_while_full"] = sum(a.answered for a in run.agents) - answered_at_full
    c["edge_late_alive_while_full"] = late.alive
    c["operator_view_while_full"] = operator_edges(run.cloud.ready["panel_port"])
    filler.unlink()
    c["writable_again"] = run.cluster.wait_until(lambda: writable(run) == 1.0, run.deadline, 30.0)
    try:
        run.cluster.wait_ready([late], run.deadline, 60.0)
        run.edges.append(late)
        c["edge_late_ready"] = True
    except StartError as e:
        c["edge_late_ready"] = False
        run.notes.append(str(e))
    return "registry disk"


def check_disk_full(run: Run, _fault_at: float | None) -> None:
    c, f = run.checks, run.failures
    if not c.get("cloud_noticed"):
        f.append("the cloud never reported its registry unwritable (ecd_registry_writable 0)")
    if not c.get("answered_while_full"):
        f.append("no frame answered while the disk was full")
    if not c.get("edge_late_alive_while_full"):
        f.append("an edge node started on the full disk exited")
    if not c.get("edge_late_ready"):
        f.append("the edge node started on the full disk never served once space returned")
    dead = [e for e, alive in c.get("operator_view_while_full", {}).items() if not alive]
    if dead:
        f.append(f"edges shown dead in the operator view while the disk was full: {dead}")
    log = run.cloud.log.read_text(errors="replace")
    c["log_disk_full_lines"] = sum("disk full" in line and "writes are refused" in line for line in log.splitlines())
    c["log_recovered_lines"] = sum("writes go through again" in line for line in log.splitlines())
    c["log_tracebacks"] = log.count("Traceback")
    if c["log_disk_full_lines"] != 1 or c["log_recovered_lines"] != 1:
        f.append(f"the cloud's log named the full disk {c['log_disk_full_lines']}x and its end "
                 f"{c['log_recovered_lines']}x (want once each)")
    if c["log_tracebacks"]:
        f.append(f"{c['log_tracebacks']} tracebacks in the cloud's log")
    during = next(a for a in run.agents if a.name == "agent-during")
    told = "registry disk full" in during.log.read_text(errors="replace")
    c["device_told_disk_full"] = told
    if not told:
        f.append("the device registering on the full disk was not told 'registry disk full'")
