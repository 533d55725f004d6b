"""The edge node: runs blocks [b_d, b_e) for many device streams and relays to the cloud.

* Each device stream is read by its own task; a frame is validated (token, model version, split and
  floor, tensor encoding/shape/bytes) *before* its payload is touched, run through the edge's
  blocks, and queued for the cloud. A refused frame gets an error Result at once; the stream and the
  other devices go on.
* One long-lived stream carries every device's frames to the cloud. The queue to it is bounded:
  when the cloud is slow, ``put`` waits, the device stream stops being read, and gRPC flow control
  slows the senders. Nothing is dropped.
* Results are routed back by (device id, frame id); a frame in flight is answered once (a resent
  duplicate is ignored), and after a broken cloud stream every unanswered frame is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from ecd import codec, distribution
from ecd.manifest import Manifest
from ecd.partition import BlockRunner
from ecd.transport.catalog import StatusError, status_code, to_status
from ecd.v1 import ecd_pb2 as pb
from ecd.metrics import ServiceMetrics
from ecd.v1 import ecd_pb2_grpc as pb_grpc

log = logging.getLogger("ecd.edge")

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
_END = object()


def error_result(frame: pb.Frame, code: grpc.StatusCode, message: str) -> pb.Result:
    r = pb.Result(device_id=frame.device_id, frame_id=frame.frame_id, split_device=frame.split_device)
    r.error.code = code.value[0]
    r.error.message = message
    return r


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
    """The one stream to the cloud, with at-least-once delivery and exactly-once routing."""

    stub: pb_grpc.CloudServerStub
    max_queue: int
    metrics: ServiceMetrics
    queue: asyncio.Queue = field(init=False)
    pending: dict = field(default_factory=dict)  # (device_id, frame_id) -> (session, frame)
    reconnect_backoff_s: float = 0.2

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)

    async def submit(self, frame: pb.Frame, session: DeviceSession) -> bool:
        """Queue ``frame`` for the cloud (waits while the queue is full). False for a duplicate."""
        key = (frame.device_id, frame.frame_id)
        if key in self.pending:
            return False
        self.pending[key] = (session, frame)
        session.in_flight += 1
        await self.queue.put(frame)
        self.metrics.queue_depth.labels("edge").set(self.queue.qsize())
        return True

    async def run(self) -> None:
        while True:
            call = self.stub.Stream()
            writer = asyncio.create_task(self._write(call))
            try:
                async for result in call:
                    self._route(result)
            except grpc.aio.AioRpcError as e:
                log.warning("[EdgeNode.CloudLink] cloud stream broke (%s); resending %d frames", e.code().name, len(self.pending))
            finally:
                writer.cancel()
            await asyncio.sleep(self.reconnect_backoff_s)
            self.reconnect_backoff_s = min(self.reconnect_backoff_s * 2, 5.0)
            while not self.queue.empty():
                self.queue.get_nowait()
            for _, frame in list(self.pending.values()):
                await self.queue.put(frame)

    async def _write(self, call) -> None:
        while True:
            frame = await self.queue.get()
            self.metrics.queue_depth.labels("edge").set(self.queue.qsize())
            await call.write(frame)
            self.metrics.hop_bytes.labels("edge", "edge_to_cloud").inc(frame.ByteSize())

    def _route(self, result: pb.Result) -> None:
        entry = self.pending.pop((result.device_id, result.frame_id), None)
        if entry is None:
            return  # a duplicate answer to a resent frame
        self.reconnect_backoff_s = 0.2
        session, _ = entry
        session.out.put_nowait(result)
        session.answered()


class EdgeCore:
    def __init__(
        self,
        cloud: pb_grpc.CloudServerStub,
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
        self.link = CloudLink(cloud, max_queue, metrics)
        self._models: dict[tuple[str, str], tuple[Manifest, BlockRunner]] = {}
        self._assignments: dict[str, tuple[str, pb.Assignment]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.frames_seen = 0

    async def assignment(self, device_id: str, token: str, split_device: int) -> pb.Assignment:
        cached = self._assignments.get(device_id)
        if cached and cached[0] == token and cached[1].split_device == split_device:
            return cached[1]
        try:
            a = await self.cloud.GetAssignment(pb.GetAssignmentRequest(device_id=device_id, token=token))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise StatusError(grpc.StatusCode.UNAUTHENTICATED, e.details()) from None
            raise StatusError(grpc.StatusCode.UNAVAILABLE, f"cloud: cannot check the device's assignment ({e.code().name})") from None
        self._assignments[device_id] = (token, a)
        return a

    async def model(self, model_id: str, version: str) -> tuple[Manifest, BlockRunner]:
        key = (model_id, version)
        if key in self._models:
            return self._models[key]
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key not in self._models:
                dest = self.model_dir / model_id / version
                try:
                    head = await distribution.fetch_async(
                        self.cloud.FetchPartition(distribution.request(model_id, version, 0, 0, self.max_message_bytes)), dest
                    )
                    chunks = self.cloud.FetchPartition(distribution.request(model_id, version, 0, head.n_blocks, self.max_message_bytes))
                    manifest = await distribution.fetch_async(chunks, dest)
                except grpc.aio.AioRpcError as e:
                    raise StatusError(
                        grpc.StatusCode.UNAVAILABLE, f"model: cannot fetch {model_id}@{version} from the cloud ({e.code().name}: {e.details()})"
                    ) from None
                self._models[key] = (manifest, BlockRunner(manifest))
                log.info("[EdgeNode] fetched %s@%s (%d blocks)", model_id, version, manifest.n_blocks)
        return self._models[key]

    async def prepare(self, frame: pb.Frame) -> pb.Frame:
        """Validate a device's frame, run the edge's blocks, and return the frame for the cloud."""
        a = await self.assignment(frame.device_id, frame.token, frame.split_device)
        if frame.model_id != a.model_id:
            raise StatusError(PRECONDITION, f"model_id: device {frame.device_id} is registered for {a.model_id!r}, got {frame.model_id!r}")
        if frame.model_version != a.model_version:
            raise StatusError(PRECONDITION, f"model_version: expected {a.model_version!r} for {a.model_id}, got {frame.model_version!r}")
        manifest, runner = await self.model(a.model_id, a.model_version)
        n = manifest.n_blocks
        b_d = frame.split_device
        if not 0 <= b_d <= n:
            raise StatusError(INVALID, f"split_device: expected 0..{n} for {manifest.model_id}, got {b_d}")
        if b_d < a.preferences.min_split:
            raise StatusError(PRECONDITION, f"split_device: {b_d} is below the device's floor (min_split {a.preferences.min_split})")
        x = codec.decode(frame.tensor, manifest.activation_shape(b_d), self.max_tensor_bytes)
        b_e = max(a.split_edge, b_d)
        forwarded = pb.Frame()
        forwarded.CopyFrom(frame)
        forwarded.split_edge = b_e
        forwarded.uplink_bytes = frame.ByteSize()
        if b_e > b_d:
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            y = await loop.run_in_executor(None, runner.run, x, b_d, b_e)
            forwarded.edge_compute_s = time.perf_counter() - t0
            forwarded.tensor.CopyFrom(codec.encode(np.asarray(y), frame.tensor.encoding))
            self.metrics.stage_seconds.labels("edge", "edge_compute").observe(forwarded.edge_compute_s)
        return forwarded

    async def serve_device(self, frames, context=None):
        """The device stream: yields one Result per frame received, errors included."""
        session = DeviceSession(asyncio.Queue())

        async def read() -> None:
            try:
                async for frame in frames:
                    self.frames_seen += 1
                    self.metrics.hop_bytes.labels("edge", "device_to_edge").inc(frame.ByteSize())
                    try:
                        forwarded = await self.prepare(frame)
                    except Exception as e:  # noqa: BLE001 — every frame gets a result
                        code, message = to_status(e)
                        session.out.put_nowait(error_result(frame, code, message))
                        continue
                    await self.link.submit(forwarded, session)
            finally:
                session.reading_done = True
                session.maybe_finish()

        reader = asyncio.create_task(read())
        try:
            while (item := await session.out.get()) is not _END:
                ok = not item.HasField("error")
                self.metrics.frame(ok, None if ok else status_code(item.error.code).name)
                yield item
        finally:
            reader.cancel()
