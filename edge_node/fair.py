"""Fairness between devices on one edge node (issue 30): a device that holds a valid token is a
member of the fleet, and may still flood. Two bounds keep it from taking the others' share:

* :class:`DeviceQuotas` — per device, at most ``max_streams`` streams open at once (a new one
  beyond that is refused with RESOURCE_EXHAUSTED) and at most ``max_frames`` frames taken and not
  yet answered across all its streams (beyond that its streams stop being read, so HTTP/2 flow
  control slows it, as a non-reading client's own stream already does).
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


class DeviceQuotas:
    def __init__(self, max_streams: int, max_frames: int):
        if max_streams < 1 or max_frames < 1:
            raise ValueError(f"max_streams and max_frames must be >= 1, got {max_streams}, {max_frames}")
        self.max_streams = max_streams
        self.max_frames = max_frames
        self._streams: dict[str, int] = {}
        self._frames: dict[str, asyncio.Semaphore] = {}

    def admit(self, device_id: str) -> asyncio.Semaphore:
        """Count a new stream of ``device_id``; its frames' semaphore. Refused beyond the quota."""
        open_now = self._streams.get(device_id, 0)
        if open_now >= self.max_streams:
            raise StreamQuotaError(f"device_id: device {device_id} already has {open_now} streams open on this edge node "
                             f"(at most {self.max_streams} per device)")
        self._streams[device_id] = open_now + 1
        return self._frames.setdefault(device_id, asyncio.Semaphore(self.max_frames))

    def leave(self, device_id: str) -> None:
        """A stream of ``device_id`` ended (its frames' slots were given back by then)."""
        left = self._streams.get(device_id, 0) - 1
        if left > 0:
            self._streams[device_id] = left
        else:
            self._streams.pop(device_id, None)
            self._frames.pop(device_id, None)

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
