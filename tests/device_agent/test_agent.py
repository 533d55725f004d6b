"""The device agent against real tiers: its split choice, its floor, and the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_agent.service import AgentConfig, DeviceAgent
from device_agent.sources import folder, heldout, open_source, synthetic
from ecd import zoo
from ecd.errors import ConfigError, EcdError
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split
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
    agent, outcomes = run_agent(tiers, tmp_path, privacy_weight=w_privacy, encoding=encoding)
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
    agent, outcomes = run_agent(tiers, tmp_path, frames=10, privacy_weight=0.0, min_split=4)
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
