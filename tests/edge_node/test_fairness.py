"""A member that floods its own edge node (issue 30): its frames queue in a lane of their own, served
round robin with the other devices'; it may open only so many streams and keep only so many frames
in the node's pipeline; and a message bigger than any frame the edge would take, or one that
inflates past it, is refused by gRPC by name before it is buffered."""

from __future__ import annotations

import asyncio
import gzip
import threading
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from harness import Tiers, frame_for, start_tiers, stop_tiers

from ecd import zoo
from ecd.limits import frame_receive_cap
from ecd.manifest import load_heldout
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.fair import CLAIM_S, DeviceQuotas, FairQueue, StreamQuotaError
from edge_node.service import EdgeConfig

M = zoo.load_manifest("digits_cnn")
X = M.input.preprocess(load_heldout(M).images[:4])


# --- the parts ----------------------------------------------------------------------------------


def test_the_queue_serves_devices_round_robin_not_in_arrival_order() -> None:
    async def go() -> list[str]:
        q: FairQueue[str] = FairQueue(max_size=100)
        for i in range(5):
            await q.put("flood", f"flood-{i}")
        await q.put("quiet", "quiet-0")
        await q.put("other", "other-0")
        return [await q.get() for _ in range(7)]

    assert asyncio.run(go()) == ["flood-0", "quiet-0", "other-0", "flood-1", "flood-2", "flood-3", "flood-4"]


def test_a_full_queue_waits_for_a_flooding_device_but_takes_one_frame_of_a_device_with_none_queued() -> None:
    async def go() -> None:
        q: FairQueue[int] = FairQueue(max_size=3)
        for i in range(3):
            await q.put("flood", i)
        blocked = asyncio.create_task(q.put("flood", 3))
        await asyncio.sleep(0)
        assert not blocked.done() and q.full()  # the flood waits for room
        await asyncio.wait_for(q.put("quiet", 0), timeout=1)  # another device is not locked out
        second = asyncio.create_task(q.put("quiet", 1))
        await asyncio.sleep(0)
        assert not second.done() and q.qsize() == 4  # bounded: max_size plus one per device
        assert await q.get() == 0 and await q.get() == 0  # flood's first, then quiet's
        await asyncio.wait_for(asyncio.gather(blocked, second), timeout=1)  # room again: both go in
        assert q.qsize() == 4

    asyncio.run(go())


def test_a_device_may_open_so_many_streams_and_a_stream_that_ends_gives_its_place_back() -> None:
    quotas = DeviceQuotas(max_streams=2, max_frames=8)
    slots = quotas.admit("d")
    assert quotas.admit("d") is slots and quotas.streams("d") == 2
    with pytest.raises(StreamQuotaError, match=r"^device_id: device d already has 2 streams open on this edge node \(at most 2 per device\)$"):
        quotas.admit("d")
    quotas.admit("e")  # another device has its own quota
    quotas.leave("d")
    quotas.admit("d")
    with pytest.raises(ValueError):
        DeviceQuotas(max_streams=0, max_frames=1)


@pytest.mark.parametrize("option", ["max_device_streams", "max_device_frames"])
def test_a_quota_below_one_is_a_config_error_naming_the_option(option: str) -> None:
    from ecd.errors import ConfigError
    from edge_node.service import start_edge

    with pytest.raises(ConfigError, match=rf"^{option}: expected at least 1, got 0$"):
        asyncio.run(start_edge(replace(EdgeConfig(), **{option: 0})))


# --- a real edge node ---------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path):
    """Tiers whose edge takes at most 2 streams per device and tensors of at most 64 KiB."""
    t = start_tiers(tmp_path, edge_cfg=replace(EdgeConfig(), max_device_streams=2, max_tensor_bytes=64 * 1024))
    yield t
    stop_tiers(t)


def open_stream(t: Tiers, a: pb.Assignment, frame_id: int):
    """A stream that sent one frame and stays open until its gate is set; the call, the gate, the first answer."""
    gate = threading.Event()

    def frames():
        yield frame_for(a, M, X[:1], frame_id)
        gate.wait(60)

    call = t.edge_stub.Stream(frames(), timeout=60)
    first = next(call)
    return call, gate, first


def test_a_device_opening_one_stream_too_many_is_refused_by_name_and_others_stream_on(small: Tiers) -> None:
    a = small.register(split=2)
    open_streams = [open_stream(small, a, i + 1) for i in range(2)]
    assert all(s[2].frame_id == i + 1 and not s[2].HasField("error") for i, s in enumerate(open_streams))
    with pytest.raises(grpc.RpcError) as refused:
        list(small.edge_stub.Stream(iter([frame_for(a, M, X[:1], 9)]), timeout=30))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == f"device_id: device {a.device_id} already has 2 streams open on this edge node (at most 2 per device)"
    other = small.register(split=2, name="other")
    assert [r.frame_id for r in small.edge_stub.Stream(iter([frame_for(other, M, X[:1], 1)]), timeout=30)] == [1]
    for call, gate, _ in open_streams:  # ends both: the device may open streams again
        gate.set()
        list(call)
    assert [r.frame_id for r in small.edge_stub.Stream(iter([frame_for(a, M, X[:1], 10)]), timeout=30)] == [10]


def test_streams_naming_a_device_with_a_wrong_token_do_not_use_up_its_quota(small: Tiers) -> None:
    a = small.register(split=2)
    for i in range(3):
        forged = frame_for(a, M, X[:1], 100 + i)
        forged.token = "forged"
        [r] = small.edge_stub.Stream(iter([forged]), timeout=30)
        assert r.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    held = [open_stream(small, a, i + 1) for i in range(2)]  # the device's own two streams still open
    assert all(not s[2].HasField("error") for s in held)
    for call, gate, _ in held:
        gate.set()
        list(call)


def test_a_message_bigger_than_any_frame_the_edge_takes_or_inflating_past_it_is_refused_by_grpc(small: Tiers) -> None:
    a = small.register(split=0)
    cap = frame_receive_cap(64 * 1024)
    big = frame_for(a, M, X[:1], 1)
    big.tensor.data = bytes(cap)  # over the cap by its other fields
    options = [("grpc.max_send_message_length", 2**30)]
    with grpc.insecure_channel(f"127.0.0.1:{small.edge.port}", options=options) as ch:
        stub = pb_grpc.EdgeNodeStub(ch)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Stream(iter([big]), timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"vs. {cap})" in refused.value.details()
        bomb = frame_for(a, M, X[:1], 2)
        bomb.tensor.data = bytes(40 * cap)  # zeros: about 1/1000 of that on the wire once gzipped
        assert len(gzip.compress(bomb.SerializeToString())) < cap
        with pytest.raises(grpc.RpcError) as inflated:
            list(stub.Stream(iter([bomb]), timeout=30, compression=grpc.Compression.Gzip))
        assert inflated.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Decompressed message larger than max" in inflated.value.details()
        ok = frame_for(a, M, X[:1], 3)  # and the edge serves on
        assert [r.frame_id for r in stub.Stream(iter([ok]), timeout=30)] == [3]


def test_frames_in_the_node_are_shared_max_min_fairly_and_a_device_alone_takes_its_whole_quota() -> None:
    """A flooder alone may fill its quota; once another device holds frames, the flooder takes a
    new one only while it holds no more than that device (it drains down to it), so the round-robin
    queue serves the two alike. The device holding fewest frames is never held back."""

    async def go() -> None:
        now = [0.0]
        quotas = DeviceQuotas(max_streams=2, max_frames=16, now=lambda: now[0])
        flood, quiet = quotas.admit("flood"), quotas.admit("quiet")
        for _ in range(16):
            await asyncio.wait_for(flood.acquire(), 1)  # alone: the whole quota
        assert flood.locked() and not quiet.locked()
        for _ in range(3):
            await asyncio.wait_for(quiet.acquire(), 1)  # fewest frames: never held back
        for _ in range(13):
            flood.release()
        assert flood.held == 3 and not flood.locked()
        await asyncio.wait_for(flood.acquire(), 1)  # 3 <= 3: one more
        assert flood.locked()  # 4 > 3
        waiting = asyncio.create_task(flood.acquire())
        await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.wait_for(quiet.acquire(), 1)  # quiet holds 4: the flooder may match it
        await asyncio.wait_for(waiting, 1)
        assert (flood.held, quiet.held) == (5, 4)
        for _ in range(4):
            quiet.release()
        quotas.leave("quiet")
        now[0] += 10 * CLAIM_S  # its claim faded (test_fair_cost.py: while it fades): alone again, up to the quota
        for _ in range(11):
            await asyncio.wait_for(flood.acquire(), 1)
        assert flood.held == 16 and flood.locked()

    asyncio.run(go())
