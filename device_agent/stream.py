"""The agent's stream of frames to its edge node, as a state machine with named states.

One :class:`StreamLoop` runs one :meth:`~device_agent.service.DeviceAgent.run`. It opens a stream on
the current edge, sends frames (resent ones first) while a window of ``max_in_flight`` allows, and
takes the results. Between two frames it may close the stream on purpose — to follow a move, to
apply the user's new split, because it was asked to stop, or because the input ran out — and then
lets the edge answer what is in flight (``DRAINING``). A stream that breaks sends it to
``FAILING_OVER``: it asks the cloud where to go (backoff with jitter) and resends every unanswered
frame on the next stream. The transitions are checked against :data:`TRANSITIONS`; every one is
logged with its reason, and :class:`~device_agent.status.AgentStatus` shows the state.

Threads: the loop runs in the caller's thread and reads the results; gRPC pulls the messages of
frames from :meth:`StreamLoop._messages` in a thread of its own (several frames per message when
the window and the input allow: ``ecd.packing``; a message's frames are made by one call of the
device's blocks). Both write the state through :meth:`_enter` (under one lock). Requests from
other threads — a move named by the cloud's watch, a re-split from the control panel, a stop from
SIGTERM — are never acted on in their own thread: they are read by the loop between two frames.

Exactly-once delivery to the application: :class:`InFlight` holds every frame sent and not yet
answered; an answer to a frame no longer there (a resent frame answered twice) is dropped and
counted.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections import deque
from typing import Callable, Iterable, Iterator

import numpy as np

from device_agent.config import AgentConfig, packing
from device_agent.core import FrameOutcome, Tally
from device_agent.inflight import InFlight, Sent
from device_agent.peers import EdgePeer, PeerDown
from device_agent.requests import Requests
from ecd.errors import UnavailableError
from ecd.metrics import ServiceMetrics
from ecd.types import Frame, Result

log = logging.getLogger("ecd.agent")

__all__ = ["StreamLoop", "StreamState", "Why", "TRANSITIONS"]

BACKOFF_START_S, BACKOFF_MAX_S = 0.2, 5.0  # between two questions to the cloud after a broken stream (with jitter)
WATCH_EVERY_S = 0.1  # how often the answer deadline is checked


class StreamState(enum.Enum):
    IDLE = "idle"  # registered; no run under way
    STREAMING = "streaming"  # frames go out on an open edge stream
    DRAINING = "draining"  # this stream sends no new frame; the edge answers those in flight
    FAILING_OVER = "failing_over"  # the stream broke: asking the cloud for an edge before resending
    MOVING = "moving"  # switching to the edge node the cloud named
    RESPLITTING = "resplitting"  # nothing in flight: the user's new split is applied before the next stream
    DONE = "done"  # every frame answered (or the stop's drain time spent)
    FAILED = "failed"  # no edge node answered for failover_wait_s, or a peer refused the stream


class Why(enum.Enum):
    """Why a stream stopped sending (the reason :data:`StreamState.DRAINING` is entered with)."""

    END_OF_INPUT = "end of input"
    STOP = "stop asked"
    MOVE = "move to another edge"
    RESPLIT = "re-split"
    SUPERSEDED = "a newer stream is open"
    HUNG = "the edge answers nothing"


S = StreamState
AFTER_A_STREAM = frozenset({S.STREAMING, S.FAILING_OVER, S.MOVING, S.RESPLITTING, S.DONE, S.FAILED})
TRANSITIONS: dict[StreamState, frozenset[StreamState]] = {
    S.IDLE: frozenset({S.STREAMING}),
    S.STREAMING: AFTER_A_STREAM | {S.DRAINING},
    S.DRAINING: AFTER_A_STREAM,
    S.FAILING_OVER: AFTER_A_STREAM - {S.FAILING_OVER},
    S.MOVING: frozenset({S.STREAMING, S.RESPLITTING, S.DONE, S.FAILED}),
    S.RESPLITTING: frozenset({S.STREAMING, S.DONE, S.FAILED}),
    S.DONE: frozenset({S.IDLE}),
    S.FAILED: frozenset({S.IDLE}),
}


def _tensor_bytes(frame: Frame) -> int:
    return len(frame.tensor.data)


class _Stream:
    """One edge stream's own bookkeeping: a broken stream's frame iterator can still be pulled
    once by gRPC's sender thread after the next stream has opened, and must then make no frame."""

    def __init__(self, resend: list[Frame], now: float) -> None:
        self.resend = resend
        self.closed = False
        self.progress = now  # when it opened, last answered, or last had nothing in flight and sent
        self.hung = False  # abandoned: frames in flight and no answer for answer_deadline_s
        self.finished = threading.Event()  # its results have ended


class StreamLoop:
    """Streams ``samples`` through an :class:`EdgePeer` until they run out or a stop is asked for.

    ``make_frames(images)`` turns the samples of a message into its frames, in order, the device's
    blocks run on them as one call (a frame that could not be made is its error :class:`Result`);
    ``requests`` answers, between two frames, whether to move, re-split or stop, and carries them out.
    """

    def __init__(self, cfg: AgentConfig, edge: EdgePeer, requests: Requests,
                 make_frames: Callable[[list[np.ndarray]], list[Frame | Result]],
                 metrics: ServiceMetrics, tally: Tally, clock: Callable[[], float] = time.monotonic,
                 on_answer: Callable[[float, float, Result], None] | None = None) -> None:
        self.cfg = cfg
        self.edge = edge
        self.requests = requests
        self.make_frames = make_frames
        self.metrics = metrics
        self.tally = tally
        self.clock = clock
        self.on_answer = on_answer  # (sent_at, answered_at, result) of each frame answered once: the measured link
        self._lock = threading.Lock()
        self.state = StreamState.IDLE
        self.why = ""  # the reason of the last transition, as logged
        self.history: deque[tuple[StreamState, str]] = deque(maxlen=64)  # the latest transitions, oldest first
        self.in_flight = InFlight()  # the current run's
        self.sent = 0  # distinct frames sent (a resent frame counts once), every run
        self.duplicates = 0  # answers dropped because their frame was already answered, every run
        self.abandoned = 0  # streams abandoned for the answer deadline (hung edges), every run
        self._window = threading.Semaphore(cfg.max_in_flight)
        self.packing = packing(cfg)
        self._current: _Stream | None = None
        self._exhausted = False
        self._next_at = 0.0
        self._frame_bytes = 0  # the last frame's tensor bytes: the next ones' size, to fill a message to its cap
        self._outcomes: list[FrameOutcome] | None = None  # the current run's, when it keeps them

    # --- the state ----------------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """A run is under way (frames may be in flight)."""
        return self.state not in (StreamState.IDLE, StreamState.DONE, StreamState.FAILED)

    def _enter(self, new: StreamState, why: str = "", only_from: StreamState | None = None) -> None:
        """The one way the state changes; ``only_from``: do nothing unless the state is that one
        (checked under the same lock: the other thread may have moved it meanwhile)."""
        with self._lock:
            if only_from is not None and self.state is not only_from:
                return
            if new not in TRANSITIONS[self.state]:
                raise RuntimeError(f"agent stream: no transition from {self.state.value} to {new.value} ({why})")
            old, self.state, self.why = self.state, new, why
            self.history.append((new, why))
        if old is not new:
            log.debug("[DeviceAgent] stream %s -> %s%s", old.value, new.value, f" ({why})" if why else "")

    def _stop_sending(self, stream: _Stream, why: Why) -> None:
        """This stream sends no more frames; the loop (thread of the results) goes on reading."""
        stream.closed = True
        if stream is self._current:
            self._enter(StreamState.DRAINING, why.value, only_from=StreamState.STREAMING)

    def _why_close(self, stream: _Stream) -> Why | None:
        if stream.hung:
            return Why.HUNG
        if stream is not self._current or stream.closed:
            return Why.SUPERSEDED
        if self.requests.stop_asked():
            return Why.STOP
        if self.requests.move_pending():
            return Why.MOVE
        if self.requests.resplit_pending():
            return Why.RESPLIT
        return None

    # --- sending (gRPC's sender thread) ---------------------------------------------------------

    def _messages(self, stream: _Stream, samples: Iterator[tuple[np.ndarray, int | None]]) -> Iterator[list[Frame]]:
        """The stream's messages: the frames to resend first, then new ones — each message the sample
        taken when the window opened, plus those the window and the input allow at once, taken within
        the linger budget (``ecd.packing``; a sample that is not ready is never waited for), made into
        frames by one call of the device's blocks.

        While earlier frames are in flight, a message whose window is full waits up to the linger
        budget for room for more (Nagle's rule): sent at once, every answer that freed one slot would
        let out a one-frame message, and a busy stream would stay at one frame a message, each paying
        a whole message's cost (digits_cnn at split 0: 3.4x fewer frames a second). A frame with
        nothing in flight still goes at once."""
        yield from self.packing.chunks(stream.resend, _tensor_bytes)
        while (first := self._next_sample(stream, samples, wait=True)) is not None:
            taken = [first]
            until = self.clock() + self.packing.linger_s
            busy_until = time.monotonic() + (self.packing.linger_s if len(self.in_flight) else 0.0)
            # the next frames are as large as the last (one split, one encoding): taken only if they fit
            while self.clock() < until and self.packing.room(len(taken), len(taken) * self._frame_bytes, self._frame_bytes):
                sample = self._next_sample(stream, samples, wait=False, room_s=busy_until - time.monotonic())
                if sample is None:
                    break
                taken.append(sample)
            yield from self.packing.chunks(self._make(stream, taken), _tensor_bytes)
            if stream.closed:
                return

    def _next_sample(self, stream: _Stream, samples: Iterator[tuple[np.ndarray, int | None]],
                     wait: bool, room_s: float = 0.0) -> tuple[np.ndarray, int | None] | None:
        """The next sample, taken once the window has room (``wait``: waiting for it; else only if it
        has room now, or within ``room_s`` seconds, and the frame is due); None when there is none to send now — and, when the
        stream must stop sending (stop, move, re-split, end of input), the stream is closed."""
        if wait:
            while not self._window.acquire(timeout=0.2):
                if (why := self._why_close(stream)) is not None:
                    self._stop_sending(stream, why)
                    return None
        elif not (self._window.acquire(timeout=room_s) if room_s > 0 else self._window.acquire(blocking=False)):
            return None
        if (why := self._why_close(stream)) is not None:
            self._window.release()  # between two frames: a frame made for a stream that has
            self._stop_sending(stream, why)  # ended would go nowhere until the next break
            return None
        if not self._paced(stream, wait):
            self._window.release()
            return None
        try:
            sample = next(samples)
        except StopIteration:
            self._window.release()
            self._exhausted = True
            self._stop_sending(stream, Why.END_OF_INPUT)
            return None
        self.sent += 1
        return sample

    def _make(self, stream: _Stream, taken: list[tuple[np.ndarray, int | None]]) -> list[Frame]:
        """The samples taken as frames, made by one call, now in flight; a frame that could not be
        made is answered here with its error, and only that frame."""
        made = self.make_frames([image for image, _ in taken])
        sent_at = time.perf_counter()
        if not len(self.in_flight):  # the answer deadline counts from the first frame in flight
            stream.progress = self.clock()
        frames = []
        for (image, label), frame in zip(taken, made):
            if isinstance(frame, Result):
                self._deliver(sent_at, label, int(image.nbytes), frame)
                continue
            self.in_flight.add(Sent(frame, sent_at, label, int(image.nbytes)))
            frames.append(frame)
        self._frame_bytes = _tensor_bytes(frames[-1]) if frames else self._frame_bytes
        return frames

    def _paced(self, stream: _Stream, wait: bool = True) -> bool:
        """This frame's turn at ``fps``: waited for (False when a stop came meanwhile), or with
        ``wait`` False, False unless it has come already."""
        if self.cfg.fps <= 0:
            return True
        interval = 1.0 / self.cfg.fps
        early = self._next_at - self.clock()
        if early > 0 and not wait:
            return False
        if early > 0 and self.requests.wait_for_stop(early):
            self._stop_sending(stream, Why.STOP)
            return False
        self._next_at = max(self._next_at + interval, self.clock() - interval)
        return True

    # --- the answer deadline (a thread per stream) -------------------------------------------------

    def _watch(self, stream: _Stream, edge: EdgePeer) -> None:
        """A gray failure: an edge that takes frames and answers none, its connection still open (a
        hung process), would hold the stream until TCP keepalive gives up. While frames are in
        flight and none is answered for ``answer_deadline_s``, the stream is abandoned as if it
        broke: its frames go to the edge the cloud names next, and late answers are dropped."""
        while not stream.finished.wait(WATCH_EVERY_S):
            if self.overdue(stream):
                log.warning("[DeviceAgent] edge %s answered none of %d frames for %.1f s (answer_deadline_s): abandoning it",
                            edge.edge_id, len(self.in_flight), self.cfg.answer_deadline_s)
                stream.hung = True
                self.abandoned += 1
                edge.abandon()
                return

    def overdue(self, stream: _Stream) -> bool:
        """Frames are in flight and none was answered for more than ``answer_deadline_s``."""
        return bool(len(self.in_flight)) and self.clock() - stream.progress > self.cfg.answer_deadline_s

    # --- the loop (the caller's thread) ---------------------------------------------------------

    def run(self, samples: Iterable[tuple[np.ndarray, int | None]], keep: bool) -> list[FrameOutcome]:
        """Stream until the samples run out (every frame answered) or a stop has drained; returns
        the outcomes in frame order when ``keep``. Raises :class:`~ecd.errors.UnavailableError`
        after ``failover_wait_s`` with no answer, and a peer's refusal as it came."""
        if self.state in (StreamState.DONE, StreamState.FAILED):
            self._enter(StreamState.IDLE, "run again")
        source = iter(samples)
        outcomes: list[FrameOutcome] = []
        self.in_flight = InFlight()
        self._outcomes = outcomes if keep else None
        self._window = threading.Semaphore(self.cfg.max_in_flight)
        self._exhausted = False
        self._next_at = self.clock()
        backoff_s = BACKOFF_START_S
        last_answer = self.clock()
        stop_deadline: float | None = None
        resend: list[Frame] = []
        try:
            while True:
                stream = self._current = _Stream(resend, self.clock())
                self._enter(StreamState.STREAMING, f"edge {self.edge.edge_id}")
                if self.cfg.answer_deadline_s > 0:
                    threading.Thread(target=self._watch, args=(stream, self.edge), name="answer-deadline", daemon=True).start()
                broke = False
                try:
                    for result in self.edge.stream(self._messages(stream, source)):
                        if self._take(result):
                            last_answer = stream.progress = self.clock()
                            backoff_s = BACKOFF_START_S
                except PeerDown as e:
                    broke = True
                    log.warning("[DeviceAgent] edge stream broke (%s); %d frames unanswered", e, len(self.in_flight))
                finally:
                    stream.closed = True
                    stream.finished.set()
                left = len(self.in_flight)
                if not left and (self._exhausted or self.requests.stop_asked()):
                    self._enter(StreamState.DONE, "every frame answered")
                    break
                now = self.clock()
                if self.requests.stop_asked():
                    stop_deadline = stop_deadline or now + self.cfg.drain_s
                    if now > stop_deadline:
                        log.warning("[DeviceAgent] stopping with %d frames unanswered after %.1f s", left, self.cfg.drain_s)
                        self._enter(StreamState.DONE, f"stopped with {left} unanswered")
                        break
                if now - last_answer > self.cfg.failover_wait_s:
                    raise UnavailableError(f"edge: no edge node answered for {self.cfg.failover_wait_s:g} s (failover_wait_s); "
                                           f"{left} frames unanswered")
                if broke and not self.requests.move_pending():
                    self._enter(StreamState.FAILING_OVER, Why.HUNG.value if stream.hung else "the stream broke")
                    # the cloud's word on a dead edge comes through the watch; ask as well, in case the
                    # watch is down too (the cloud restarting), then try whichever edge it names
                    if not self.requests.wait_for_move(backoff_s * random.uniform(0.5, 1.0)):
                        self.requests.ask_cloud()
                    backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
                if self.requests.move_pending():
                    self._enter(StreamState.MOVING, "the cloud named another edge")
                    self.edge = self.requests.move()
                if self.requests.resplit_pending() and not len(self.in_flight):
                    self._enter(StreamState.RESPLITTING, "a new split: the user's preferences or the measured link")
                    self.requests.resplit()
                resend = self.in_flight.unanswered()
                if resend:
                    log.warning("[DeviceAgent] resending %d frames", len(resend))
        except BaseException as e:
            self._enter(StreamState.FAILED, str(e) or type(e).__name__)
            raise
        finally:
            self._current = None
        outcomes.sort(key=lambda o: o.frame_id)
        return outcomes

    def _take(self, result: Result) -> bool:
        """Deliver one result once; False for a duplicate (dropped)."""
        sent = self.in_flight.answer(result)
        if sent is None:  # answered before (a resent frame answered twice), or never sent
            self.duplicates += 1
            return False
        self._deliver(sent.sent_at, sent.label, sent.raw_bytes, result)
        return True

    def _deliver(self, sent_at: float, label: int | None, raw_bytes: int, result: Result) -> None:
        """The application's one answer to a frame: the edge's, or the error it could not be made with."""
        answered_at = time.perf_counter()
        latency = answered_at - sent_at
        if self.on_answer is not None:
            self.on_answer(sent_at, answered_at, result)
        outcome = FrameOutcome(result.frame_id, label, raw_bytes, latency, result)
        self.tally.add(outcome)
        if self._outcomes is not None:
            self._outcomes.append(outcome)
        self.metrics.frame(result.ok, None if result.ok else result.error.status)
        self.metrics.stage_seconds.labels("device", "end_to_end").observe(latency)
        self._window.release()
