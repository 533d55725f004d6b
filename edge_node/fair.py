"""Fairness between devices on one edge node (issue 30): a device that holds a valid token is a
member of the fleet, and may still flood. These keep it from taking the others' share:

* :class:`DeviceQuotas` — per device, at most ``max_streams`` streams open at once (a new one
  beyond that is refused with RESOURCE_EXHAUSTED) and at most ``max_frames`` frames taken and not
  yet answered across all its streams, shared max-min fairly with the other devices in the edge's
  CPU time (beyond its share its streams stop being read, so HTTP/2 flow control slows it, as a
  non-reading client's own stream already does).
* :class:`Meter` and :class:`ComputeCosts` — what a device's frames cost the edge: the event
  loop's CPU time in the steps of its streams' tasks (reading and parsing its messages, checking
  and queueing its frames, writing its results), plus the blocks the edge runs for them (rows times
  the range's measured time a row), charged to its :class:`DeviceSlots`. Devices' frames cost the
  edge unequally: a flooder sending raw inputs one per message cost it 1.4 ms of CPU a frame, an
  agent packing split-3 activations 0.7 (``benchmarks/abuse.py``'s two devices, each alone), so an
  equal share in frames gave the flooder two thirds of the edge.
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
import math
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Coroutine, Generator, Generic, TypeVar

from ecd.errors import LimitError

T = TypeVar("T")


class StreamQuotaError(LimitError):
    """A device opened more streams than its quota: the new stream is refused whole
    (RESOURCE_EXHAUSTED), where any other limit refuses one frame."""


COST_WINDOW = 256  # frames a device's cost per frame is averaged over (older ones count half, and so on)
MAX_REMEMBERED = 4096  # devices with no stream open whose cost is kept (the least recent forgotten first)
CLAIM_S = 0.25  # how long frames a device held still count for it, fading (time constant), once answered


class DeviceSlots:
    """One device's frames in the node, counted against :class:`DeviceQuotas` (what its streams
    acquire per frame taken and release per frame answered, as a semaphore's holders do), and what
    its frames cost the edge (:meth:`charge`, :attr:`cost`)."""

    def __init__(self, quotas: DeviceQuotas, device_id: str):
        self.quotas, self.device_id = quotas, device_id
        self.held = 0
        self.spent_s = 0.0  # the edge's time charged to it, and the frames it took, both decayed alike
        self.frames = 0.0
        self._claim, self._claim_at = 0.0, 0.0  # frames it held lately, and when (quotas.now)

    def charge(self, spent_s: float) -> None:
        """The edge spent ``spent_s`` seconds on this device's frames (:class:`Meter`, :class:`ComputeCosts`)."""
        self.spent_s += spent_s

    @property
    def cost(self) -> float:
        """The edge's seconds per frame of this device, recently; 0 until some were charged."""
        return _per_frame(self.spent_s, self.frames)

    def _took(self) -> None:
        self.held += 1
        self.frames += 1
        if self.frames >= COST_WINDOW:  # bounded memory, recent costs: halve both, the ratio stays
            self.frames /= 2
            self.spent_s /= 2

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
            self._took()
            self.quotas.changed.notify_all()

    def release(self) -> None:
        now = self.quotas.now()
        self._claim, self._claim_at = self.claim(now), now
        self.held -= 1
        self.quotas.notify()

    def claim(self, now: float) -> float:
        """The frames this device holds, or held lately, fading over CLAIM_S: what another device's
        share is weighed against. An agent's frames leave between its batches (its stream ends, the
        next starts); counted as gone, the flooder beside it filled the node in each gap, and the
        agent's next frames waited behind those."""
        return max(self.held, self._claim * math.exp(-(now - self._claim_at) / CLAIM_S))


class DeviceQuotas:
    """Per device: streams open (refused beyond ``max_streams``) and frames in the node.

    Frames are shared max-min fairly in the edge's time: a device may take another frame while its
    frames in the node cost no more than those of some other device holding frames or having held
    them a moment ago (:meth:`DeviceSlots.claim`), or while none does or it holds none, and never
    more than ``max_frames``; a frame's cost is its device's recent time per frame
    (:attr:`DeviceSlots.cost`; frames of a device not yet measured count alike). A fixed cap alone
    let a flooder keep its whole quota (16) in the node while an agent that waits for its answers
    had at most its window (8) there (the agent kept 35 % of its idle rate). An equal share in
    frames still gave the flooder, whose frames cost the edge two to three times the agent's, most
    of the edge, and the whole node whenever the agent was between two streams (the agent kept
    40-57 %). Weighted by cost, a flooder whose frames cost twice as much holds half as many as the
    agent holds or held lately, plus one; a device alone still uses the whole quota."""

    def __init__(self, max_streams: int, max_frames: int, clock: Callable[[], float] = time.thread_time,
                 now: Callable[[], float] = time.monotonic):
        if max_streams < 1 or max_frames < 1:
            raise ValueError(f"max_streams and max_frames must be >= 1, got {max_streams}, {max_frames}")
        self.max_streams = max_streams
        self.max_frames = max_frames
        self.clock = clock  # what the streams' meters read (the loop thread's CPU time; a counter in tests)
        self.now = now  # what claims fade with
        self._streams: dict[str, int] = {}
        self._slots: dict[str, DeviceSlots] = {}
        # what the frames of devices with no stream open cost, newest last: an agent opens a stream
        # per batch of samples, and its cost must weigh its share from its next stream's first frame
        self._costs: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._gone: dict[str, DeviceSlots] = {}  # devices with no stream open whose claim has not faded yet
        self.changed = asyncio.Condition()
        self.waiting = 0  # streams waiting for a slot (nothing to wake is the common case, on every frame)
        self._wakers: set[asyncio.Task] = set()

    def may_take(self, slots: DeviceSlots) -> bool:
        if slots.held >= self.max_frames:
            return False
        if slots.held == 0:
            return True
        now = self._fade()
        claims = [(s, s.claim(now)) for group in (self._slots, self._gone) for s in group.values() if s is not slots]
        busy = [(s, c) for s, c in claims if c >= 0.5]
        return not busy or any(_weighed(slots, s, c) for s, c in busy)

    def _fade(self) -> float:
        """Forget the devices gone whose claim faded (under half a frame); now."""
        now = self.now()
        for device_id in [d for d, s in self._gone.items() if s.claim(now) < 0.5]:
            del self._gone[device_id]
        return now

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
        slots = self._slots.get(device_id)
        if slots is None:
            slots = self._slots[device_id] = self._gone.pop(device_id, None) or DeviceSlots(self, device_id)
            if device_id in self._costs:
                slots.spent_s, slots.frames = self._costs.pop(device_id)
        return slots

    def leave(self, device_id: str) -> None:
        """A stream of ``device_id`` ended (its frames' slots were given back by then)."""
        left = self._streams.get(device_id, 0) - 1
        if left > 0:
            self._streams[device_id] = left
        else:
            self._streams.pop(device_id, None)
            slots = self._slots.pop(device_id, None)
            if slots is not None:
                self._fade()
                self._gone[device_id] = slots  # the devices that left in the last few CLAIM_S
                self._costs[device_id] = (slots.spent_s, slots.frames)
                for kept in (self._gone, self._costs):  # bounded whatever the churn: the oldest go first
                    while len(kept) > MAX_REMEMBERED:
                        del kept[next(iter(kept))]
            self.notify()

    def streams(self, device_id: str) -> int:
        return self._streams.get(device_id, 0)

    def cost(self, device_id: str) -> float:
        """``device_id``'s :attr:`DeviceSlots.cost`, its streams open or not (0 if not known)."""
        slots = self._slots.get(device_id)
        return slots.cost if slots is not None else _per_frame(*self._costs.get(device_id, (0.0, 0.0)))


def _per_frame(spent_s: float, frames: float) -> float:
    return spent_s / frames if frames and spent_s > 0 else 0.0


def _weighed(mine: DeviceSlots, other: DeviceSlots, other_claim: float) -> bool:
    """Whether ``mine``'s frames in the node cost no more than ``other``'s claim does (in frames
    while either device's cost is not measured yet)."""
    if mine.cost and other.cost:
        return mine.held * mine.cost <= other_claim * other.cost
    return mine.held <= other_claim


class Meter:
    """The event loop's CPU time in the steps of one device stream's coroutines (:meth:`run`), and
    what the blocks run for its frames cost (:meth:`add`, from :class:`ComputeCosts`), charged to
    the device once it is known (:meth:`bind`; what was spent before goes with it).

    A step is what runs between two awaits that suspend, so waiting costs nothing; ``clock`` is
    the thread's CPU time by default (time the OS gave other threads or processes is not the
    stream's), injected in tests."""

    def __init__(self, clock: Callable[[], float] = time.thread_time):
        self.clock = clock
        self.unbound = 0.0
        self.slots: DeviceSlots | None = None

    def bind(self, slots: DeviceSlots) -> None:
        self.slots = slots
        slots.charge(self.unbound)
        self.unbound = 0.0

    def add(self, spent_s: float) -> None:
        if self.slots is None:
            self.unbound += spent_s
        else:
            self.slots.charge(spent_s)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro``, metering each of its steps."""
        return await _Metered(coro, self)


class ComputeCosts:
    """What running a block range costs the edge per row (image), measured around the runner in
    the executor's threads, where the loop thread's CPU clock cannot see it; charged to a frame's
    device as its rows times that range's mean (:meth:`of`). A device that sends raw inputs makes
    the edge run every convolution (digits_cnn: 24 MFLOP a row from split 0, 5 from split 3), which
    its share must count. One mean per range, whoever's frames measured it: rows of one range cost
    alike, and batches mix devices' rows."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self._per_row: dict[tuple, float] = {}  # (model, version, start, stop) -> seconds; ranges of models this node runs

    def timed(self, model: tuple[str, str], run: Callable[[Any, int, int], T]) -> Callable[[Any, int, int], T]:
        """``run(x, start, stop)``, measured."""

        def measured(x: Any, start: int, stop: int) -> T:
            t0 = self.clock()
            y = run(x, start, stop)
            per_row = (self.clock() - t0) / max(len(x), 1)
            old = self._per_row.get((*model, start, stop))
            self._per_row[(*model, start, stop)] = per_row if old is None else old + (per_row - old) / 16
            return y

        return measured

    def of(self, model: tuple[str, str], start: int, stop: int, rows: int) -> float:
        return rows * self._per_row.get((*model, start, stop), 0.0)


class _Metered:
    """An awaitable that drives a coroutine step by step, as the task awaiting it would, timing each."""

    def __init__(self, coro: Coroutine, meter: Meter):
        self.coro, self.meter = coro, meter

    def __await__(self) -> Generator[Any, Any, Any]:
        steps, clock, add = self.coro.__await__(), self.meter.clock, self.meter.add
        value: Any = None
        error: BaseException | None = None
        while True:
            t0 = clock()
            try:
                yielded = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            finally:
                error = None  # thrown: kept here it would hold its traceback, and so this frame, in a cycle
                add(clock() - t0)
            try:
                value, error = (yield yielded), None
            except GeneratorExit:  # this awaitable is being closed: close the coroutine too
                self.coro.close()
                raise
            except BaseException as e:  # noqa: BLE001 — cancellation and the like go to the coroutine
                value, error = None, e


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
