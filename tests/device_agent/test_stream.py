"""The agent's stream state machine in process: fake edge nodes that answer twice, break, close
early or never answer, fake requests (moves, re-splits, stops) and a clock the test moves. No gRPC,
no sleeping: each test runs in milliseconds and names the state it checks."""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np
import pytest

from device_agent.core import Tally
from device_agent.peers import PeerDown
from device_agent.config import AgentConfig
from device_agent.stream import TRANSITIONS, Sent, StreamLoop, StreamState, _Stream
from ecd.errors import PeerError, UnavailableError
from ecd.metrics import ServiceMetrics
from ecd.types import Encoding, Frame, Result, Split, Tensor

S = StreamState
pytestmark = pytest.mark.timeout(30)  # a broken loop tends to spin or wait for ever: fail it fast


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeEdge:
    """Answers every frame ``copies`` times, ``batch`` frames at a time (so several are in flight);
    ``break_after`` results into its first stream it breaks (``PeerDown``); ``answer=False``: it
    takes frames and never answers, ending the stream when the agent half-closes it."""

    def __init__(self, edge_id: str = "e1", copies: int = 1, batch: int = 1, break_after: int | None = None,
                 answer: bool = True, clock: Clock | None = None, step_s: float = 0.0) -> None:
        self.edge_id, self.endpoint = edge_id, f"{edge_id}:1"
        self.copies, self.batch, self.break_after, self.answer = copies, batch, break_after, answer
        self.clock, self.step_s = clock, step_s
        self.streams: list[list[int]] = []  # frame ids each stream carried, in order
        self.messages: list[list[int]] = []  # frames per message, per stream
        self.closed = False

    def _frames(self, messages: Iterator[list[Frame]]) -> Iterator[Frame]:
        for message in messages:
            self.messages[-1].append(len(message))
            yield from message

    def stream(self, messages: Iterator[list[Frame]]) -> Iterator[Result]:
        got: list[int] = []
        self.streams.append(got)
        self.messages.append([])
        if self.clock is not None:
            self.clock.t += self.step_s
        answered, pending = 0, []
        for frame in self._frames(messages):
            got.append(frame.frame_id)
            pending.append(frame)
            if not self.answer or len(pending) < self.batch:
                continue
            for f in pending:
                if self.break_after is not None and len(self.streams) == 1 and answered >= self.break_after:
                    raise PeerDown("UNAVAILABLE: the edge went away")
                answered += 1
                yield from [Result(f.device_id, f.frame_id, f.split)] * self.copies
            pending = []
        if self.answer:
            for f in pending:
                yield from [Result(f.device_id, f.frame_id, f.split)] * self.copies

    def abandon(self) -> None:
        self.abandoned = getattr(self, "abandoned", 0) + 1

    def close(self) -> None:
        self.closed = True


class HungEdge(FakeEdge):
    """Takes frames and answers none (a stopped process whose connection stays open); each frame
    it takes moves the clock on ``step_s``. Only :meth:`abandon` ends its stream, as a break."""

    def __init__(self, clock: Clock, step_s: float) -> None:
        super().__init__("hung", clock=clock, step_s=step_s)
        self.abandoned = 0

    def stream(self, messages: Iterator[list[Frame]]) -> Iterator[Result]:
        got: list[int] = []
        self.streams.append(got)
        self.messages.append([])
        for frame in self._frames(messages):
            got.append(frame.frame_id)
            self.clock.t += self.step_s
        if self.abandoned:
            raise PeerDown("CANCELLED: abandoned")
        yield from ()

    def abandon(self) -> None:
        self.abandoned += 1


class FakeRequests:
    """What other threads would ask: a move after ``move_after`` frames sent, a re-split after
    ``resplit_after``, a stop after ``stop_after``; records the state at each call the loop makes."""

    def __init__(self, next_edge: FakeEdge | None = None, move_after: int | None = None, resplit_after: int | None = None,
                 stop_after: int | None = None, clock: Clock | None = None, wait_s: float = 1.0) -> None:
        self.next_edge, self.move_after, self.resplit_after, self.stop_after = next_edge, move_after, resplit_after, stop_after
        self.clock, self.wait_s = clock, wait_s
        self.move_on_ask = False  # the cloud names another edge when asked (it found the edge lost)
        self.loop: StreamLoop | None = None
        self.moved = self.resplit_done = False
        self.calls: list[tuple[str, StreamState, int]] = []  # (call, state then, frames in flight then)

    def _sent(self) -> int:
        return self.loop.sent if self.loop else 0

    def stop_asked(self) -> bool:
        return self.stop_after is not None and self._sent() >= self.stop_after

    def wait_for_stop(self, timeout_s: float) -> bool:
        return self.stop_asked()

    def move_pending(self) -> bool:
        return not self.moved and self.move_after is not None and self._sent() >= self.move_after

    def resplit_pending(self) -> bool:
        return not self.resplit_done and self.resplit_after is not None and self._sent() >= self.resplit_after

    def _note(self, call: str) -> None:
        assert self.loop is not None
        self.calls.append((call, self.loop.state, len(self.loop.in_flight)))

    def wait_for_move(self, timeout_s: float) -> bool:
        self._note("wait_for_move")
        if self.clock is not None:
            self.clock.t += self.wait_s
        return False

    def ask_cloud(self) -> None:
        self._note("ask_cloud")
        if self.move_on_ask:
            self.move_after = 0

    def move(self) -> FakeEdge:
        self._note("move")
        self.moved = True
        assert self.next_edge is not None
        return self.next_edge

    def resplit(self) -> None:
        self._note("resplit")
        self.resplit_done = True


def make_frame(frame_id: int) -> Frame:
    return Frame("dev", frame_id, "tok", "m", "v", Split(2, 0), Tensor(Encoding.FLOAT32, (1,), b"\0" * 4))


def make_loop(edge: FakeEdge, requests: FakeRequests, clock: Clock | None = None, **cfg) -> StreamLoop:
    ids = iter(range(1, 10**6))
    loop = StreamLoop(AgentConfig(**{"max_in_flight": 8, **cfg}), edge, requests, lambda images: [make_frame(next(ids)) for _ in images],
                      ServiceMetrics("device"), Tally(), clock=clock or Clock())
    requests.loop = loop
    return loop


def samples(n: int) -> Iterator[tuple[np.ndarray, int | None]]:
    return ((np.zeros((2, 2), np.uint8), None) for _ in range(n))


def states(loop: StreamLoop) -> list[StreamState]:
    return [s for s, _ in loop.history]


def test_an_answer_given_twice_reaches_the_application_once_and_is_counted() -> None:
    edge = FakeEdge(copies=2, batch=3)
    loop = make_loop(edge, FakeRequests())
    outcomes = loop.run(samples(20), keep=True)
    assert [o.frame_id for o in outcomes] == list(range(1, 21))
    assert loop.tally.frames == 20 and loop.duplicates == 20 and len(loop.in_flight) == 0
    assert states(loop) == [S.STREAMING, S.DRAINING, S.DONE]


def test_a_broken_stream_fails_over_and_resends_only_what_was_unanswered() -> None:
    clock = Clock()
    edge = FakeEdge(batch=4, break_after=5)
    requests = FakeRequests(clock=clock)
    loop = make_loop(edge, requests, clock)
    outcomes = loop.run(samples(12), keep=True)
    assert [o.frame_id for o in outcomes] == list(range(1, 13)) and loop.duplicates == 0
    first, second = edge.streams[0], edge.streams[1]
    assert first == [1, 2, 3, 4, 5, 6, 7, 8]  # 5 answered, then it broke with 6, 7, 8 in flight
    assert second[:3] == [6, 7, 8] and second[3:] == list(range(9, 13))  # resent first, oldest first
    assert [c for c, state, _ in requests.calls] == ["wait_for_move", "ask_cloud"]
    assert all(state is S.FAILING_OVER for _, state, _ in requests.calls)
    assert states(loop)[:3] == [S.STREAMING, S.FAILING_OVER, S.STREAMING]
    assert loop.sent == 12  # a resent frame counts once


def test_an_edge_that_answers_nothing_is_abandoned_after_the_answer_deadline_and_its_frames_go_elsewhere() -> None:
    clock = Clock()
    hung, good = HungEdge(clock, step_s=1.0), FakeEdge("good")
    requests = FakeRequests(next_edge=good, clock=clock)
    requests.move_on_ask = True
    loop = make_loop(hung, requests, clock, answer_deadline_s=5.0)
    outcomes = loop.run(samples(12), keep=True)
    assert [o.frame_id for o in outcomes] == list(range(1, 13)) and loop.duplicates == 0
    assert hung.abandoned == loop.abandoned == 1 and hung.streams == [list(range(1, 9))]  # a full window, then nothing more
    assert good.streams == [list(range(1, 13))]  # the 8 in flight resent first, then the rest
    assert (S.FAILING_OVER, "the edge answers nothing") in loop.history
    assert [c for c, _, _ in requests.calls] == ["wait_for_move", "ask_cloud", "move"]


def test_the_answer_deadline_counts_from_the_last_answer_and_only_with_frames_in_flight() -> None:
    clock = Clock()
    loop = make_loop(FakeEdge(), FakeRequests(), clock, answer_deadline_s=5.0)
    stream = _Stream([], clock.t)
    clock.t += 60.0
    assert not loop.overdue(stream)  # nothing in flight: an idle stream is not a hung edge
    loop.in_flight.add(Sent(make_frame(1), 0.0, None, 4))
    stream.progress = clock.t
    clock.t += 5.0
    assert not loop.overdue(stream)  # slow, at the deadline
    clock.t += 0.001
    assert loop.overdue(stream)


def test_a_move_waits_for_the_frames_in_flight_then_goes_on_at_the_new_edge() -> None:
    old, new = FakeEdge("e1", batch=3), FakeEdge("e2", batch=3)
    requests = FakeRequests(next_edge=new, move_after=4)
    loop = make_loop(old, requests)
    outcomes = loop.run(samples(10), keep=True)
    assert [o.frame_id for o in outcomes] == list(range(1, 11))
    assert old.streams == [[1, 2, 3, 4]] and new.streams == [list(range(5, 11))]  # nothing resent, nothing lost
    assert requests.calls == [("move", S.MOVING, 0)] and loop.edge is new
    assert [(s, w) for s, w in loop.history][1] == (S.DRAINING, "move to another edge")


def test_a_resplit_is_applied_between_two_streams_with_nothing_in_flight() -> None:
    edge = FakeEdge(batch=3)
    requests = FakeRequests(resplit_after=5)
    loop = make_loop(edge, requests)
    outcomes = loop.run(samples(9), keep=True)
    assert [o.frame_id for o in outcomes] == list(range(1, 10))
    assert requests.calls == [("resplit", S.RESPLITTING, 0)]
    assert edge.streams == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert states(loop) == [S.STREAMING, S.DRAINING, S.RESPLITTING, S.STREAMING, S.DRAINING, S.DONE]


def test_a_resplit_waits_for_frames_resent_after_a_break_to_be_answered() -> None:
    """A stream that breaks while a re-split is pending leaves frames unanswered: they are resent
    and answered at the old split first; the split changes only with nothing in flight."""
    edge = FakeEdge(batch=4, break_after=3)
    requests = FakeRequests(resplit_after=4)
    loop = make_loop(edge, requests)
    outcomes = loop.run(samples(8), keep=True)
    assert [o.frame_id for o in outcomes] == list(range(1, 9))
    assert edge.streams[0] == [1, 2, 3, 4] and edge.streams[1] == [4]  # frame 4 resent alone, at the old split
    assert edge.streams[2] == [5, 6, 7, 8]
    assert requests.calls[-1] == ("resplit", S.RESPLITTING, 0) and [c for c, _, _ in requests.calls].count("resplit") == 1


def test_a_stop_gives_the_frames_in_flight_drain_s_then_ends_with_them_unanswered() -> None:
    clock = Clock()
    edge = FakeEdge(answer=False, clock=clock, step_s=1.0)
    loop = make_loop(edge, FakeRequests(stop_after=3), clock, drain_s=5.0)
    outcomes = loop.run(samples(100), keep=True)
    assert outcomes == [] and len(loop.in_flight) == 3 and loop.sent == 3
    assert loop.state is S.DONE and loop.why == "stopped with 3 unanswered"
    assert 6 <= len(edge.streams) <= 8  # resent on new streams for about drain_s of the clock, no longer
    assert all(s == [1, 2, 3] for s in edge.streams)


def test_it_gives_up_after_failover_wait_s_without_an_answer() -> None:
    clock = Clock()
    requests = FakeRequests(clock=clock, wait_s=4.0)

    class AlwaysBroken(FakeEdge):
        def stream(self, messages):
            self.streams.append([next(messages)[0].frame_id])
            raise PeerDown("UNAVAILABLE: down")
            yield  # a generator

    loop = make_loop(AlwaysBroken(), requests, clock, failover_wait_s=10.0)
    # the first message carried all five frames (the window had room for them: ecd.packing)
    with pytest.raises(UnavailableError, match=r"no edge node answered for 10 s \(failover_wait_s\); 5 frames unanswered"):
        loop.run(samples(5), keep=True)
    assert loop.state is S.FAILED
    assert S.FAILING_OVER in states(loop) and sum(c == "ask_cloud" for c, _, _ in requests.calls) == 3


def test_a_refusal_by_the_edge_fails_the_run_with_the_peers_status() -> None:
    class Refusing(FakeEdge):
        def stream(self, messages):
            next(messages)
            raise PeerError("PERMISSION_DENIED", "PERMISSION_DENIED: not your edge")
            yield

    loop = make_loop(Refusing(), FakeRequests())
    with pytest.raises(PeerError, match="^PERMISSION_DENIED: not your edge$"):
        loop.run(samples(3), keep=True)
    assert loop.state is S.FAILED and loop.why == "PERMISSION_DENIED: not your edge"


def test_a_second_run_starts_from_idle_and_counts_on() -> None:
    edge = FakeEdge()
    loop = make_loop(edge, FakeRequests())
    loop.run(samples(3), keep=False)
    assert loop.run(samples(2), keep=True)[0].frame_id == 4 and loop.sent == 5
    assert states(loop).count(S.IDLE) == 1


def test_only_the_transitions_in_the_table_are_taken() -> None:
    loop = make_loop(FakeEdge(), FakeRequests())
    with pytest.raises(RuntimeError, match="no transition from idle to moving"):
        loop._enter(S.MOVING, "test")
    assert all(S.FAILED in TRANSITIONS[s] or s in (S.IDLE, S.DONE, S.FAILED) for s in S)
    assert TRANSITIONS[S.DONE] == {S.IDLE} and TRANSITIONS[S.FAILED] == {S.IDLE}


def test_draining_is_entered_once_even_when_both_threads_close_the_stream() -> None:
    """The sender thread enters DRAINING only from STREAMING, checked under the state's lock: a
    loop that has moved on meanwhile is left where it is."""
    loop = make_loop(FakeEdge(), FakeRequests())
    loop._enter(S.STREAMING)
    loop._enter(S.FAILING_OVER, "broke")
    barrier = threading.Barrier(2)

    def close() -> None:
        barrier.wait()
        loop._enter(S.DRAINING, "late", only_from=S.STREAMING)

    t = threading.Thread(target=close)
    t.start()
    barrier.wait()
    t.join()
    assert loop.state is S.FAILING_OVER


# --- several frames per message (ecd.packing) -------------------------------------------------------


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
        import queue

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
