"""The device agent against real tiers: its split choice, its floor, and the report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from device_agent import agent as agent_module, config as agent_config
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import folder, heldout, open_source, synthetic
from ecd import zoo
from ecd.errors import ConfigError, EcdError
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split
from ecd.v1 import ecd_pb2 as pb
from harness import Tiers


def run_agent(tiers: Tiers, tmp_path: Path, frames: int = 40, **kw) -> tuple[DeviceAgent, list]:
    agent = DeviceAgent(AgentConfig(cloud=tiers.cloud_target, model_dir=str(tmp_path / "a"), **kw))
    try:
        agent.connect()
        outcomes = agent.run(open_source(agent.cfg.source, "digits_cnn", agent.manifest.input, frames))
        return agent, outcomes
    finally:
        agent.close()


@pytest.mark.parametrize("w_privacy,encoding", [(0.0, "float32"), (0.9, "float16"), (0.5, "int8")])
def test_agent_chooses_the_utilitys_split_and_reports(tiers: Tiers, tmp_path: Path, w_privacy: float, encoding: str) -> None:
    agent, outcomes = run_agent(tiers, tmp_path, w_privacy=w_privacy, encoding=encoding)
    m = zoo.load_manifest("digits_cnn")
    expected = decide_split(m, load_device("pi4"), load_radio("wifi"), Preferences(1 - w_privacy, w_privacy)).recommended
    assert agent.assignment.split.device == expected
    assert [o.frame_id for o in outcomes] == list(range(1, 41))
    report = agent.report(outcomes)
    assert report.errors == 0 and report.frames == 40
    assert report.accuracy >= 0.95
    assert report.latency_p95_s >= report.latency_p50_s > 0
    assert report.raw_image_bytes == 40 * 32 * 32


def test_agent_never_sends_below_its_floor(tiers: Tiers, tmp_path: Path) -> None:
    agent, outcomes = run_agent(tiers, tmp_path, frames=10, w_privacy=0.0, min_split=4)
    assert agent.assignment.split.device >= 4
    assert all(o.result.split.device >= 4 for o in outcomes)
    with pytest.raises(EcdError, match="split"):
        DeviceAgent(AgentConfig(cloud=tiers.cloud_target, min_split=4, split=2, model_dir=str(tmp_path / "b"))).connect()


def test_pinned_split_and_synthetic_source(tiers: Tiers, tmp_path: Path) -> None:
    agent, outcomes = run_agent(tiers, tmp_path, frames=12, split=2, source="synthetic")
    assert agent.assignment.split.device == 2
    assert all(o.label is None and o.result.ok for o in outcomes)
    assert agent.report(outcomes).accuracy is None


def test_folder_source(tmp_path: Path) -> None:
    from PIL import Image

    spec = zoo.load_manifest("digits_cnn").input
    Image.fromarray(np.full((40, 50), 200, np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", np.zeros((32, 32), np.uint8))
    images = [img for img, _ in folder(str(tmp_path), spec, 4)]
    assert [img.shape for img in images] == [(32, 32)] * 4
    assert images[0].mean() == pytest.approx(200)
    with pytest.raises(ConfigError, match="no images"):
        list(folder(str(tmp_path / "empty"), spec, 1))
    with pytest.raises(ConfigError, match="--source"):
        open_source("camera", "digits_cnn", spec, 1)
    assert len(list(synthetic(spec, 3))) == 3
    assert len(list(heldout("digits_cnn", 400))) == 400  # cycles past the 360 held-out images


def test_a_state_file_keeps_the_device_across_restarts(tiers: Tiers, tmp_path: Path) -> None:
    state = tmp_path / "agent-state.json"
    first, _ = run_agent(tiers, tmp_path, frames=5, state=str(state))
    assert oct(state.stat().st_mode & 0o777) == "0o600"  # it holds the device's token
    again, outcomes = run_agent(tiers, tmp_path, frames=5, state=str(state), w_privacy=0.9)
    assert again.assignment.device_id == first.assignment.device_id
    assert all(o.result.ok for o in outcomes)
    # this run's weights were sent to the cloud for the same device
    reply = tiers.cloud_stub.GetAssignment(pb.GetAssignmentRequest(device_id=first.assignment.device_id,
                                                                   token=first.assignment.token), timeout=10)
    assert reply.preferences.w_privacy == pytest.approx(0.9)
    state.write_text(state.read_text().replace(first.assignment.token, "forgotten"))
    fresh, _ = run_agent(tiers, tmp_path, frames=2, state=str(state))  # the cloud does not know it: a new device
    assert fresh.assignment.device_id != first.assignment.device_id
    assert fresh.assignment.token in state.read_text()
    state.write_text("{not json")
    with pytest.raises(ConfigError, match="--state: .* is not an agent state file"):
        run_agent(tiers, tmp_path, frames=1, state=str(state))


def test_an_endless_agent_stops_on_sigterm_with_every_frame_answered_and_its_report_written(tiers: Tiers, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.Popen([sys.executable, "-m", "ecd_cli", "device-agent", "--insecure", "--cloud", tiers.cloud_target, "--frames", "0",
                             "--fps", "100", "--report", str(report), "--model-dir", str(tmp_path / "m")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        json.loads(proc.stdout.readline())  # READY: registered
        deadline = time.monotonic() + 60
        while _edge_answered(tiers) < 20:
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    r = json.loads(report.read_text())
    assert r["exit"] == "stopped" and r["lost"] == 0 and r["errors"] == 0
    assert r["sent"] == r["frames"] > 0


def test_an_agent_that_gives_up_still_writes_its_report(tiers: Tiers, tmp_path: Path) -> None:
    """Its only edge node is gone: after failover_wait_s with no answer it exits non-zero, and the
    report counts what was sent, answered and lost."""
    report = tmp_path / "report.json"
    cfg = AgentConfig(cloud=tiers.cloud_target, model_dir=str(tmp_path / "m"), frames=0, failover_wait_s=1.0, report=str(report))
    tiers.loop.run(tiers.edge.stop(0, leave=False))
    with pytest.raises(EcdError, match="no edge node answered for 1 s"):
        agent_module.run_agent(cfg)
    r = json.loads(report.read_text())
    assert r["exit"].startswith("edge: no edge node answered") and r["frames"] == 0 and r["sent"] == r["lost"] > 0


def _edge_answered(tiers: Tiers) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{tiers.edge.metrics_port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ecd_frames_total{") and 'outcome="ok"' in line)


def test_bad_sensor_scores_fail_before_anything_starts() -> None:
    assert agent_config.parse_sensors("temperature=7.5, camera=9") == {"temperature": 7.5, "camera": 9.0}
    for bad in ("temperature", "camera=high"):
        with pytest.raises(ConfigError, match="--sensors: expected NAME=SCORE"):
            DeviceAgent(AgentConfig(sensors=bad))


@pytest.mark.parametrize("split,encoding,most", [(6, "int8", 0.1), (0, "float32", 1.05)])
def test_uplink_bytes_per_frame_against_the_raw_image(tiers: Tiers, tmp_path: Path, split: int, encoding: str, most: float) -> None:
    """Compact frames (the stream's first frame binds who, what model, which split) and the raw
    uint8 image at split 0: at split 6 the int8 logits cost at most a tenth of the image, and the
    image itself little more than its pixels."""
    agent, outcomes = run_agent(tiers, tmp_path, frames=40, split=split, encoding=encoding)
    report = agent.report(outcomes)
    assert report.errors == 0 and report.accuracy >= 0.95
    assert report.uplink_bytes / report.frames <= most * report.raw_image_bytes / report.frames
    assert report.encoding == ("uint8" if split == 0 else encoding)
    assert all(o.result.uplink_bytes < 1.2 * o.raw_bytes * most for o in outcomes[1:])  # every later frame, not just the mean
