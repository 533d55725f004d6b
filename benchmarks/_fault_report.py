"""What ``benchmarks/faults.py`` reports of a scenario: its result, the verdict against the issue's
acceptance (0 lost, 0 never sent, 0 duplicated, no wedge, recovery under target), and the tables
it prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from _counts import AgentCount, Totals
from _metrics import Wedge


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
    checks: dict[str, object]  # the scenario's own figures (leader failover, longest stall, disk-full checks)


def verdict(r: ScenarioResult, recovery_target_s: float | None) -> list[str]:
    """Why the scenario failed; empty when it passed."""
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
    elif recovery_target_s is not None and (r.recovery_all_s is None or r.recovery_all_s >= recovery_target_s):
        failures.append(f"recovery {'never' if r.recovery_all_s is None else f'{r.recovery_all_s:.1f} s'} "
                        f"(target < {recovery_target_s:g} s)")
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
    for key, value in r.checks.items():
        print(f"   {key}: {value}")
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
