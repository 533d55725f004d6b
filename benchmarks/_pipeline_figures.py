"""The pipeline benchmark's figures, for ``benchmarks/pipeline.py``: which splits and flags a run
uses, one look at every tier (CPU and RSS from ``/proc``, its metrics, the machine's CPU), and what a
window between two looks comes to: throughput, CPU per frame and busy cores per tier, bytes per frame
per hop, the tier that limits it, and the ratios against the single process.

Pure but for :func:`snapshot` and :func:`machine_cpu` (tested in ``tests/benchmarks/test_pipeline_bench.py``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from _metrics import CLK_TCK, metric_sum, read_proc, scrape
from _procs import Tier

MB = 2**20


# --- which splits and flags --------------------------------------------------------------------------


def resolve_splits(spec: list[str], n_blocks: int) -> list[int]:
    """``0``, ``mid`` (n // 2), ``n`` (n_blocks) or integers, clipped to the model's blocks, deduplicated, in order."""
    out: list[int] = []
    for token in spec:
        t = str(token).strip().lower()
        if t == "n":
            s = n_blocks
        elif t == "mid":
            s = n_blocks // 2
        else:
            try:
                s = int(t)
            except ValueError:
                raise SystemExit(f"--splits: expected integers, 'mid' or 'n', got {token!r}") from None
        s = min(max(s, 0), n_blocks)
        if s not in out:
            out.append(s)
    return out


def help_flags(text: str) -> set[str]:
    """The long options an argparse ``--help`` text lists."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def filter_args(args: list[str], known: set[str]) -> tuple[list[str], list[str]]:
    """``args`` without the ``--flag value`` pairs (or bare ``--flag``) whose flag is not in ``known``; and
    the flags dropped. A value never starts with ``--``."""
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if a.startswith("--") and a not in known:
            dropped.append(a)
            i += 2 if has_value else 1
            continue
        kept.append(a)
        if has_value and a.startswith("--"):
            kept.append(args[i + 1])
            i += 2
        else:
            i += 1
    return kept, dropped


def machine_cpu() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole machine, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0, 0.0
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # guest time is already in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def per_frame(delta: float | None, frames: float) -> float | None:
    return None if delta is None or frames <= 0 else delta / frames


def median_dict(runs: list[dict]) -> dict:
    """Field-wise median of numeric leaves across repeats (the first run's shape; non-numbers from the first)."""
    if not runs:
        return {}
    if len(runs) == 1:
        return runs[0]
    out: dict = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, dict):
            out[key] = median_dict([v for v in values if isinstance(v, dict)])
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            out[key] = float(np.median(nums)) if nums else None
        else:
            out[key] = first
    out["repeats"] = len(runs)
    return out


def ratios(row: dict, base: dict) -> dict:
    """The pipeline against its baseline: throughput ratio (pipeline / single) and p50 difference, ms."""
    out: dict = {}
    thr, b_thr = row.get("throughput_fps"), base.get("throughput_fps")
    if thr and b_thr:
        out["throughput_ratio"] = thr / b_thr
    p50, b_p50 = row.get("p50_s"), base.get("p50_s")
    if p50 is not None and b_p50 is not None:
        out["p50_minus_single_ms"] = (p50 - b_p50) * 1e3
        out["p50_ratio"] = p50 / b_p50 if b_p50 else None
    cpu, b_cpu = (row.get("cpu_per_frame_s") or {}).get("pipeline"), base.get("cpu_per_frame_s")
    if cpu is not None and b_cpu:
        out["cpu_per_frame_ratio"] = cpu / b_cpu  # every tier's CPU per frame over the single process's
    return out


def bottleneck(busy: dict[str, float | None], cores: int) -> str:
    """Which tier limits a throughput run: one at ~one core (a Python process serialised on its GIL
    and its own threads), or the machine when every core is busy."""
    ours = {k: v for k, v in busy.items() if v is not None and k not in ("machine", "other")}
    machine = busy.get("machine")
    if machine is not None and machine >= 0.9 * cores:
        top = max(ours, key=lambda k: ours[k], default="?")
        other = busy.get("other")
        return (f"machine ({machine:.2f}/{cores} cores busy; most: {top} {ours.get(top, 0):.2f}"
                f"{f'; other work {other:.2f}' if other is not None else ''})")
    if ours:
        top = max(ours, key=lambda k: ours[k])
        return f"{top} ({ours[top]:.2f} cores)"
    return "?"


# --- one look at every tier, and a window between two ----------------------------------------------


def _proc(tier: Tier) -> tuple[float, int, int] | None:
    with tier.lock:
        return read_proc(tier.pid) if tier.alive else None


def snapshot(groups: dict[str, list[Tier]]) -> dict:
    """One look at every tier: CPU and RSS from /proc, metrics from its endpoint; and the machine's CPU."""
    busy, total = machine_cpu()
    snap: dict = {"t": time.monotonic(), "machine_busy_s": busy, "machine_total_s": total, "groups": {}}
    for name, tiers in groups.items():
        cpu, rss, peak, metrics = 0.0, 0, 0, []
        for t in tiers:
            u = _proc(t)
            if u is not None:
                cpu += u[0]
                rss += u[1]
                peak = max(peak, u[2])
            if t.metrics_port > 0:
                got = scrape(t.metrics_port, 2.0)
                if got is None:
                    snap["scrape_failed"] = t.name
                metrics.extend(got or [])
        snap["groups"][name] = {"cpu_s": cpu, "rss": rss, "rss_peak": peak, "metrics": metrics}
    return snap


def agent_counts(snap: dict) -> tuple[int, int, float]:
    """(answered, made, device->edge wire bytes) of the agents in a snapshot."""
    m = snap["groups"]["agents"]["metrics"]
    return (int(metric_sum(m, "ecd_frames_total", service="device")),
            int(metric_sum(m, "ecd_stage_seconds_count", service="device", stage="device_compute")),
            metric_sum(m, "ecd_hop_bytes_total", service="device", hop="device_to_edge"))


def window_figures(a: dict, b: dict, cores: int) -> dict:
    """Throughput, CPU per frame and busy cores per tier, bytes per frame per hop, between two snapshots."""
    if a.get("scrape_failed") or b.get("scrape_failed"):
        raise RuntimeError(f"metrics of {a.get('scrape_failed') or b.get('scrape_failed')} unreadable at a window's edge")
    dt = b["t"] - a["t"]
    ans_a, made_a, wire_a = agent_counts(a)
    ans_b, made_b, wire_b = agent_counts(b)
    frames = ans_b - ans_a
    out: dict = {"window_s": dt, "window_frames": frames, "throughput_fps": frames / dt if dt > 0 else None,
                 "cpu_per_frame_s": {}, "busy_cores": {}, "rss_mb": {}, "rss_peak_mb": {}}
    for name in b["groups"]:
        dc = b["groups"][name]["cpu_s"] - a["groups"][name]["cpu_s"]
        out["cpu_per_frame_s"][name] = per_frame(dc, frames)
        out["busy_cores"][name] = dc / dt if dt > 0 else None
        out["rss_mb"][name] = b["groups"][name]["rss"] / MB
        out["rss_peak_mb"][name] = b["groups"][name]["rss_peak"] / MB
    ours = sum(v for v in out["busy_cores"].values() if v is not None)
    machine = (b["machine_busy_s"] - a["machine_busy_s"]) / dt if dt > 0 else None
    out["busy_cores"]["machine"] = machine
    out["busy_cores"]["other"] = None if machine is None else max(0.0, machine - ours)
    out["cpu_per_frame_s"]["pipeline"] = per_frame(sum(b["groups"][n]["cpu_s"] - a["groups"][n]["cpu_s"] for n in b["groups"]), frames)

    def e2c(s: dict) -> float:
        return metric_sum(s["groups"]["edge"]["metrics"], "ecd_hop_bytes_total", service="edge", hop="edge_to_cloud")

    out["device_to_edge_wire_bytes_per_frame"] = per_frame(wire_b - wire_a, made_b - made_a)
    out["edge_to_cloud_bytes_per_frame"] = per_frame(e2c(b) - e2c(a), frames)
    out["device_compute_mean_s"] = _hist_mean(a, b, "agents", "device", "device_compute")
    out["stage_mean_ms"] = stage_means(a, b)
    out["bottleneck"] = bottleneck(out["busy_cores"], cores)
    return out


def stage_means(a: dict, b: dict) -> dict[str, float]:
    """Every tier's own stage timings over the window (``ecd_stage_seconds``: mean ms per observation),
    as ``service/stage``: where the time goes inside a tier, as the tier reports it."""
    def sums(s: dict) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        for g in s["groups"].values():
            for name, labels, value in g["metrics"]:
                if name in ("ecd_stage_seconds_sum", "ecd_stage_seconds_count"):
                    key = (labels.get("service", "?"), labels.get("stage", "?"))
                    out.setdefault(key, [0.0, 0.0])[name.endswith("_count")] += value
        return out

    sa, sb = sums(a), sums(b)
    means = {}
    for key, (total, count) in sorted(sb.items()):
        t0, c0 = sa.get(key, [0.0, 0.0])
        if count - c0 > 0:
            means[f"{key[0]}/{key[1]}"] = round((total - t0) / (count - c0) * 1e3, 4)
    return means


def _hist_mean(a: dict, b: dict, group: str, service: str, stage: str) -> float | None:
    def get(s: dict, suffix: str) -> float:
        return metric_sum(s["groups"][group]["metrics"], f"ecd_stage_seconds_{suffix}", service=service, stage=stage)

    n = get(b, "count") - get(a, "count")
    return (get(b, "sum") - get(a, "sum")) / n if n > 0 else None
