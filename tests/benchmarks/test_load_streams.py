"""``benchmarks/load.py --generator streams`` at small scale: a cloud and an edge node as processes,
five devices registered for real and streaming from one generator process. The harness's verdict is
the check (every frame written answered once, none unanswered), and the figures it writes are whole: per
device p99, the generator's own CPU and RSS beside the tiers'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_the_stream_generator_loads_the_tiers_and_accounts_for_itself(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load.py"), "--streams", "5", "--fps", "10", "--seconds", "2",
                           "--deadline-s", "200", "--logs", str(tmp_path / "logs"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=230)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    r = json.loads(out.read_text())["result"]
    assert r["written"] == r["answered"] == 5 * 10 * 2 and r["unanswered"] == r["duplicated"] == r["errors"] == 0
    assert 0 < r["p50_s"] <= r["p95_s"] <= r["p99_s"] and r["device_p99_median_s"] <= r["device_p99_max_s"]
    assert r["generator_cpu_s"] > 0 and r["generator_rss_peak_mb"] > 0
    assert r["usage"]["cloud"]["cpu_window_s"] > 0 and r["usage"]["edge"]["cpu_window_s"] > 0
    assert "answered 100" in done.stdout and "generator:" in done.stdout
