"""The edge node's core: runs blocks [split.device, split.edge) for many device streams and relays
to the cloud. Transport-free: it sees :mod:`ecd.types` records and reaches the cloud through a
:class:`CloudClient` that the gRPC face (``edge_node.service``) implements.

* Each device stream is read by its own task; a frame is validated (token, model version, split and
  floor, tensor encoding/shape/bytes) *before* its payload is touched, run through the edge's
  blocks, and queued for the cloud. A refused frame gets an error Result at once; the stream and the
  other devices go on.
* One long-lived stream carries every device's frames to the cloud. The queue to it is bounded:
  when the cloud is slow, ``put`` waits, the device stream stops being read, and flow control
  slows the senders. Nothing is dropped.
* Results are routed back by (device id, frame id); a frame in flight is answered once (a resent
  duplicate is ignored), and after a broken cloud stream every unanswered frame is sent again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterable, AsyncIterator, Protocol

import numpy as np

from ecd import codec, distribution
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.partition import BlockRunner
from ecd.split import check_split
from ecd.errors import PreconditionError
from ecd.types import Assignment, FileChunk, Frame, FrameError, PartitionRequest, Result, Split

log = logging.getLogger("ecd.edge")

_END = object()


class CloudClient(Protocol):
    """What the edge asks of the cloud. Errors are :mod:`ecd.errors` exceptions (an unknown token
    :class:`~ecd.errors.AuthenticationError`, a cloud out of reach
    :class:`~ecd.errors.UnavailableError`)."""

    async def get_assignment(self, device_id: str, token: str) -> Assignment: ...

    def fetch_partition(self, request: PartitionRequest) -> AsyncIterable[FileChunk]: ...


@dataclass
class DeviceSession:
    """One device stream: where its results go, and when it is finished."""

    out: asyncio.Queue
    in_flight: int = 0
    reading_done: bool = False

    def answered(self) -> None:
        self.in_flight -= 1
        self.maybe_finish()

    def maybe_finish(self) -> None:
        if self.reading_done and self.in_flight == 0:
            self.out.put_nowait(_END)


@dataclass
class CloudLink:
    """The frames bound for the cloud, with at-least-once delivery and exactly-once routing.

    The transport drains :attr:`queue` onto the cloud stream, hands every answer to :meth:`route`,
    and after a broken stream calls :meth:`requeue` to send every unanswered frame again.
    """

    max_queue: int
    metrics: ServiceMetrics
    queue: asyncio.Queue = field(init=False)
    pending: dict = field(default_factory=dict)  # (device_id, frame_id) -> (session, frame)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)

    async def submit(self, frame: Frame, session: DeviceSession) -> bool:
        """Queue ``frame`` for the cloud (waits while the queue is full). False for a duplicate."""
        key = (frame.device_id, frame.frame_id)
        if key in self.pending:
            return False
        self.pending[key] = (session, frame)
        session.in_flight += 1
        await self.queue.put(frame)
        self.metrics.queue_depth.labels("edge").set(self.queue.qsize())
        return True

    async def next_frame(self) -> Frame:
        frame = await self.queue.get()
        self.metrics.queue_depth.labels("edge").set(self.queue.qsize())
        return frame

    def route(self, result: Result) -> bool:
        """Hand the cloud's answer to its device stream; False for a duplicate answer."""
        entry = self.pending.pop((result.device_id, result.frame_id), None)
        if entry is None:
            return False  # a duplicate answer to a resent frame
        session, _ = entry
        session.out.put_nowait(result)
        session.answered()
        return True

    async def requeue(self) -> int:
        """After a broken cloud stream: empty the queue and queue every unanswered frame again."""
        while not self.queue.empty():
            self.queue.get_nowait()
        for _, frame in list(self.pending.values()):
            await self.queue.put(frame)
        return len(self.pending)


class EdgeCore:
    def __init__(
        self,
        cloud: CloudClient,
        model_dir: Path,
        max_queue: int,
        max_tensor_bytes: int,
        metrics: ServiceMetrics,
        max_message_bytes: int,
    ):
        self.cloud = cloud
        self.model_dir = Path(model_dir)
        self.max_tensor_bytes = max_tensor_bytes
        self.max_message_bytes = max_message_bytes
        self.metrics = metrics
        self.link = CloudLink(max_queue, metrics)
        self._models: dict[tuple[str, str], tuple[Manifest, BlockRunner]] = {}
        self._assignments: dict[str, tuple[str, Assignment]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.frames_seen = 0
        self.edge_id = ""  # set once the cloud has registered this node; stamped on every result

    async def assignment(self, device_id: str, token: str, split_device: int) -> Assignment:
        cached = self._assignments.get(device_id)
        if cached and cached[0] == token and cached[1].split.device == split_device:
            return cached[1]
        a = await self.cloud.get_assignment(device_id, token)
        self._assignments[device_id] = (token, a)
        return a

    async def model(self, model_id: str, version: str) -> tuple[Manifest, BlockRunner]:
        key = (model_id, version)
        if key in self._models:
            return self._models[key]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._models:
                dest = self.model_dir / model_id / version
                head = await distribution.fetch_async(
                    self.cloud.fetch_partition(distribution.request(model_id, version, 0, 0, self.max_message_bytes)), dest
                )
                manifest = await distribution.fetch_async(
                    self.cloud.fetch_partition(distribution.request(model_id, version, 0, head.n_blocks, self.max_message_bytes)), dest
                )
                self._models[key] = (manifest, BlockRunner(manifest))
                log.info("[EdgeNode] fetched %s@%s (%d blocks)", model_id, version, manifest.n_blocks)
        return self._models[key]

    async def prepare(self, frame: Frame) -> Frame:
        """Validate a device's frame, run the edge's blocks, and return the frame for the cloud."""
        a = await self.assignment(frame.device_id, frame.token, frame.split.device)
        if frame.model_id != a.model_id:
            raise PreconditionError(f"model_id: device {frame.device_id} is registered for {a.model_id!r}, got {frame.model_id!r}")
        if frame.model_version != a.model_version:
            raise PreconditionError(f"model_version: expected {a.model_version!r} for {a.model_id}, got {frame.model_version!r}")
        manifest, runner = await self.model(a.model_id, a.model_version)
        device_split = frame.split.device
        check_split(manifest, device_split, a.preferences.min_split)
        x = codec.decode(frame.tensor, manifest.activation_shape(device_split), self.max_tensor_bytes)
        split = Split(device_split, max(a.split.edge, device_split))
        forwarded = dataclasses.replace(frame, split=split, uplink_bytes=frame.wire_bytes)
        if split.edge > split.device:
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            y = await loop.run_in_executor(None, runner.run, x, split.device, split.edge)
            forwarded.edge_compute_s = time.perf_counter() - t0
            forwarded.tensor = codec.encode(np.asarray(y), frame.tensor.encoding)
            self.metrics.stage_seconds.labels("edge", "edge_compute").observe(forwarded.edge_compute_s)
        return forwarded

    async def serve_device(self, frames: AsyncIterable[Frame]) -> AsyncIterator[Result]:
        """The device stream: yields one Result per frame received, errors included."""
        session = DeviceSession(asyncio.Queue())

        async def read() -> None:
            try:
                async for frame in frames:
                    self.frames_seen += 1
                    self.metrics.hop_bytes.labels("edge", "device_to_edge").inc(frame.wire_bytes)
                    try:
                        forwarded = await self.prepare(frame)
                    except Exception as e:  # noqa: BLE001 — every frame gets a result
                        session.out.put_nowait(Result.refused(frame, FrameError.from_exception(e)))
                        continue
                    await self.link.submit(forwarded, session)
            finally:
                session.reading_done = True
                session.maybe_finish()

        reader = asyncio.create_task(read())
        try:
            while (item := await session.out.get()) is not _END:
                self.metrics.frame(item.ok, None if item.ok else item.error.status)
                item.edge_id = self.edge_id
                yield item
        finally:
            reader.cancel()
