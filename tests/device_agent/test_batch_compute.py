"""The agent runs the frames of one message through its device blocks as one call (issue 31):
a spy on the device partition counts the calls. In process — a real digits_cnn partition, a fake
edge node and a clock that never moves (so the linger never runs out) — plus one run against real
tiers that compares the answers with one-frame-at-a-time ones."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.core import AgentCore, Tally
from device_agent.sources import open_source
from device_agent.stream import StreamLoop
from ecd import codec, zoo
from ecd.errors import InputSpecError
from ecd.manifest import load_heldout
from ecd.metrics import ServiceMetrics
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences
from ecd.types import Assignment, Encoding, Frame, Result, Split
from harness import Tiers

pytestmark = pytest.mark.timeout(60)

DIGITS = zoo.load_manifest("digits_cnn")
SPLIT = 6  # most of digits_cnn's blocks on the device: where the agent was the binding stage
IMAGES = load_heldout(DIGITS).images


class Spy:
    """Counts the rows of every call of the device partition; ``poison``: a call holding that image's
    rows fails (as a model would on a frame it cannot take)."""

    def __init__(self, core: AgentCore, poison: np.ndarray | None = None) -> None:
        assert core.partition is not None
        self.run, self.calls = core.partition.run, []
        self.poison = None if poison is None else DIGITS.input.preprocess(poison[None])
        core.partition.run = self  # type: ignore[method-assign]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        if self.poison is not None and any(np.array_equal(row[None], self.poison) for row in x):
            raise InputSpecError("input: this frame cannot be run")
        return self.run(x)


def registered_core(strength: float | None = None) -> AgentCore:
    core = AgentCore("t", Preferences(1.0, 0.0, defence_strength=strength), Encoding.FLOAT32, load_device("pi4"),
                     load_radio("wifi"), ServiceMetrics("device"))
    core.decide(DIGITS, SPLIT)
    core.registered(DIGITS, Assignment("d", "tok", "e:1", DIGITS.model_id, DIGITS.version, Split(SPLIT, DIGITS.n_blocks),
                                       SPLIT, core.prefs))
    return core


class Clock:
    def __call__(self) -> float:
        return 1000.0  # never moves: the linger never runs out, only the window and the caps end a message


class QuietRequests:
    """Nobody asks the loop anything."""

    def stop_asked(self) -> bool:
        return False

    def wait_for_stop(self, timeout_s: float) -> bool:
        return False

    move_pending = resplit_pending = stop_asked

    def wait_for_move(self, timeout_s: float) -> bool:
        return False


class Edge:
    """Answers a message's frames once the message is in; keeps the frames it got."""

    edge_id, endpoint = "e1", "e1:1"

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.messages: list[int] = []

    def stream(self, messages: Iterator[list[Frame]]) -> Iterator[Result]:
        for message in messages:
            self.messages.append(len(message))
            self.frames += message
            yield from (Result(f.device_id, f.frame_id, f.split) for f in message)


def stream(core: AgentCore, images: list[np.ndarray], **cfg) -> tuple[Edge, list]:
    edge = Edge()
    loop = StreamLoop(AgentConfig(**{"max_in_flight": 8, **cfg}), edge, QuietRequests(),  # type: ignore[arg-type]
                      lambda batch: core.make_frames(batch, [(None, 0.0)] * len(batch)), ServiceMetrics("device"), Tally(),
                      clock=Clock())
    return edge, loop.run(((image, None) for image in images), keep=True)


def decoded(frame: Frame) -> np.ndarray:
    return codec.decode(frame.tensor, DIGITS.activation_shape(SPLIT), 1 << 24)


def test_the_frames_a_window_allows_are_computed_in_one_call_and_equal_the_one_at_a_time_frames() -> None:
    core = registered_core()
    spy = Spy(core)
    edge, outcomes = stream(core, list(IMAGES[:20]))
    assert spy.calls == [8, 8, 4] and edge.messages == [8, 8, 4]  # a window of 8 in flight, one call each
    assert [o.frame_id for o in outcomes] == list(range(1, 21)) and all(o.result.ok for o in outcomes)
    alone = registered_core()
    for frame, image in zip(edge.frames, IMAGES[:20]):
        one, _ = alone.make_frame(image)
        assert (frame.frame_id, frame.split, frame.tensor.encoding) == (one.frame_id, one.split, one.tensor.encoding)
        np.testing.assert_allclose(decoded(frame), decoded(one), rtol=1e-5, atol=1e-5)
        assert frame.device_compute_s > 0  # its share of the call



def test_a_device_runs_no_more_frames_at_once_than_its_memory_budget_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message of large frames is computed in calls of DEVICE_CALL_BYTES at most (mobilenet_v2: 3
    frames of 2.2 MB; 16 at once took a Pi-sized agent from 145 to 297 MB), still sent as one message."""
    from device_agent import core as core_module

    per_frame = core_module._frame_bytes(DIGITS, SPLIT)
    assert per_frame == 4 * 32 * 32 + max(b.output_bytes_float32 for b in DIGITS.blocks[:SPLIT])
    monkeypatch.setattr(core_module, "DEVICE_CALL_BYTES", 3 * per_frame + per_frame // 2)  # room for 3
    core = registered_core()
    spy = Spy(core)
    edge, outcomes = stream(core, list(IMAGES[:8]))
    assert spy.calls == [3, 3, 2] and edge.messages == [8] and all(o.result.ok for o in outcomes)
    monkeypatch.setattr(core_module, "DEVICE_CALL_BYTES", 1)  # less than one frame: one at a time, never none
    core, spy = registered_core(), None
    spy = Spy(core)
    stream(core, list(IMAGES[:3]))
    assert spy.calls == [1, 1, 1]

def test_with_linger_0_every_frame_is_computed_alone() -> None:
    core = registered_core()
    spy = Spy(core)
    edge, outcomes = stream(core, list(IMAGES[:6]), linger_ms=0.0)
    assert spy.calls == [1] * 6 and edge.messages == [1] * 6 and len(outcomes) == 6


def test_an_error_in_one_frames_compute_answers_that_frame_alone() -> None:
    """The call holding the bad frame fails; it is run again frame by frame: the bad frame gets its
    own error (never sent), its message-mates go on."""
    core = registered_core()
    images = list(IMAGES[:8])
    images[2] = np.full_like(images[2], 255)
    spy = Spy(core, poison=images[2])
    edge, outcomes = stream(core, images)
    assert spy.calls == [8] + [1] * 8
    assert [o.frame_id for o in outcomes] == list(range(1, 9))
    bad = outcomes[2].result
    assert not bad.ok and bad.error.status == "INVALID_ARGUMENT" and bad.error.message == "input: this frame cannot be run"
    assert all(o.result.ok for o in outcomes if o.frame_id != 3)
    assert [f.frame_id for f in edge.frames] == [1, 2, 4, 5, 6, 7, 8] and edge.messages == [7]


def test_an_image_of_the_wrong_size_answers_its_frame_alone() -> None:
    core = registered_core()
    images = list(IMAGES[:4])
    images[1] = images[1][:-1]  # a row short
    edge, outcomes = stream(core, images)
    assert [o.result.ok for o in outcomes] == [True, False, True, True]
    assert outcomes[1].result.error.message.startswith("images: expected C x H x W")
    assert [f.frame_id for f in edge.frames] == [1, 3, 4]


def test_the_defence_noise_is_fresh_for_every_frame_of_a_call() -> None:
    m = zoo.load_manifest("faces_cnn")
    core = AgentCore("t", Preferences(0, 1, min_split=2, defence_strength=4.0), Encoding.FLOAT32, load_device("pi4"),
                     load_radio("wifi"), ServiceMetrics("device"))
    split = core.decide(m)
    core.registered(m, Assignment("d", "tok", "e:1", m.model_id, m.version, Split(split, m.n_blocks), split, core.prefs))
    image = load_heldout(m).images[0]
    frames = core.make_frames([image] * 4, [(None, 0.0)] * 4)
    sent = [codec.decode(f.tensor, m.activation_shape(split), 1 << 24) for f in frames]  # type: ignore[union-attr]
    clean = core.partition.run(m.input.preprocess(image[None]))  # type: ignore[union-attr]
    assert all(not np.array_equal(s, clean) for s in sent)
    assert all(not np.array_equal(sent[i], sent[j]) for i in range(4) for j in range(i + 1, 4))


def test_an_agent_against_real_tiers_computes_a_message_in_one_call_and_answers_as_one_frame_at_a_time(
        tiers: Tiers, tmp_path: Path) -> None:
    answers = {}
    for linger_ms in (2.0, 0.0):
        agent = DeviceAgent(AgentConfig(cloud=tiers.cloud_target, model_dir=str(tmp_path / f"a{linger_ms}"), split=SPLIT,
                                        max_in_flight=16, linger_ms=linger_ms))
        try:
            agent.connect()
            spy = Spy(agent.core)
            outcomes = agent.run(open_source("heldout", "digits_cnn", agent.manifest.input, 48))
        finally:
            agent.close()
        assert [o.frame_id for o in outcomes] == list(range(1, 49)) and all(o.result.ok for o in outcomes)
        assert sum(spy.calls) == 48
        assert (max(spy.calls) > 1) if linger_ms else spy.calls == [1] * 48
        answers[linger_ms] = [o.result.head("class").index for o in outcomes]
    assert answers[2.0] == answers[0.0]
