"""The pure parts of the pipeline benchmark (benchmarks/pipeline.py, _pipeline_figures.py): which splits
and flags it uses, how a window's figures and ratios are computed. The benchmark itself runs real processes, by hand."""

from __future__ import annotations

import sys

import _pipeline_figures as figures
import pipeline
import pytest


def test_splits_resolve_names_clip_and_deduplicate():
    assert figures.resolve_splits(["0", "mid", "n"], 6) == [0, 3, 6]
    assert figures.resolve_splits(["0", "mid", "n"], 20) == [0, 10, 20]
    assert figures.resolve_splits(["n", "99", "6", "-1"], 6) == [6, 0]
    with pytest.raises(SystemExit):
        figures.resolve_splits(["half"], 6)


def test_flags_an_older_checkout_lacks_are_not_passed():
    known = figures.help_flags("usage: x [-h] [--cloud CLOUD] [--frames FRAMES]\n  --split SPLIT  the split\n  --follow, --no-follow")
    assert known == {"--cloud", "--frames", "--split", "--follow", "--no-follow"}
    kept, dropped = figures.filter_args(["--cloud", "h:1", "--fps", "5", "--split", "3", "--new-bool", "--frames", "0"], known)
    assert kept == ["--cloud", "h:1", "--split", "3", "--frames", "0"]
    assert dropped == ["--fps", "--new-bool"]


def _snap(t, answered, made, wire, e2c, cpu, busy, dc_sum):
    agent = [("ecd_frames_total", {"service": "device", "outcome": "ok"}, answered),
             ("ecd_stage_seconds_count", {"service": "device", "stage": "device_compute"}, made),
             ("ecd_stage_seconds_sum", {"service": "device", "stage": "device_compute"}, dc_sum),
             ("ecd_stage_seconds_count", {"service": "device", "stage": "end_to_end"}, 99.0),
             ("ecd_hop_bytes_total", {"service": "device", "hop": "device_to_edge"}, wire)]
    edge = [("ecd_hop_bytes_total", {"service": "edge", "hop": "edge_to_cloud"}, e2c)]
    return {"t": t, "machine_busy_s": busy, "machine_total_s": 2 * t, "groups": {
        "cloud": {"cpu_s": cpu[0], "rss": 100 * 2**20, "rss_peak": 120 * 2**20, "metrics": []},
        "edge": {"cpu_s": cpu[1], "rss": 50 * 2**20, "rss_peak": 60 * 2**20, "metrics": edge},
        "agents": {"cpu_s": cpu[2], "rss": 80 * 2**20, "rss_peak": 90 * 2**20, "metrics": agent}}}


def test_window_figures_per_frame_and_per_tier():
    a = _snap(10.0, 100, 100, 10_000, 5_000, (1.0, 2.0, 3.0), 50.0, 0.1)
    b = _snap(12.0, 300, 300, 30_000, 7_000, (1.2, 2.6, 4.0), 53.8, 0.3)
    w = figures.window_figures(a, b, cores=2)
    assert w["window_frames"] == 200 and w["throughput_fps"] == pytest.approx(100.0)
    assert w["cpu_per_frame_s"]["cloud"] == pytest.approx(0.001)
    assert w["cpu_per_frame_s"]["edge"] == pytest.approx(0.003)
    assert w["cpu_per_frame_s"]["agents"] == pytest.approx(0.005)
    assert w["cpu_per_frame_s"]["pipeline"] == pytest.approx(0.009)
    assert w["busy_cores"]["agents"] == pytest.approx(0.5)
    assert w["busy_cores"]["machine"] == pytest.approx(1.9)
    assert w["busy_cores"]["other"] == pytest.approx(1.9 - 0.9)
    assert w["device_to_edge_wire_bytes_per_frame"] == pytest.approx(100.0)  # 20,000 B over 200 frames made
    assert w["edge_to_cloud_bytes_per_frame"] == pytest.approx(10.0)
    assert w["device_compute_mean_s"] == pytest.approx(0.001)
    assert w["stage_mean_ms"]["device/device_compute"] == pytest.approx(1.0)
    assert w["rss_mb"] == {"cloud": 100.0, "edge": 50.0, "agents": 80.0}
    assert w["bottleneck"].startswith("machine")


def test_an_unreadable_window_edge_is_an_error_not_zero_frames():
    a = _snap(10.0, 100, 0, 0, 0, (0, 0, 0), 0, 0)
    b = {**_snap(12.0, 0, 0, 0, 0, (0, 0, 0), 0, 0), "scrape_failed": "agent-0"}
    with pytest.raises(RuntimeError, match="agent-0"):
        figures.window_figures(a, b, cores=2)


def test_ratios_and_bottleneck():
    r = figures.ratios({"throughput_fps": 450.0, "p50_s": 0.0015, "cpu_per_frame_s": {"pipeline": 0.004}},
                        {"throughput_fps": 900.0, "p50_s": 0.0005, "cpu_per_frame_s": 0.0005})
    assert r["throughput_ratio"] == pytest.approx(0.5)
    assert r["cpu_per_frame_ratio"] == pytest.approx(8.0)
    assert r["p50_minus_single_ms"] == pytest.approx(1.0)
    assert figures.bottleneck({"agents": 0.98, "edge": 0.4, "cloud": 0.2, "machine": 1.6, "other": 0.0}, 2) == "agents (0.98 cores)"
    assert "machine" in figures.bottleneck({"agents": 0.5, "edge": 0.6, "machine": 1.95, "other": 0.85}, 2)


def test_medians_over_repeats_keep_the_shape():
    runs = [{"throughput_fps": 100.0, "cpu_per_frame_s": {"edge": 0.002}, "bottleneck": "edge", "ok": True},
            {"throughput_fps": 300.0, "cpu_per_frame_s": {"edge": 0.004}, "bottleneck": "agents", "ok": False},
            {"throughput_fps": 200.0, "cpu_per_frame_s": {"edge": 0.003}, "bottleneck": "cloud", "ok": True}]
    m = figures.median_dict(runs)
    assert m["throughput_fps"] == 200.0 and m["cpu_per_frame_s"]["edge"] == pytest.approx(0.003)
    assert m["bottleneck"] == "edge" and m["ok"] is True and m["repeats"] == 3
    assert figures.median_dict(runs[:1]) == runs[0]


def test_quick_is_a_small_subset():
    opts = pipeline.parse(["--quick"])
    assert opts.models == ["digits_cnn"] and opts.in_flight == [16] and not opts.extras and opts.frames <= 100


def test_profile_buckets_take_the_innermost_known_frame_and_skip_waiting_threads():
    import _profile

    raw = "\n".join([
        "Thread.run (threading.py:982);_worker (concurrent/futures/thread.py:83);run (ecd/partition.py:157);"
        "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:406) 6",
        "run_forever (asyncio/base_events.py:607);Handle._run (asyncio/events.py:80) 3",
        "Handle._run (asyncio/events.py:80);process (cloud_server/core.py:627);device (cloud_server/registry.py:378);"
        "_execute (cloud_server/registry.py:309) 1",
        "Handle._run (asyncio/events.py:80);read (cloud_server/service.py:180);decode (ecd/codec.py:99);"
        "_wrapfunc (numpy/_core/fromnumeric.py:54) 2",
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81) 50",  # a pool worker waiting
        "serve_forever (socketserver.py:233);select (selectors.py:415) 40",
        "garbage without a count",
    ])
    shares, samples = _profile.buckets(raw)
    assert samples == 12
    assert shares == pytest.approx({"model": 0.5, "grpc+asyncio": 0.25, "registry": 1 / 12, "codec": 2 / 12})
    assert _profile.buckets("")[0] == {}


def test_transport_floor_runs_the_bare_chain_and_reaps_it():
    import psutil
    from _transport_floor import transport_floor

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    rows = transport_floor(sys.executable, [1, 4], 256, window_s=0.4, warmup_s=0.2, timeout_s=60)
    assert [r["in_flight"] for r in rows] == [1, 4]
    assert rows[0]["p50_s"] > 0 and rows[1]["p50_s"] is None
    for r in rows:
        assert r["frames_per_s"] > 0
        cpu = r["cpu_per_frame_s"]
        assert cpu["all"] == pytest.approx(cpu["client"] + cpu["relay"] + cpu["echo"])
        assert cpu["relay"] > 0 and cpu["echo"] > 0
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
