"""Operators' view: real Prometheus endpoints, and the README's main job end to end."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from ecd import zoo
from ecd.manifest import load_heldout
from harness import Tiers, frame_for


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_frames_errors_latency_and_bytes(tiers: Tiers) -> None:
    m = zoo.load_manifest("digits_cnn")
    x = m.input.preprocess(load_heldout(m).images[:1])
    a = tiers.register(split=2)
    frames = [frame_for(a, m, x, i) for i in range(1, 11)]
    frames[4].token = "wrong"
    results = list(tiers.edge_stub.Stream(iter(frames), timeout=60))
    assert len(results) == 10
    edge = scrape(tiers.edge.metrics_port)
    cloud = scrape(tiers.cloud.metrics_port)
    assert edge[("ecd_frames_total", (("outcome", "ok"), ("service", "edge")))] == 9
    assert edge[("ecd_frames_total", (("outcome", "error"), ("service", "edge")))] == 1
    assert edge[("ecd_frame_errors_total", (("code", "UNAUTHENTICATED"), ("service", "edge")))] == 1
    assert edge[("ecd_hop_bytes_total", (("hop", "device_to_edge"), ("service", "edge")))] >= 10 * m.activation_bytes(2)
    assert edge[("ecd_hop_bytes_total", (("hop", "edge_to_cloud"), ("service", "edge")))] > 0
    assert edge[("ecd_stage_seconds_count", (("service", "edge"), ("stage", "edge_compute")))] == 9
    assert cloud[("ecd_frames_total", (("outcome", "ok"), ("service", "cloud")))] == 9
    assert cloud[("ecd_stage_seconds_count", (("service", "cloud"), ("stage", "cloud_compute")))] == 9
    assert any(name == "process_resident_memory_bytes" for name, _ in cloud)


def test_demo_runs_end_to_end_and_stops_cleanly() -> None:
    proc = subprocess.run([sys.executable, "-m", "ecd_cli", "demo", "--frames", "30"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in ("pi4-wifi", "phone-lte", "zero-5g"):
        row = next(line for line in lines if line.startswith(name))
        assert " 30 " in row and row.split()[-1] != "-"
    assert "edge answered 90 frames ok, cloud 90" in proc.stdout
    assert "edge-node exit 0, cloud-server exit 0" in proc.stdout
    assert "all 7 split points match torch" in proc.stdout  # the per-split check comes first


def test_metrics_pass_promtool_lint(tiers: Tiers) -> None:
    """Names follow the Prometheus conventions (base units, _total, _seconds, _bytes)."""
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        import pytest

        pytest.skip("promtool (Debian package prometheus) is not installed")
    m = zoo.load_manifest("digits_cnn")
    x = m.input.preprocess(load_heldout(m).images[:1])
    a = tiers.register(split=3)
    list(tiers.edge_stub.Stream(iter([frame_for(a, m, x, 1)]), timeout=30))
    for port in (tiers.edge.metrics_port, tiers.cloud.metrics_port):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_demo_serve_keeps_the_pages_up_until_ctrl_c() -> None:
    """``make demo SERVE=1``: the addresses printed answer — a device agent streaming behind its
    control panel, the operator view listing every device — and Ctrl-C stops everything cleanly."""
    import json
    import re
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "ecd_cli", "demo", "--frames", "10", "--serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out = []
        for line in proc.stdout:  # blocks until the demo prints; ends if it exits
            out.append(line)
            if line.startswith("Ctrl-C stops it."):
                break
        text = "".join(out)
        panel = re.search(r"device control panel: (http://127\.0\.0\.1:\d+/)", text)
        operator = re.search(r"operator view: +(http://127\.0\.0\.1:\d+/)", text)
        assert panel and operator, text + proc.stderr.read() if proc.poll() is not None else text
        state = json.loads(urllib.request.urlopen(panel.group(1) + "api/state", timeout=10).read())
        assert state["name"] == "you" and state["streaming"] is True
        overview = json.loads(urllib.request.urlopen(operator.group(1) + "api/overview", timeout=10).read())
        assert {d["name"] for d in overview["devices"]} == {"pi4-wifi", "phone-lte", "zero-5g", "you"}
        assert "pi4-wifi" in text  # part 2's table came before the addresses
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest + err
    assert "device-agent exit 0, edge-node exit 0, cloud-server exit 0" in rest
