"""The share of the edge each device gets is counted in the edge's time, not in frames (issue 30):
a device whose frames cost the edge more (one frame per message, where another packs several; raw
inputs, where another sends activations) holds fewer of them in the node, and frames a device held
a moment ago still count. Costs are counted with injected clocks: no timing here."""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import weakref
from pathlib import Path

import pytest
from harness import Tiers, frame_for, start_tiers, stop_tiers

from ecd import zoo
from ecd.manifest import load_heldout
from ecd.types import FrameError, Result
from ecd.v1 import ecd_pb2 as pb
from edge_node import fair
from edge_node.fair import ComputeCosts, DeviceQuotas, Meter
from edge_node.service import EdgeServicer

M = zoo.load_manifest("digits_cnn")
X = M.input.preprocess(load_heldout(M).images[:1])


def test_a_meter_charges_each_step_of_its_coroutine_to_the_device_it_is_bound_to_and_nothing_for_waiting() -> None:
    now = [0.0]
    slots = DeviceQuotas(max_streams=1, max_frames=4).admit("d")

    async def stream(gate: asyncio.Future) -> str:
        now[0] += 2.0  # work before the device is known
        meter.bind(slots)
        await asyncio.sleep(0)
        now[0] += 3.0
        await gate  # waiting: the clock moves on, for others
        now[0] += 5.0
        return "done"

    async def go() -> str:
        gate = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(meter.run(stream(gate)))
        for _ in range(3):
            await asyncio.sleep(0)
        now[0] += 100.0  # another task's work while the stream waits
        gate.set_result(None)
        return await task

    meter = Meter(lambda: now[0])
    assert asyncio.run(go()) == "done"
    assert slots.spent_s == 10.0 and meter.unbound == 0.0


def test_a_metered_coroutine_gets_its_cancellation_and_its_errors_reach_the_caller() -> None:
    seen = []

    async def stream(gate: asyncio.Future) -> None:
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("its own")

    async def go() -> None:
        meter = Meter(itertools.count().__next__)
        task = asyncio.create_task(meter.run(stream(asyncio.get_running_loop().create_future())))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ValueError, match="its own"):
            await meter.run(failing())
        assert meter.unbound > 0  # steps were counted, none bound to a device

    asyncio.run(go())
    assert seen == ["cancelled"]


def test_a_device_whose_frames_cost_twice_as_much_holds_half_as_many_plus_one_and_alone_its_whole_quota() -> None:
    async def go() -> None:
        quotas = DeviceQuotas(max_streams=2, max_frames=16)
        flood, quiet = quotas.admit("flood"), quotas.admit("quiet")
        for _ in range(16):
            await asyncio.wait_for(flood.acquire(), 1)  # alone: the whole quota, whatever its frames cost
        flood.charge(16 * 2.0)
        assert flood.locked() and flood.cost == 2.0
        for _ in range(8):
            quiet.charge(1.0)
            await asyncio.wait_for(quiet.acquire(), 1)  # holds fewer frames: never held back
        assert quiet.cost == 1.0 and not quiet.locked()
        for _ in range(12):
            flood.release()
        assert flood.held == 4 and not flood.locked()  # 4 x 2.0 <= 8 x 1.0
        await asyncio.wait_for(flood.acquire(), 1)
        flood.charge(2.0)
        assert flood.held == 5 and flood.locked()  # 5 x 2.0 > 8 x 1.0: in frames it would go on to 9
        waiting = asyncio.create_task(flood.acquire())
        await asyncio.sleep(0)
        assert not waiting.done()
        quiet.charge(1.0)
        await asyncio.wait_for(quiet.acquire(), 1)
        await asyncio.sleep(0)
        assert not waiting.done()  # 9 x 1.0 < 5 x 2.0
        quiet.charge(1.0)
        await asyncio.wait_for(quiet.acquire(), 1)  # quiet holds 10 x 1.0: the flooder may take one more
        await asyncio.wait_for(waiting, 1)
        assert (flood.held, quiet.held) == (6, 10) and flood.locked() and not quiet.locked()

    asyncio.run(go())


def test_frames_a_device_held_a_moment_ago_still_count_so_a_flooder_does_not_fill_the_gap_between_its_streams() -> None:
    """An agent's stream ends after each batch of samples and the next one opens: in that gap its
    frames (answered) still weigh on the flooder's share, fading over CLAIM_S; once faded, the
    flooder is alone and may take its whole quota."""

    async def go() -> None:
        now = [0.0]
        quotas = DeviceQuotas(max_streams=2, max_frames=16, now=lambda: now[0])
        flood, agent = quotas.admit("flood"), quotas.admit("agent")
        for _ in range(8):
            await asyncio.wait_for(agent.acquire(), 1)
        for _ in range(9):
            await asyncio.wait_for(flood.acquire(), 1)
        assert flood.locked()  # 9 > 8
        for _ in range(8):
            agent.release()
        quotas.leave("agent")  # its batch is done; the next stream opens in a moment
        for _ in range(3):
            flood.release()
        now[0] += 0.1 * fair.CLAIM_S
        assert agent.claim(now[0]) == pytest.approx(8 * math.exp(-0.1))
        for _ in range(2):
            await asyncio.wait_for(flood.acquire(), 1)
        assert flood.held == 8 and flood.locked()  # 8 > 7.2: still held back by the agent it cannot see
        assert quotas.admit("agent") is agent and not agent.locked()  # the next stream: the same share
        quotas.leave("agent")
        now[0] += 5 * fair.CLAIM_S  # faded: 8 x e^-5.1 < half a frame
        for _ in range(8):
            await asyncio.wait_for(flood.acquire(), 1)
        assert flood.held == 16 and not quotas._gone  # forgotten

    asyncio.run(go())


def test_a_device_keeps_its_cost_between_streams_and_only_so_many_devices_costs_are_kept(monkeypatch) -> None:
    monkeypatch.setattr(fair, "MAX_REMEMBERED", 2)
    quotas = DeviceQuotas(max_streams=1, max_frames=4)
    for name in ("a", "b", "c"):
        slots = quotas.admit(name)
        slots.spent_s, slots.frames = 3.0, 2.0
        quotas.leave(name)
    assert quotas.admit("c").cost == 1.5 and quotas.admit("b").cost == 1.5  # a new stream starts from it
    assert quotas.admit("a").cost == 0.0  # the least recent was forgotten


def test_the_cost_per_frame_is_recent_and_its_counts_stay_bounded() -> None:
    async def go() -> None:
        slots = DeviceQuotas(max_streams=1, max_frames=1).admit("d")
        for cost in (1.0, 3.0):
            for _ in range(4 * fair.COST_WINDOW):
                await slots.acquire()
                slots.charge(cost)
                slots.release()
        assert slots.frames < fair.COST_WINDOW and slots.cost == pytest.approx(3.0, abs=0.05)  # the old cost 1.0 faded

    asyncio.run(go())


def test_the_servicer_meters_writing_a_streams_results_with_the_meter_its_reading_is_charged_to() -> None:
    """The edge's work on a device's results (converting and writing them) is the device's too: the
    handler runs under the stream's meter, which it hands to the core to bind to the device."""
    now = [0.0]
    quotas = DeviceQuotas(max_streams=1, max_frames=4, clock=lambda: now[0])
    slots = quotas.admit("d")

    class Core:
        def __init__(self) -> None:
            self.quotas = quotas

        async def serve_messages(self, messages, holder, meter):
            meter.bind(slots)
            async for frames in messages:
                yield [Result.refused(f, FrameError("INVALID_ARGUMENT", "x")) for f in frames]

    class Context:
        async def write(self, message) -> None:
            now[0] += 1.0  # the write's own work, in the handler's task
            await asyncio.sleep(0)

    async def requests():
        for i in range(3):
            yield pb.Frame(device_id="d", frame_id=i + 1)

    async def go() -> None:
        await EdgeServicer(Core()).Stream(requests(), Context())

    asyncio.run(go())
    assert slots.spent_s == 3.0


# --- a real edge node ---------------------------------------------------------------------------


@pytest.fixture
def tiers(tmp_path: Path):
    t = start_tiers(tmp_path)
    yield t
    stop_tiers(t)


def test_the_edge_charges_a_device_the_steps_of_its_streams_so_one_frame_per_message_costs_more(tiers: Tiers) -> None:
    """With a clock that counts the loop steps it times, a device's cost is the steps its frames
    took (at split 5 the edge runs no block for them): frames sent one per message take more than
    twice the steps of the same frames packed into one message."""
    tiers.edge.core.quotas.clock = itertools.count().__next__
    alone, packed = tiers.register(split=5, name="alone"), tiers.register(split=5, name="packed")
    n = 8
    assert len(list(tiers.edge_stub.Stream(iter([frame_for(alone, M, X, i + 1) for i in range(n)]), timeout=30))) == n
    batch = pb.FrameBatch(frames=[frame_for(packed, M, X, i + 1) for i in range(n)])
    assert sum(len(m.results) for m in tiers.edge_stub.StreamBatches(iter([batch]), timeout=30)) == n
    quotas = tiers.edge.core.quotas
    assert quotas.cost(alone.device_id) > 2 * quotas.cost(packed.device_id) > 0


def test_a_block_ranges_cost_is_measured_per_row_around_the_runner_and_charged_by_rows() -> None:
    now = [0.0]
    work = {(0, 5): 24.0, (3, 5): 5.0}  # seconds a row, as the runner spends them

    def run(x, start, stop):
        now[0] += work[(start, stop)] * len(x)
        return x

    costs = ComputeCosts(lambda: now[0])
    timed = costs.timed(("m", "1"), run)
    assert costs.of(("m", "1"), 0, 5, rows=3) == 0.0  # not measured yet
    assert timed([1, 2], 0, 5) == [1, 2] and timed([1], 3, 5) == [1]
    assert costs.of(("m", "1"), 0, 5, rows=3) == 72.0 and costs.of(("m", "1"), 3, 5, rows=2) == 10.0
    assert costs.of(("m", "2"), 0, 5, rows=1) == 0.0  # another version is another range
    work[(3, 5)] = 21.0
    timed([1], 3, 5)
    assert costs.of(("m", "1"), 3, 5, rows=1) == 6.0  # a mean: one new measurement moves it by 1/16


def test_the_edge_charges_a_device_the_blocks_it_runs_for_it(tiers: Tiers) -> None:
    """Loop steps counted as free, each run of blocks as 1: a device at split 2 (the edge runs its
    blocks 2..) is charged them, one at split 5 (no block here) nothing."""
    tiers.edge.core.quotas.clock = lambda: 0.0
    tiers.edge.core.compute.clock = itertools.count().__next__
    runs, none = tiers.register(split=2, name="runs"), tiers.register(split=5, name="none")
    for a in (runs, none):
        assert len(list(tiers.edge_stub.Stream(iter([frame_for(a, M, X, i + 1) for i in range(4)]), timeout=30))) == 4
    assert tiers.edge.core.quotas.cost(runs.device_id) > 0 and tiers.edge.core.quotas.cost(none.device_id) == 0


def test_a_cancelled_metered_coroutine_is_freed_at_once_not_by_the_garbage_collector() -> None:
    """A cancelled stream's metered coroutine must not keep its frames (and the call's state they
    hold) in a reference cycle until the next collection: the metering wrapper drops what it threw."""
    class Held:
        pass

    async def scenario() -> weakref.ref:
        held = Held()
        ref = weakref.ref(held)

        async def hold(_: Held) -> None:
            await asyncio.Event().wait()

        task = asyncio.ensure_future(Meter().run(hold(held)))
        del held
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task})
        assert task.cancelled()
        del task
        return ref

    gc.collect()
    gc.disable()
    try:
        assert asyncio.run(scenario())() is None
    finally:
        gc.enable()
