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


def test_a_level_is_looked_up_by_zoo_name_and_a_missing_one_names_the_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from ecd.errors import ConfigError

    monkeypatch.chdir(tmp_path)  # a folder named like a level where the cloud runs is not that level
    shutil.copytree(zoo.model_dir("digits_cnn"), tmp_path / "orl_faces_cnn_level1")
    assert [m.model_id for m in load_models(["orl_faces_cnn"])] == LEVEL_MODELS
    monkeypatch.setenv("ECD_MODEL_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "orl_faces_cnn_level2").mkdir(parents=True)  # a rebuilt level 2 left half-written
    (tmp_path / "models" / "orl_faces_cnn_level2" / "manifest.json").write_text("{")
    with pytest.raises(ConfigError, match=r"^--models: orl_faces_cnn names 'orl_faces_cnn_level2' for its privacy level 2 "
                                          r"\(privacy\.defence\.models\), which cannot be served: "):
        load_models(["orl_faces_cnn"])


@pytest.fixture
def orl_tiers(tmp_path: Path):
    t = start_tiers(tmp_path, replace(CloudConfig(), models=("orl_faces_cnn",)))
    yield t
    stop_tiers(t)


def _expected(w_privacy: float, max_accuracy_loss: float, pinned: int = -1) -> tuple[int, int]:
    d = decide_split(zoo.load_manifest("orl_faces_cnn"), load_device("pi4"), load_radio("wifi"),
                     Preferences(1 - w_privacy, w_privacy, max_accuracy_loss=max_accuracy_loss))
    split = d.recommended if pinned < 0 else pinned
    return split, int(d.strength_at(split))


@pytest.mark.parametrize("w_privacy,max_accuracy_loss,pinned", [(1.0, 0.03, -1), (1.0, 0.02, -1), (1.0, 0.03, 3)])
def test_the_agent_runs_the_decided_level_as_its_model(orl_tiers, tmp_path: Path, w_privacy: float,
                                                       max_accuracy_loss: float, pinned: int) -> None:
    """At split 3 (pinned) the edge and the cloud run blocks of the level too: the answers are the level's."""
    split, level = _expected(w_privacy, max_accuracy_loss, pinned)
    assert pinned < 0 or level > 0  # the pinned split takes a trained level
    agent = DeviceAgent(AgentConfig(cloud=orl_tiers.cloud_target, model="orl_faces_cnn", w_privacy=w_privacy,
                                    max_accuracy_loss=max_accuracy_loss, split=pinned, model_dir=str(tmp_path / "a")))
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
    # the curve the agent and its panel show is the running level's, not the best of every level's
    pinned_curve = decide_split(zoo.load_manifest("orl_faces_cnn"), load_device("pi4"), load_radio("wifi"),
                                Preferences(0.0, 1.0, max_accuracy_loss=max_accuracy_loss, defence_strength=float(level)))
    assert [r["p_priv"] for r in state["curve"]] == pytest.approx(pinned_curve.p_priv.tolist())
    assert state["model"] == f"{LEVEL_MODELS[level]}@{level_model.version}"



def test_a_live_change_moves_the_split_within_the_running_level(orl_tiers, tmp_path: Path) -> None:
    agent = DeviceAgent(AgentConfig(cloud=orl_tiers.cloud_target, model="orl_faces_cnn", w_privacy=1.0,
                                    max_accuracy_loss=0.03, model_dir=str(tmp_path / "a")))
    try:
        agent.connect()
        assert (agent.core.level, agent.assignment.split.device) == (3, 6)
        # energy alone: a fresh start would take level 0's raw photo (split 0); running level 3, the split
        # moves within level 3's model, whose blocks the edge and cloud already serve
        fresh = decide_split(zoo.load_manifest("orl_faces_cnn"), load_device("pi4"), load_radio("wifi"),
                             Preferences(1.0, 0.0, max_accuracy_loss=0.03))
        assert (fresh.recommended, fresh.strength_at(fresh.recommended)) == (0, 0.0)
        split = agent.change_preferences(0.0, None)
        within = decide_split(zoo.load_manifest("orl_faces_cnn"), load_device("pi4"), load_radio("wifi"),
                              Preferences(1.0, 0.0, max_accuracy_loss=0.03, defence_strength=3.0))
        assert split == within.recommended == agent.assignment.split.device
        assert agent.manifest.model_id == LEVEL_MODELS[3] and agent.core.level == 3 and agent.core.defence_strength() == 0.0
        assert orl_tiers.cloud.registry.device(agent.assignment.device_id).split_device == split
        outcomes = agent.run(iter(list(open_source("heldout", "orl_faces_cnn", agent.manifest.input, 6))))
        assert all(o.result.ok and o.result.split.device == split for o in outcomes)
    finally:
        agent.close()
