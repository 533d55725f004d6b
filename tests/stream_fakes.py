"""Fakes for the agent's stream state machine (device_agent/stream.py), shared by its tests: fake edge
nodes that answer twice, break, close early or never answer, fake requests (moves, re-splits, stops),
a clock the test moves, and a loop built on them."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from device_agent.config import AgentConfig
from device_agent.core import Tally
from device_agent.peers import PeerDown
from device_agent.stream import StreamLoop, StreamState
from ecd.metrics import ServiceMetrics
from ecd.types import Encoding, Frame, Result, Split, Tensor


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
