"""What the control panel costs the device: a device agent streaming at a fixed rate, with the panel
off, and on with a page open (``GET /api/state`` once a second, as the page polls), side by side
in one run against one cloud and one edge node (each its own process on loopback).

Per run: CPU seconds of the agent process per frame answered over a steady-state window (from
/proc, after a warm-up), its RSS at the window's end and its peak (``ru_maxrss``), and its report's
lost and failed frames. Runs alternate off/on ``--repeats`` times so that drift on a shared
machine falls on both. Prints the medians and the on-minus-off differences, writes JSON.

    python benchmarks/panel_cost.py [--seconds 20] [--fps 20] [--repeats 2] [--out results/panel_cost.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _metrics import metric_sum, read_proc, scrape  # noqa: E402
from _procs import Cluster, Deadline, pace  # noqa: E402


def poll(url: str, every_s: float, stop: threading.Event, counts: list[int]) -> None:
    """What an open page does: load it, then fetch the state every ``every_s``."""
    urllib.request.urlopen(url, timeout=10).read()
    while not stop.wait(every_s):
        try:
            urllib.request.urlopen(url + "api/state", timeout=10).read()
            counts[0] += 1
        except OSError:
            counts[1] += 1


def answered(tier) -> int:
    metrics = scrape(tier.metrics_port, 5.0)
    return int(metric_sum(metrics or [], "ecd_frames_total", service="device"))


def one_run(c: Cluster, cloud: str, name: str, panel: bool, opts: argparse.Namespace, deadline: Deadline) -> dict:
    """An agent streaming without end at ``--fps``; CPU and frames are read over ``--seconds`` of
    steady state (after ``--warmup-s``: start-up, model download and the first sessions are no
    per-frame cost), then it is stopped with SIGTERM and its report read."""
    args = ["device-agent", "--insecure", "--cloud", cloud, "--name", name, "--frames", "0", "--fps", str(opts.fps),
            "--w-privacy", "0.5", "--metrics-port", "0"]
    if panel:
        args += ["--panel-port", "0"]
    tier = c.spawn("agent", name, args)
    c.wait_ready([tier], deadline, 120)
    stop, counts, poller = threading.Event(), [0, 0], None
    if panel:
        poller = threading.Thread(target=poll, args=(tier.ready["panel_url"], opts.poll_s, stop, counts), daemon=True)
        poller.start()
    pace(opts.warmup_s, deadline)
    cpu1, _, _ = read_proc(tier.pid)
    n1 = answered(tier)
    pace(opts.seconds, deadline)
    cpu2, rss, _ = read_proc(tier.pid)
    n2 = answered(tier)
    stop.set()
    if poller:
        poller.join(10)
    c.signal(tier, signal.SIGTERM)
    c.wait_exit([tier], deadline, 60)
    report = tier.last_json() or {}
    frames = n2 - n1
    return {"panel": panel, "frames_in_window": frames, "cpu_s_in_window": round(cpu2 - cpu1, 3),
            "cpu_ms_per_frame": round((cpu2 - cpu1) / max(frames, 1) * 1e3, 3), "rss_mb": round(rss / 2**20, 1),
            "rss_peak_mb": round(tier.rss_peak_bytes / 2**20, 1), "sent": report.get("sent"), "lost": report.get("lost"),
            "errors": report.get("errors"), "returncode": tier.returncode, "page_polls": counts[0], "poll_errors": counts[1]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="the measured window of each run")
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--poll-s", type=float, default=1.0, help="how often the open page asks for the state (the page: 1 s)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--out", default="")
    opts = p.parse_args()
    deadline = Deadline(opts.repeats * 2 * (opts.seconds + opts.warmup_s + 150) + 120)
    runs = []
    with tempfile.TemporaryDirectory(prefix="ecd-panel-cost-") as tmp:
        with Cluster(ROOT, opts.python, Path(tmp) / "logs") as c:
            cloud = c.start_service("cloud", "cloud", ["cloud-server", "--insecure", "--port", "0", "--metrics-port", "-1",
                                                       "--db", str(Path(tmp) / "cloud.sqlite3")], deadline)
            c.start_service("edge", "edge", ["edge-node", "--insecure", "--cloud", cloud.target, "--port", "0", "--metrics-port", "-1"], deadline)
            for i in range(opts.repeats):
                for panel in (False, True):
                    r = one_run(c, cloud.target, f"agent-{'on' if panel else 'off'}-{i}", panel, opts, deadline)
                    print(json.dumps(r), flush=True)
                    runs.append(r)
    summary = {}
    for panel in (False, True):
        rs = [r for r in runs if r["panel"] is panel]
        summary["on" if panel else "off"] = {
            "cpu_ms_per_frame": statistics.median(r["cpu_ms_per_frame"] for r in rs),
            "rss_mb": statistics.median(r["rss_mb"] for r in rs),
            "rss_peak_mb": statistics.median(r["rss_peak_mb"] for r in rs),
            "frames_in_window": [r["frames_in_window"] for r in rs],
        }
    on, off = summary["on"], summary["off"]
    summary["extra_cpu_ms_per_frame"] = round(on["cpu_ms_per_frame"] - off["cpu_ms_per_frame"], 3)
    summary["extra_cpu_percent"] = round(100 * summary["extra_cpu_ms_per_frame"] * opts.fps / 1e3, 2)  # of one core
    summary["extra_rss_mb"] = round(on["rss_mb"] - off["rss_mb"], 1)
    ok = all(r["returncode"] == 0 and r["lost"] == 0 and r["errors"] == 0 and r["poll_errors"] == 0 for r in runs)
    print(f"\nagent at {opts.fps:g} frames/s, {opts.seconds:g} s measured after {opts.warmup_s:g} s, median of "
          f"{opts.repeats} runs each (page open: /api/state every {opts.poll_s:g} s):")
    print(f"  panel off: {off['cpu_ms_per_frame']:.3f} CPU ms/frame, RSS {off['rss_mb']:.1f} MB (peak {off['rss_peak_mb']:.1f})")
    print(f"  panel on:  {on['cpu_ms_per_frame']:.3f} CPU ms/frame, RSS {on['rss_mb']:.1f} MB (peak {on['rss_peak_mb']:.1f})")
    print(f"  the panel costs {summary['extra_cpu_ms_per_frame']:+.3f} CPU ms/frame ({summary['extra_cpu_percent']:+.2f} % of "
          f"one core at this rate) and {summary['extra_rss_mb']:+.1f} MB RSS; no frame lost or failed: {'yes' if ok else 'NO'}")
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.out).write_text(json.dumps({"runs": runs, "summary": summary, "options": vars(opts)}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
