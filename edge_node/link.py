"""The edge node's frames on their way to the cloud and back: each device stream's session (where
its results go, what it may have outstanding), and the :class:`CloudLink` — the one writer of which
frames are pending at the cloud, with at-least-once delivery and exactly-once routing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ecd.errors import RequestError
from ecd.metrics import ServiceMetrics
from ecd.packing import Packing
from ecd.types import Frame, Result
from edge_node.fair import DeviceSlots, FairQueue

END = object()  # a session's results have all been handed back
ONE_PER_MESSAGE = Packing(linger_s=0.0, max_frames=1)  # the one-frame Stream call


@dataclass(eq=False)  # sessions are kept in a set: identity, not value
class DeviceSession:
    """One device stream: where its results go, how many it may have outstanding, when it is done.

    ``slots`` bounds the frames taken from the stream and not yet handed back to it, so a client
    that stops reading its results stops being read from (flow control), instead of filling the
    edge's memory with answers nobody collects."""

    out: asyncio.Queue
    slots: asyncio.Semaphore
    in_flight: int = 0
    reading_done: bool = False
    closed: bool = False
    device_slots: DeviceSlots | None = None  # the device's frames in flight on this node (edge_node.fair)

    def answered(self) -> None:
        self.in_flight -= 1
        self.free_device_slot()
        self.maybe_finish()

    def free_device_slot(self) -> None:
        """A frame this stream submitted left the node's pipeline (answered, or handed over)."""
        if self.device_slots is not None:
            self.device_slots.release()

    def maybe_finish(self) -> None:
        if self.reading_done and self.in_flight == 0:
            self.out.put_nowait(END)


@dataclass
class CloudLink:
    """The frames bound for the cloud, with at-least-once delivery and exactly-once routing.

    :attr:`pending` holds every frame sent to the cloud and not yet answered, in submission order.
    The transport drains :attr:`queue` onto the cloud stream (skipping frames already written on
    it), hands every answer to :meth:`route`, and on a new stream first writes :meth:`unanswered`
    — straight onto the stream, never back through the bounded queue, so any number of pending
    frames is resent without waiting for room that only the writer itself could make.
    """

    max_queue: int
    metrics: ServiceMetrics
    queue: FairQueue = field(init=False)  # one lane per device, served round robin
    pending: dict = field(default_factory=dict)  # (device_id, frame_id) -> (session, frame)
    written: set = field(default_factory=set)  # keys written on the current cloud stream

    def __post_init__(self) -> None:
        self.queue = FairQueue(self.max_queue)

    async def submit(self, frame: Frame, session: DeviceSession) -> bool:
        """Queue ``frame`` for the cloud (waits while the queue is full).

        A frame already pending for a stream that has since closed (the device lost its stream and
        resent on a new one) is handed over to the new stream, not sent twice; a frame id already
        in flight on an open stream is refused (:class:`~ecd.errors.RequestError`)."""
        key = (frame.device_id, frame.frame_id)
        if key in self.pending:
            owner, _ = self.pending[key]
            if not owner.closed:
                raise RequestError(f"frame_id: frame {frame.frame_id} of device {frame.device_id} is already in flight")
            owner.in_flight -= 1
            owner.free_device_slot()
            self.pending[key] = (session, frame)
            session.in_flight += 1
            return False
        self.pending[key] = (session, frame)
        session.in_flight += 1
        try:
            await self.queue.put(frame.device_id, frame)
        except asyncio.CancelledError:  # the stream went away while waiting for room: not ours any more
            if self.pending.get(key, (None,))[0] is session:
                del self.pending[key]
                session.in_flight -= 1
            raise
        self.metrics.queue_depth.labels("edge").set(self.queue.qsize())
        return True

    async def next_frame(self) -> Frame:
        """The next queued frame not yet written on this cloud stream and still unanswered."""
        (frame,) = await self.next_frames(ONE_PER_MESSAGE)
        return frame

    async def next_frames(self, packing: Packing) -> list[Frame]:
        """The next queued frames not yet written on this cloud stream and still unanswered: the
        first as soon as there is one, then whatever else is queued, fairly, up to ``packing``'s
        caps (one message's worth; never waiting for more)."""
        while True:
            count, size = 0, 0

            def more(frame: Frame) -> bool:
                nonlocal count, size
                n = len(frame.tensor.data)
                if not packing.room(count, size, n):
                    return False
                count, size = count + 1, size + n
                return True

            taken = await self.queue.get_many(more)
            self.metrics.queue_depth.labels("edge").set(self.queue.qsize())
            frames = []
            for frame in taken:
                key = (frame.device_id, frame.frame_id)
                if key in self.pending and key not in self.written:
                    self.written.add(key)
                    frames.append(frame)
            if frames:
                return frames

    def route(self, result: Result) -> bool:
        """Hand the cloud's answer to its device stream; False for a duplicate answer."""
        key = (result.device_id, result.frame_id)
        entry = self.pending.pop(key, None)
        self.written.discard(key)
        if entry is None:
            return False  # a duplicate answer to a resent frame
        session, _ = entry
        if not session.closed:
            session.out.put_nowait(result)
        session.answered()
        return True

    def unanswered(self) -> list[Frame]:
        """On a new cloud stream: every pending frame, to write first; each is marked written, so
        the copy still in the queue is skipped."""
        self.written = set(self.pending)
        return [frame for _, frame in self.pending.values()]
