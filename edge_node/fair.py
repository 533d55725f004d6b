"""Fairness between devices on one edge node (issue 30): a device that holds a valid token is a
member of the fleet, and may still flood. Two bounds keep it from taking the others' share:

* :class:`DeviceQuotas` — per device, at most ``max_streams`` streams open at once (a new one
  beyond that is refused with RESOURCE_EXHAUSTED) and at most ``max_frames`` frames taken and not
  yet answered across all its streams, shared max-min fairly with the other devices (beyond its
  share its streams stop being read, so HTTP/2 flow control slows it, as a non-reading client's own
  stream already does).
* :class:`FairQueue` — the frames bound for the cloud, one lane per device, taken round robin, so
  a device with 64 frames queued delays another device's next frame by at most one of its own
  (a FIFO made the victim wait behind the whole flood). The total is bounded by ``max_size``, but
  a device with nothing queued may always add one: a full queue never locks a device out, and the
  total stays below ``max_size`` plus the number of devices.

A stream counts against its device only once its first frame passed the token check, so a stream
naming another device's id cannot use up that device's quota.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable, Generic, TypeVar

from ecd.errors import LimitError

T = TypeVar("T")


class StreamQuotaError(LimitError):
    """A device opened more streams than its quota: the new stream is refused whole
    (RESOURCE_EXHAUSTED), where any other limit refuses one frame."""


class DeviceSlots:
    """One device's frames in the node, counted against :class:`DeviceQuotas` (what its streams
    acquire per frame taken and release per frame answered, as a semaphore's holders do)."""

    def __init__(self, quotas: DeviceQuotas, device_id: str):
        self.quotas, self.device_id = quotas, device_id
        self.held = 0

    def locked(self) -> bool:
        """Whether :meth:`acquire` would wait now."""
        return not self.quotas.may_take(self)

    async def acquire(self) -> None:
        async with self.quotas.changed:
            self.quotas.waiting += 1
            try:
                await self.quotas.changed.wait_for(lambda: self.quotas.may_take(self))
            finally:
                self.quotas.waiting -= 1
            self.held += 1
            self.quotas.changed.notify_all()

    def release(self) -> None:
        self.held -= 1
        self.quotas.notify()


class DeviceQuotas:
    """Per device: streams open (refused beyond ``max_streams``) and frames in the node.

    Frames are shared max-min fairly: a device may take another frame while it holds no more than
    some other device holding frames does (or none holds any), and never more than ``max_frames``.
    A fixed per-device cap alone let a flooder keep its whole quota (16) in the node while an agent
    that waits for its answers had at most its window (8) there, so the round-robin queue served
    the flooder two frames for each of the agent's (measured: the agent kept 35 % of its idle
    rate). With the share, a flooder holds at most one frame more than the busiest other device;
    a device alone still uses the whole quota."""

    def __init__(self, max_streams: int, max_frames: int):
        if max_streams < 1 or max_frames < 1:
            raise ValueError(f"max_streams and max_frames must be >= 1, got {max_streams}, {max_frames}")
        self.max_streams = max_streams
        self.max_frames = max_frames
        self._streams: dict[str, int] = {}
        self._slots: dict[str, DeviceSlots] = {}
        self.changed = asyncio.Condition()
        self.waiting = 0  # streams waiting for a slot (nothing to wake is the common case, on every frame)
        self._wakers: set[asyncio.Task] = set()

    def may_take(self, slots: DeviceSlots) -> bool:
        if slots.held >= self.max_frames:
            return False
        others = max((s.held for s in self._slots.values() if s is not slots), default=0)
        return others == 0 or slots.held <= others

    def notify(self) -> None:
        """A frame left the node: a device held back by the share may take one now."""
        if self.waiting:
            task = asyncio.get_running_loop().create_task(self._wake())
            self._wakers.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._wakers.discard)

    async def _wake(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def admit(self, device_id: str) -> DeviceSlots:
        """Count a new stream of ``device_id``; its frames' slots. Refused beyond the quota."""
        open_now = self._streams.get(device_id, 0)
        if open_now >= self.max_streams:
            raise StreamQuotaError(f"device_id: device {device_id} already has {open_now} streams open on this edge node "
                                   f"(at most {self.max_streams} per device)")
        self._streams[device_id] = open_now + 1
        return self._slots.setdefault(device_id, DeviceSlots(self, device_id))

    def leave(self, device_id: str) -> None:
        """A stream of ``device_id`` ended (its frames' slots were given back by then)."""
        left = self._streams.get(device_id, 0) - 1
        if left > 0:
            self._streams[device_id] = left
        else:
            self._streams.pop(device_id, None)
            self._slots.pop(device_id, None)
            self.notify()

    def streams(self, device_id: str) -> int:
        return self._streams.get(device_id, 0)


class FairQueue(Generic[T]):
    """An asyncio queue with one FIFO lane per key, taken round robin (see the module doc)."""

    def __init__(self, max_size: int):
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._lanes: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # keys with something queued, in the order they are served
        self._size = 0
        self._changed = asyncio.Condition()

    def qsize(self) -> int:
        return self._size

    def full(self) -> bool:
        return self._size >= self.max_size

    async def put(self, key: str, item: T) -> None:
        """Queue ``item`` in ``key``'s lane; waits while the queue is full and the lane not empty."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._size < self.max_size or key not in self._lanes)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = deque()
                self._turns.append(key)
            lane.append(item)
            self._size += 1
            self._changed.notify_all()

    async def get(self) -> T:
        """The next lane's oldest item; that lane goes to the back of the turns."""
        (item,) = await self.get_many(lambda _: False)
        return item

    async def get_many(self, more: Callable[[T], bool]) -> list[T]:
        """The next item as :meth:`get` takes it (waiting for one), then the next ones in the same
        round-robin order while any is queued and ``more(item)`` accepts it — a message's worth of
        frames, taken fairly, without waiting for a frame that is not there. ``more`` is told of the
        first item too (it is taken whatever the answer), so it can count what it accepted."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._size > 0)
            more(self._lanes[self._turns[0]][0])
            items = [self._pop()]
            while self._size and more(self._lanes[self._turns[0]][0]):
                items.append(self._pop())
            self._changed.notify_all()
            return items

    def _pop(self) -> T:
        key = self._turns.popleft()
        lane = self._lanes[key]
        item = lane.popleft()
        self._size -= 1
        if lane:
            self._turns.append(key)
        else:
            del self._lanes[key]
        return item
