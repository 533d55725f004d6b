"""A learned privacy level (issue 35) end to end: the cloud serves a family's levels with it, the agent
runs the level its decision takes as that level's own model through real edge and cloud tiers, and the
answers are that model's; the panel says what the level protects, and a live change keeps the level."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from harness import start_tiers, stop_tiers

from cloud_server.config import CloudConfig
from cloud_server.served import load_models
from device_agent import panel
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import open_source
from ecd import zoo
from ecd.leakage import protection
from ecd.partition import BlockRunner
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split

LEVEL_MODELS = ["orl_faces_cnn", "orl_faces_cnn_level1", "orl_faces_cnn_level2", "orl_faces_cnn_level3"]


def test_serving_a_family_serves_its_levels_once() -> None:
    assert [m.model_id for m in load_models(["orl_faces_cnn"])] == LEVEL_MODELS
    assert [m.model_id for m in load_models(["orl_faces_cnn_level2", "orl_faces_cnn", "digits_cnn"])] == [
        "orl_faces_cnn_level2", "orl_faces_cnn", "orl_faces_cnn_level1", "orl_faces_cnn_level3", "digits_cnn"]
    assert [m.model_id for m in load_models(["digits_cnn"])] == ["digits_cnn"]  # a noise table has no levels


@pytest.fixture
def orl_tiers(tmp_path: Path):
    t = start_tiers(tmp_path, replace(CloudConfig(), models=("orl_faces_cnn",)))
    yield t
    stop_tiers(t)


def _expected(w_privacy: float, max_accuracy_loss: float) -> tuple[int, int]:
    d = decide_split(zoo.load_manifest("orl_faces_cnn"), load_device("pi4"), load_radio("wifi"),
                     Preferences(1 - w_privacy, w_privacy, max_accuracy_loss=max_accuracy_loss))
    return d.recommended, int(d.strength_at(d.recommended))


@pytest.mark.parametrize("w_privacy,max_accuracy_loss", [(1.0, 0.03), (1.0, 0.02)])
def test_the_agent_runs_the_decided_level_as_its_model(orl_tiers, tmp_path: Path, w_privacy: float,
                                                       max_accuracy_loss: float) -> None:
    split, level = _expected(w_privacy, max_accuracy_loss)
    agent = DeviceAgent(AgentConfig(cloud=orl_tiers.cloud_target, model="orl_faces_cnn", w_privacy=w_privacy,
                                    max_accuracy_loss=max_accuracy_loss, model_dir=str(tmp_path / "a")))
    try:
        agent.connect()
        assert (agent.assignment.split.device, agent.core.level) == (split, level)
        assert agent.manifest.model_id == LEVEL_MODELS[level] and agent.assignment.model_id == LEVEL_MODELS[level]
        assert agent.core.defence_strength() == 0.0  # the level's weights are the defence: no noise on top
        samples = list(open_source("heldout", "orl_faces_cnn", agent.manifest.input, 24))
        outcomes = agent.run(iter(samples))
        state = panel.state(agent)
    finally:
        agent.close()
    assert [o.result.ok for o in outcomes] == [True] * 24
    level_model = zoo.load_manifest(LEVEL_MODELS[level])
    x = level_model.input.preprocess(np.stack([img for img, _ in samples]))
    logits = BlockRunner(level_model).run(x, 0, level_model.n_blocks)
    assert [o.result.head("class").index for o in outcomes] == logits.argmax(1).tolist()
    assert np.allclose([o.result.output for o in outcomes], logits, atol=1e-4)
    assert state["privacy_level"] == level
    assert state["protection"] == protection(zoo.load_manifest("orl_faces_cnn"), level, split)
    assert state["model"] == f"{LEVEL_MODELS[level]}@{level_model.version}"


def test_a_live_change_moves_the_split_within_the_running_level(orl_tiers, tmp_path: Path) -> None:
    agent = DeviceAgent(AgentConfig(cloud=orl_tiers.cloud_target, model="orl_faces_cnn", w_privacy=1.0,
                                    max_accuracy_loss=0.03, model_dir=str(tmp_path / "a")))
    try:
        agent.connect()
        assert agent.core.level == 3
        decision, split = agent.decide(replace(agent.core.prefs, w_energy=1.0, w_privacy=0.0))
        # energy alone would take level 0's raw photo (split 0) on a fresh start; running level 3, the split
        # moves within level 3's model, whose blocks the edge and cloud already run
        assert {decision.strength_at(b) for b in range(decision.p_priv.size)} == {3.0}
        fresh = decide_split(zoo.load_manifest("orl_faces_cnn"), load_device("pi4"), load_radio("wifi"),
                             Preferences(1.0, 0.0, max_accuracy_loss=0.03))
        assert fresh.strength_at(fresh.recommended) == 0.0
        assert 0 <= split <= agent.manifest.n_blocks
    finally:
        agent.close()


