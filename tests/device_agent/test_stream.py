"""The agent's stream state machine in process, on the fakes of tests/stream_fakes.py. No gRPC,
no sleeping: each test runs in milliseconds and names the state it checks."""

from __future__ import annotations

import threading

import pytest
from stream_fakes import (
    Clock,
    FakeEdge,
    FakeRequests,
    HungEdge,
    make_frame,
    make_loop,
    samples,
    states,
)

from device_agent.peers import PeerDown
from device_agent.stream import TRANSITIONS, Sent, StreamState, _Stream
from ecd.errors import PeerError, UnavailableError

S = StreamState
pytestmark = pytest.mark.timeout(30)  # a broken loop tends to spin or wait for ever: fail it fast



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
