"""What the fault, load and pipeline harnesses read of a running tier, for ``_procs.py``'s
:class:`~_procs.Cluster` and the benchmarks that sample it: its Prometheus metrics (scraped, parsed,
summed), its CPU and RSS from ``/proc``, and the stalls computed from those samples after a run.

Read from outside the tier, so the numbers do not depend on the code under test; pure but for
:func:`scrape` and :func:`read_proc` (tested in ``tests/benchmarks/test_fault_harness.py``).
"""

from __future__ import annotations

import http.client
import math
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from collections.abc import Iterable, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- samples and metrics -----------------------------------------------------------------------


class Sample(NamedTuple):
    """One look at a tier. ``answered``: frames it answered (ok or error); ``made``: an agent's frames
    made (sent), an edge's frames computed; ``pending``: frames an edge holds unanswered."""

    t: float
    answered: int
    made: int | None = None
    pending: int = 0
    cpu_s: float | None = None
    rss_bytes: int | None = None


Metric = tuple[str, dict[str, str], float]

_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[Metric]:
    """The series in a Prometheus text exposition: (name, labels, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            try:
                value = float(m.group(3))
            except ValueError:
                continue
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def metric_sum(metrics: Iterable[Metric], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in metrics if n == name and all(lab.get(k) == want for k, want in labels.items()))


def progress(kind: str, metrics: list[Metric]) -> tuple[int, int | None, int]:
    """(answered, made, pending) of a tier from its metrics."""
    service = {"agent": "device"}.get(kind, kind)
    answered = int(metric_sum(metrics, "ecd_frames_total", service=service))
    if kind == "agent":
        return answered, int(metric_sum(metrics, "ecd_stage_seconds_count", service="device", stage="device_compute")), 0
    if kind == "edge":
        computed = int(metric_sum(metrics, "ecd_stage_seconds_count", service="edge", stage="edge_compute"))
        ok = int(metric_sum(metrics, "ecd_frames_total", service="edge", outcome="ok"))
        queued = int(metric_sum(metrics, "ecd_queue_depth", service="edge"))
        return answered, computed, max(computed - ok, queued, 0)
    return answered, None, 0


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's ``histogram_quantile``: ``buckets`` maps an upper bound (``inf`` included) to
    its cumulative count; linear inside a bucket, the last finite bound for the +Inf bucket."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return prev_bound
            if count == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = b, count
    return prev_bound


def beyond_top(q: float, buckets: dict[float, float]) -> bool:
    """Whether quantile ``q`` falls in the +Inf bucket (its value is then only "at least the top bound")."""
    finite = [b for b in buckets if not math.isinf(b)]
    total = max(buckets.values(), default=0.0)
    return bool(finite) and total > 0 and buckets[max(finite)] < q * total


def latency_buckets(metrics: list[Metric], service: str = "device", stage: str = "end_to_end") -> dict[float, float]:
    out: dict[float, float] = {}
    for name, labels, value in metrics:
        if name == "ecd_stage_seconds_bucket" and labels.get("service") == service and labels.get("stage") == stage:
            le = float(labels["le"].replace("+Inf", "inf"))
            out[le] = out.get(le, 0.0) + value
    return out


def scrape(port: int, timeout_s: float = 1.0) -> list[Metric] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            return parse_metrics(r.read().decode())
    except (OSError, ValueError, http.client.HTTPException):  # e.g. IncompleteRead from a tier killed mid-answer
        return None


def read_proc(pid: int) -> tuple[float, int, int] | None:
    """(CPU seconds, RSS bytes, peak RSS bytes) from /proc; None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is the state (field 3 of proc(5))
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    kb = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return cpu, int(kb.get("VmRSS", 0)) * 1024, int(kb.get("VmHWM", 0)) * 1024


# --- wedges and recovery (pure: computed from samples after the run) ----------------------------


@dataclass
class Wedge:
    """A tier alive with frames outstanding that made no progress for ``seconds``."""

    tier: str
    start_s: float
    seconds: float
    open_at_end: bool  # still wedged when the scenario ended


def flat_runs(points: Sequence[tuple[float, int, bool]], min_s: float, end_s: float | None = None) -> list[tuple[float, float, bool]]:
    """Intervals (start, end, open) where ``count`` stayed flat while ``outstanding`` held, lasting
    at least ``min_s``. ``points``: (t, count, outstanding) in time order; ``end_s``: when watching
    stopped (an interval still running then is open and ends there)."""
    runs = []
    start: float | None = None
    last_t, last_count = None, None
    for t, count, outstanding in points:
        if last_count is not None and count > last_count or not outstanding:
            if start is not None and last_t is not None and last_t - start >= min_s:
                runs.append((start, last_t, False))
            start = t if outstanding else None
        elif start is None:
            start = t
        last_t, last_count = t, count
    if start is not None and last_t is not None:
        end = max(last_t, end_s or last_t)
        if end - start >= min_s:
            runs.append((start, end, end_s is not None))
    return runs


def first_progress(samples: Sequence[Sample], after_s: float, baseline: int) -> float | None:
    """When a tier first answered more than ``baseline`` frames, after ``after_s``."""
    for s in samples:
        if s.t > after_s and s.answered > baseline:
            return s.t
    return None
