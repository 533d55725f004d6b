"""A running agent takes new preferences: it re-splits between two frames, tells the cloud, and no
frame is lost, resent or answered twice; bad preferences are refused naming the field while the
stream goes on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from device_agent.preferences import PendingResplit
from ecd.errors import PreconditionError, RequestError
from harness import StreamingAgent, Tiers, recommended


def check_every_frame_once(outcomes: list, sent: int) -> None:
    assert [o.frame_id for o in outcomes] == list(range(1, sent + 1)), "a frame was lost or answered out of turn"
    assert all(o.result.ok for o in outcomes), {o.result.error.message for o in outcomes if not o.result.ok}


def test_weight_from_0_to_1_resplits_the_running_agent_without_losing_a_frame(tiers: Tiers, tmp_path: Path) -> None:
    low, high = recommended(0.0), recommended(1.0)
    assert low != high  # the bundled model's curve makes the slider matter: 0 -> 5 (noised) or 6
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.0)
    try:
        assert s.agent.assignment.split.device == low
        s.wait_for(lambda a: a.tally.frames >= 30)
        assert s.agent.change_preferences(w_privacy=1.0) == high
        s.wait_for(lambda a: a.tally.snapshot()["per_split"].get(high, 0) >= 30)
        device = tiers.cloud.registry.device(s.agent.assignment.device_id)
        assert (device.split_device, device.w_privacy, device.w_energy) == (high, 1.0, 0.0)
    finally:
        outcomes = s.stop()
    report = s.agent.report(outcomes)
    check_every_frame_once(outcomes, s.agent.status().sent)
    assert report.duplicates_dropped == 0 and report.resplits == 1
    splits = [o.result.split.device for o in outcomes]
    first_high = splits.index(high)
    # one switch: every frame before it went at the old split, every frame after at the new one
    assert set(splits[:first_high]) == {low} and set(splits[first_high:]) == {high}
    assert first_high >= 30 and len(splits) - first_high >= 30
    assert report.accuracy >= 0.9


def test_raising_the_floor_above_the_split_moves_the_stream_up(tiers: Tiers, tmp_path: Path) -> None:
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.0)
    try:
        assert s.agent.assignment.split.device == 0
        s.wait_for(lambda a: a.tally.frames >= 10)
        new = s.agent.change_preferences(min_split=4)
        assert new == recommended(0.0, 4) >= 4
        s.wait_for(lambda a: a.tally.snapshot()["per_split"].get(new, 0) >= 10)
        assert tiers.cloud.registry.device(s.agent.assignment.device_id).min_split == 4
        # the floor is a promise while the stream runs: it can go up, never down
        with pytest.raises(PreconditionError, match="^min_split: the floor can only be raised"):
            s.agent.change_preferences(min_split=2)
        assert s.agent.core.prefs.min_split == 4
    finally:
        outcomes = s.stop()
    check_every_frame_once(outcomes, s.agent.status().sent)
    splits = [o.result.split.device for o in outcomes]
    assert splits == sorted(splits) and splits[-1] == new


@pytest.mark.parametrize("kwargs,field", [
    ({"w_privacy": 1.5}, "w_privacy"),
    ({"w_privacy": -0.1}, "w_privacy"),
    ({"w_privacy": math.nan}, "w_privacy"),
    ({"w_privacy": math.inf}, "w_privacy"),
    ({"w_privacy": True}, "w_privacy"),
    ({"min_split": 7}, "min_split"),  # the bundled model has 6 blocks
    ({"min_split": -1}, "min_split"),
    ({"min_split": 2.5}, "min_split"),
])
def test_bad_preferences_are_refused_naming_the_field_and_the_stream_goes_on(tiers: Tiers, tmp_path: Path, kwargs, field) -> None:
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.5)
    try:
        before = s.agent.core.prefs
        s.wait_for(lambda a: a.tally.frames >= 5)
        with pytest.raises(RequestError, match=f"^{field}: "):
            s.agent.change_preferences(**kwargs)
        assert s.agent.core.prefs == before
        answered = s.agent.tally.frames
        s.wait_for(lambda a: a.tally.frames >= answered + 10)
    finally:
        outcomes = s.stop()
    check_every_frame_once(outcomes, s.agent.status().sent)


def test_a_pinned_split_stays_and_bounds_the_floor(tiers: Tiers, tmp_path: Path) -> None:
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.0, split=3)
    try:
        s.wait_for(lambda a: a.tally.frames >= 5)
        assert s.agent.change_preferences(w_privacy=1.0) == 3
        assert tiers.cloud.registry.device(s.agent.assignment.device_id).w_privacy == 1.0
        with pytest.raises(PreconditionError, match="^min_split: 4 is above the split pinned"):
            s.agent.change_preferences(min_split=4)
    finally:
        outcomes = s.stop()
    check_every_frame_once(outcomes, s.agent.status().sent)
    assert {o.result.split.device for o in outcomes} == {3} and s.agent.status().resplits == 0


def test_a_cloud_that_refuses_the_change_is_reported_and_nothing_changes(tiers: Tiers, tmp_path: Path) -> None:
    from device_agent.agent import AgentConfig, DeviceAgent
    from ecd.errors import PeerError

    agent = DeviceAgent(AgentConfig(cloud=tiers.cloud_target, model_dir=str(tmp_path / "a"), w_privacy=0.0))
    try:
        agent.connect()
        tiers.cloud.core.devices.revoke(agent.assignment.device_id)
        with pytest.raises(PeerError, match="^cloud: UNAUTHENTICATED: ") as e:
            agent.change_preferences(w_privacy=1.0)
        assert e.value.status == "UNAUTHENTICATED"
        assert agent.core.prefs.w_privacy == 0.0 and agent.assignment.split.device == 0
    finally:
        agent.close()


def test_a_floor_raised_but_not_yet_applied_cannot_be_lowered(tiers: Tiers, tmp_path: Path) -> None:
    """The floor a user asked for counts from the moment it is asked, not from when the stream
    gets to apply it."""
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.0, fps=5)
    try:
        s.wait_for(lambda a: a.tally.frames >= 1)
        control = s.agent.preferences
        with control.lock:  # hold the change pending, as a busy stream would
            prefs = control.check(min_split=4)
            control.pending = PendingResplit(prefs, *control.decide(prefs))
        with pytest.raises(PreconditionError, match="^min_split: the floor can only be raised"):
            s.agent.change_preferences(min_split=2)
        s.wait_for(lambda a: a.core.prefs.min_split == 4)
    finally:
        outcomes = s.stop()
    check_every_frame_once(outcomes, s.agent.status().sent)
