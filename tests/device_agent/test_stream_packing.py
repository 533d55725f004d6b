"""Several frames per message (ecd.packing) in the agent's stream: the linger, the caps, Nagle's rule
on a busy stream, and a message resent after a break — on the fakes of tests/stream_fakes.py."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import numpy as np
import pytest
from stream_fakes import Clock, FakeEdge, FakeRequests, make_loop, samples

from ecd.types import Frame, Result

pytestmark = pytest.mark.timeout(30)  # a broken loop tends to spin or wait for ever: fail it fast


def test_with_linger_0_every_frame_goes_alone() -> None:
    edge = FakeEdge(batch=4)
    loop = make_loop(edge, FakeRequests(), linger_ms=0.0)
    assert [o.frame_id for o in loop.run(samples(12), keep=True)] == list(range(1, 13))
    assert edge.messages == [[1] * 12]


def test_a_lone_frame_goes_at_once_whatever_the_linger() -> None:
    """One frame in flight: the message holds it alone and leaves without waiting out the linger
    (the clock here never moves: a sender that waited for it would never send)."""
    edge = FakeEdge()
    loop = make_loop(edge, FakeRequests(), max_in_flight=1, linger_ms=1000.0)
    assert [o.frame_id for o in loop.run(samples(5), keep=True)] == [1, 2, 3, 4, 5]
    assert edge.messages == [[1] * 5]


def test_the_frames_the_window_allows_go_together_cut_at_the_frame_and_byte_caps() -> None:
    edge = FakeEdge()
    loop = make_loop(edge, FakeRequests(), max_in_flight=8, message_frames=3)
    assert [o.frame_id for o in loop.run(samples(8), keep=True)] == list(range(1, 9))
    assert edge.messages == [[3, 3, 2]]
    edge = FakeEdge()
    loop = make_loop(edge, FakeRequests(), max_in_flight=8, message_bytes=8)  # two 4-byte tensors a message
    loop.run(samples(7), keep=True)
    assert edge.messages == [[2, 2, 2, 1]]


class AnswersOneThenTheRest(FakeEdge):
    """Takes messages in a thread of its own, as gRPC's sender does. Answers the first frame of
    the window alone; the others once the agent has taken the sample after the window, so any
    message made right after that first answer holds that one sample unless the agent waits."""

    def __init__(self, took: threading.Event) -> None:
        super().__init__()
        self.took = took

    def stream(self, messages: Iterator[list[Frame]]) -> Iterator[Result]:
        got: queue.Queue = queue.Queue()
        self.messages.append([])

        def take() -> None:
            for frame in self._frames(messages):
                got.put(frame)
            got.put(None)

        threading.Thread(target=take, daemon=True).start()
        first = [got.get(timeout=5) for _ in range(4)]
        yield Result(first[0].device_id, first[0].frame_id, first[0].split)
        assert self.took.wait(5)
        for f in first[1:]:
            yield Result(f.device_id, f.frame_id, f.split)
        while (f := got.get(timeout=5)) is not None:
            yield Result(f.device_id, f.frame_id, f.split)


def test_a_busy_stream_waits_within_the_linger_for_room_instead_of_sending_one_frame_messages() -> None:
    """Nagle's rule: frames 1-4 fill the window; frame 1's answer frees one slot. With frames still
    in flight, the message that takes frame 5 waits (up to the linger) for more room, and goes out
    with 5-8 once the rest are answered, not as [5] then [6, 7, 8]."""
    took = threading.Event()

    def samples_signalling(n: int) -> Iterator[tuple[np.ndarray, int | None]]:
        for i in range(1, n + 1):
            if i == 5:
                took.set()
            yield np.zeros((2, 2), np.uint8), None

    edge = AnswersOneThenTheRest(took)
    loop = make_loop(edge, FakeRequests(), max_in_flight=4, message_frames=4, linger_ms=1000.0)
    assert [o.frame_id for o in loop.run(samples_signalling(8), keep=True)] == list(range(1, 9))
    assert edge.messages == [[4, 4]]


def test_a_message_resent_after_a_break_is_answered_once_per_frame() -> None:
    """The first stream takes two messages and breaks; the frames are resent on the next stream in
    messages at the cap, and that edge answers each twice: the application gets each once."""
    clock = Clock()
    edge = FakeEdge(batch=8, break_after=0, copies=2)
    loop = make_loop(edge, FakeRequests(clock=clock), clock, max_in_flight=8, message_frames=4)
    outcomes = loop.run(samples(8), keep=True)
    assert [o.frame_id for o in outcomes] == list(range(1, 9))
    assert edge.streams[:2] == [list(range(1, 9))] * 2 and edge.messages[:2] == [[4, 4], [4, 4]]
    assert loop.duplicates == 8 and loop.sent == 8
