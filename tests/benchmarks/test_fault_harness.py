"""The pure parts of the fault and load harness (benchmarks/_metrics.py, _counts.py): how frames are
counted, how a stall is found, how metrics are read. The harness itself runs real processes and is run by hand."""

from __future__ import annotations

import math

import _counts as accounting
import _metrics as metrics
import pytest

AGENT_METRICS = """\
# HELP ecd_frames_total Frames handled, by outcome
# TYPE ecd_frames_total counter
ecd_frames_total{outcome="ok",service="device"} 10.0
ecd_frames_total{outcome="error",service="device"} 2.0
ecd_stage_seconds_count{service="device",stage="device_compute"} 13.0
ecd_stage_seconds_bucket{le="0.5",service="device",stage="end_to_end"} 8.0
ecd_stage_seconds_bucket{le="+Inf",service="device",stage="end_to_end"} 10.0
"""

EDGE_METRICS = """\
ecd_frames_total{outcome="ok",service="edge"} 15.0
ecd_frames_total{outcome="error",service="edge"} 0.0
ecd_stage_seconds_count{service="edge",stage="edge_compute"} 20.0
ecd_queue_depth{service="edge"} 2.0
"""


def test_progress_from_metrics() -> None:
    assert metrics.progress("agent", metrics.parse_metrics(AGENT_METRICS)) == (12, 13, 0)
    assert metrics.progress("edge", metrics.parse_metrics(EDGE_METRICS)) == (15, 20, 5)  # computed, not yet answered
    assert metrics.latency_buckets(metrics.parse_metrics(AGENT_METRICS)) == {0.5: 8.0, math.inf: 10.0}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 10.0, 0.5: 60.0, 1.0: 100.0, math.inf: 100.0}
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(0.42)
    assert metrics.histogram_quantile(0.99, buckets) == pytest.approx(0.9875)
    assert metrics.histogram_quantile(0.95, {1.0: 90.0, math.inf: 100.0}) == 1.0  # in +Inf: the last finite bound
    assert metrics.histogram_quantile(0.5, {}) is None
    assert metrics.beyond_top(0.95, {1.0: 90.0, math.inf: 100.0})
    assert not metrics.beyond_top(0.5, buckets)


def test_flat_runs_find_stalls_only_while_work_is_outstanding() -> None:
    points = [(0.0, 0, True), (1.0, 5, True)] + [(float(t), 5, True) for t in range(2, 15)] + [(15.0, 9, True)]
    assert metrics.flat_runs(points, 10.0) == [(1.0, 14.0, False)]
    idle = [(0.0, 5, True), (1.0, 5, False)] + [(float(t), 5, False) for t in range(2, 20)]
    assert metrics.flat_runs(idle, 10.0) == []  # nothing outstanding: not a wedge
    frozen = [(float(t), 3, True) for t in range(5)]
    assert metrics.flat_runs(frozen, 10.0, end_s=30.0) == [(0.0, 30.0, True)]  # still wedged when watching stopped
    assert metrics.flat_runs(frozen, 10.0) == []


def test_first_progress() -> None:
    samples = [metrics.Sample(1.0, 5), metrics.Sample(2.0, 5), metrics.Sample(3.0, 6)]
    assert metrics.first_progress(samples, 1.5, 5) == 3.0
    assert metrics.first_progress(samples, 3.0, 5) is None


def test_an_agent_is_counted_from_its_report_else_its_last_sample() -> None:
    today = accounting.count_agent("a", 3000, 0, {"frames": 3000, "errors": 0, "duplicates_dropped": 2}, None)
    assert (today.source, today.sent, today.answered, today.lost, today.unsent, today.duplicated) == ("report", 3000, 3000, 0, 0, 0)
    assert today.duplicates_dropped == 2
    extended = accounting.count_agent("a", 3000, 2, {"frames": 1033, "sent": 1056, "lost": 23, "exit": "UNAVAILABLE"}, None)
    assert (extended.lost, extended.unsent, extended.exit_reason) == (23, 1944, "UNAVAILABLE")
    died = accounting.count_agent("a", 3000, 2, None, metrics.Sample(9.0, 1033, 1056), message="ecd: error: UNAVAILABLE")
    assert (died.source, died.lost, died.unsent) == ("metrics", 23, 1944)
    assert died.lost + died.unsent == died.asked - died.answered
    never = accounting.count_agent("a", 3000, 2, None, None)
    assert (never.source, never.answered, never.lost, never.unsent) == ("none", 0, 3000, None)
    stopped = accounting.count_agent("a", 3000, -15, None, metrics.Sample(9.0, 734, 741), stopped=True)
    assert (stopped.lost, stopped.unsent) == (7, None)  # frames it was stopped before sending are no loss
    twice = accounting.count_agent("a", 10, 0, {"frames": 12, "sent": 10, "lost": 0}, None)
    assert twice.duplicated == 2


def test_totals_and_clean_json() -> None:
    counts = [accounting.count_agent("a", 100, 0, {"frames": 100}, None), accounting.count_agent("b", 100, 2, None, metrics.Sample(1.0, 40, 45))]
    t = accounting.totals(counts)
    assert (t.asked, t.sent, t.answered, t.lost, t.unsent, t.without_report) == (200, 145, 140, 5, 55, 1)
    assert accounting.clean_json({"x": [float("nan"), 1.0]}) == {"x": [None, 1.0]}


def test_agent_flags_from_help() -> None:
    today = "--frames FRAMES how many frames to stream (default 200)\n --max-in-flight N"
    extended = ("--frames FRAMES how many frames to stream (0 = until SIGTERM: a long-\n running agent) (default 200)\n"
                "--fps FPS frames per second (default 0.0)\n--state STATE a file (default '')")
    assert accounting.AgentFlags.from_help(today) == accounting.AgentFlags(False, False, False)
    assert accounting.AgentFlags.from_help(extended) == accounting.AgentFlags(True, True, True)
