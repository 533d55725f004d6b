"""Task heads added at run time, and a registry that survives a restart."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from cloud_server.heads import parity_head_weights
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.v1 import ecd_pb2 as pb
from harness import Tiers, start_tiers, stop_tiers


def parity_spec() -> pb.HeadSpec:
    labels, weight = parity_head_weights(tuple(str(d) for d in range(10)))
    return pb.HeadSpec(model_id="digits_cnn", name="parity", labels=labels, weight=weight, input=pb.HeadSpec.PROBABILITIES)


def test_head_added_at_run_time_answers_the_next_frames(tiers: Tiers, tmp_path: Path) -> None:
    agent = DeviceAgent(AgentConfig(cloud=tiers.cloud_target, w_privacy=0.8, model_dir=str(tmp_path / "agent")))
    try:
        agent.connect()
        before = agent.run(heldout("digits_cnn", 10))
        assert all([h.head for h in o.result.heads] == ["class"] for o in before)
        assert tiers.cloud_stub.AddHead(parity_spec(), timeout=10).heads == 2
        after = agent.run(heldout("digits_cnn", 20))  # same agent, same registration: nothing restarted
    finally:
        agent.close()
    for o in after:
        heads = {h.head: h for h in o.result.heads}
        assert set(heads) == {"class", "parity"}
        assert heads["parity"].label == ("odd" if heads["class"].index % 2 else "even")
        assert sum(heads["parity"].scores) == pytest.approx(1.0, abs=1e-5)
    listed = tiers.cloud_stub.ListHeads(pb.ListHeadsRequest(model_id="digits_cnn"), timeout=10)
    assert [h.name for h in listed.heads] == ["class", "parity"]


def test_builtin_head_cannot_be_replaced(tiers: Tiers) -> None:
    spec = parity_spec()
    spec.name = "class"
    with pytest.raises(grpc.RpcError) as e:
        tiers.cloud_stub.AddHead(spec, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in e.value.details()


def test_restart_loses_nothing(tmp_path: Path) -> None:
    t = start_tiers(tmp_path)
    try:
        a = t.register(split=3, min_split=2, name="persistent")
        t.cloud_stub.AddHead(parity_spec(), timeout=10)
        edge_id = t.edge.edge_id
    finally:
        stop_tiers(t)
    t = start_tiers(tmp_path)  # same SQLite file
    try:
        again = t.cloud_stub.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=10)
        assert (again.split_device, again.preferences.min_split, again.model_version) == (3, 2, a.model_version)
        names = [h.name for h in t.cloud_stub.ListHeads(pb.ListHeadsRequest(model_id="digits_cnn"), timeout=10).heads]
        assert names == ["class", "parity"]
        assert t.cloud.registry.edge(edge_id) is not None
    finally:
        stop_tiers(t)


def test_update_preferences_moves_the_split(tiers: Tiers) -> None:
    a = tiers.register(split=2, min_split=1)
    updated = tiers.cloud_stub.UpdatePreferences(
        pb.UpdatePreferencesRequest(device_id=a.device_id, token=a.token,
                                    preferences=pb.Preferences(w_energy=0.2, w_privacy=0.8, min_split=4), split_device=5),
        timeout=10,
    )
    assert (updated.split_device, updated.preferences.min_split) == (5, 4)
    assert updated.preferences.w_privacy == pytest.approx(0.8)
    with pytest.raises(grpc.RpcError) as e:
        tiers.cloud_stub.UpdatePreferences(
            pb.UpdatePreferencesRequest(device_id=a.device_id, token=a.token,
                                        preferences=pb.Preferences(w_energy=1, w_privacy=0, min_split=4), split_device=3),
            timeout=10,
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "min_split" in e.value.details()


def test_builtin_head_scores_are_the_softmax_without_the_identity_product() -> None:
    import numpy as np

    from cloud_server.heads import builtin_head, softmax

    head = builtin_head(tuple(str(d) for d in range(10)))
    logits = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    general = dataclasses.replace(head, identity=False)  # the W · p + b path, W = I
    np.testing.assert_allclose(head.scores(logits), softmax(logits), rtol=0, atol=0)
    np.testing.assert_allclose(head.scores(logits), general.scores(logits), atol=1e-7)
    assert head.to_spec()["weight"] == np.eye(10).ravel().tolist()  # ListHeads still shows W = I
