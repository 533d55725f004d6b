"""The edge node's core: runs blocks [split.device, split.edge) for many device streams and relays
to the cloud. Transport-free: it sees :mod:`ecd.types` records and reaches the cloud through a
:class:`CloudClient` that the gRPC face (``edge_node.service``) implements.

* Each device stream is read by its own task; a frame is validated (token, model version, split and
  floor, tensor encoding/shape/bytes) *before* its payload is touched, run through the edge's
  blocks, and queued for the cloud. A refused frame gets an error Result at once; the stream and the
  other devices go on.
* One long-lived stream carries every device's frames to the cloud. The queue to it is bounded
  and fair — one lane per device, served round robin — and each device has quotas of streams and
  of frames in the node (:mod:`edge_node.fair`): when the cloud is slow, or a device floods, ``put``
  or the quota waits, that device's stream stops being read, and flow control slows the sender.
  Nothing is dropped.
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
from ecd.batching import BatchingConfig, DynamicBatcher
from ecd.partition import BlockRunner
from ecd.split import check_split
from ecd.errors import PreconditionError, RequestError, UnavailableError
from edge_node.fair import DeviceQuotas, FairQueue, StreamQuotaError
from ecd.types import (Assignment, Encoding, Enrolment, FileChunk, Frame, FrameError, PartitionRequest, PreferencesUpdate, Result, Split,
                       StreamHeader)

log = logging.getLogger("ecd.edge")

_END = object()


@dataclass(frozen=True)
class _Refused:
    """A whole stream refused (the device's stream quota): the stream ends with this error."""

    error: Exception


class CloudClient(Protocol):
    """What the edge asks of the cloud. Errors are :mod:`ecd.errors` exceptions (an unknown token
    :class:`~ecd.errors.AuthenticationError`, a cloud out of reach
    :class:`~ecd.errors.UnavailableError`)."""

    async def get_assignment(self, device_id: str, token: str, holder: str = "") -> Assignment: ...

    def fetch_partition(self, request: PartitionRequest) -> AsyncIterable[FileChunk]: ...

    async def enrol_device(self, request: Enrolment) -> Assignment: ...

    async def update_preferences(self, request: PreferencesUpdate) -> Assignment: ...


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
    device_slots: asyncio.Semaphore | None = None  # the device's frames in flight on this node (edge_node.fair)

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
            self.out.put_nowait(_END)


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
        while True:
            frame = await self.queue.get()
            self.metrics.queue_depth.labels("edge").set(self.queue.qsize())
            key = (frame.device_id, frame.frame_id)
            if key in self.pending and key not in self.written:
                self.written.add(key)
                return frame

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


class EdgeCore:
    def __init__(
        self,
        cloud: CloudClient,
        model_dir: Path,
        max_queue: int,
        max_tensor_bytes: int,
        metrics: ServiceMetrics,
        max_message_bytes: int,
        max_batch: int = codec.MAX_BATCH,
        max_stream_frames: int = 64,
        batching: BatchingConfig | None = None,
        quotas: DeviceQuotas | None = None,
    ):
        self.cloud = cloud
        self.model_dir = Path(model_dir)
        self.max_tensor_bytes = max_tensor_bytes
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.max_stream_frames = max_stream_frames
        self.metrics = metrics
        self.link = CloudLink(max_queue, metrics)
        self.quotas = quotas or DeviceQuotas(max_streams=2, max_frames=16)
        self._models: dict[tuple[str, str], tuple[Manifest, BlockRunner]] = {}
        self.batching = batching or BatchingConfig()
        self.batching.check()
        self._batchers: dict[tuple[str, str], DynamicBatcher] = {}  # frames of every device stream, per model
        self._assignments: dict[str, tuple[str, Assignment]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._readers: set[asyncio.Task] = set()
        self.sessions: set[DeviceSession] = set()
        self.draining = False
        self.frames_seen = 0
        self.edge_id = ""  # set once the cloud has registered this node; stamped on every result

    async def assignment(self, device_id: str, token: str, split_device: int, holder: str = "") -> Assignment:
        """The device's assignment, checked by the cloud for this token over this certificate
        (``holder``: the name on the device's certificate on its stream, "" in plaintext)."""
        cached = self._assignments.get(device_id)
        if cached and cached[0] == (token, holder) and cached[1].split.device == split_device:
            return cached[1]
        a = await self.cloud.get_assignment(device_id, token, holder)
        self._assignments[device_id] = ((token, holder), a)
        return a

    def forget(self, device_ids) -> None:
        """Drop what is cached of these devices (their tokens were revoked): their next frame is
        checked with the cloud again."""
        for device_id in device_ids:
            self._assignments.pop(device_id, None)

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
                runner = BlockRunner(manifest)
                self._batchers[key] = DynamicBatcher(runner.run, self.batching)
                self._models[key] = (manifest, runner)
                log.info("[EdgeNode] fetched %s@%s (%d blocks)", model_id, version, manifest.n_blocks)
        return self._models[key]

    async def prepare(self, frame: Frame, holder: str = "") -> Frame:
        """Validate a device's frame, run the edge's blocks, and return the frame for the cloud."""
        a = await self.assignment(frame.device_id, frame.token, frame.split.device, holder)
        if frame.model_id != a.model_id:
            raise PreconditionError(f"model_id: device {frame.device_id} is registered for {a.model_id!r}, got {frame.model_id!r}")
        if frame.model_version != a.model_version:
            raise PreconditionError(f"model_version: expected {a.model_version!r} for {a.model_id}, got {frame.model_version!r}")
        manifest, runner = await self.model(a.model_id, a.model_version)
        device_split = frame.split.device
        check_split(manifest, device_split, a.preferences.min_split)
        x = codec.decode_at(frame.tensor, manifest, device_split, self.max_tensor_bytes, max_batch=self.max_batch)
        split = Split(device_split, max(a.split.edge, device_split))
        forwarded = dataclasses.replace(frame, split=split, uplink_bytes=frame.wire_bytes)
        if split.edge > split.device:
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            batcher = self._batchers[(a.model_id, a.model_version)]
            y = await loop.run_in_executor(None, batcher.run, x, split.device, split.edge)
            forwarded.edge_compute_s = time.perf_counter() - t0
            # an activation goes on in the device's encoding; past a raw UINT8 image, in the one it registered
            encoding = frame.tensor.encoding
            if encoding is Encoding.UINT8:
                encoding = a.encoding if a.encoding in Encoding.for_activations() else Encoding.FLOAT32
            forwarded.tensor = codec.encode(np.asarray(y), encoding)
            self.metrics.stage_seconds.labels("edge", "edge_compute").observe(forwarded.edge_compute_s)
        return forwarded

    async def serve_device(self, frames: AsyncIterable[Frame], holder: str = "") -> AsyncIterator[Result]:
        """The device stream: yields one Result per frame taken from it, errors included.

        While the node drains (:meth:`drain`), no more frames are taken; once the ones taken are
        answered the stream ends with :class:`~ecd.errors.UnavailableError`, so the device resends
        what it still has outstanding to the edge node its assignment names next."""
        if self.draining:
            raise UnavailableError("edge: this edge node is shutting down; ask the cloud for your assignment")
        session = DeviceSession(asyncio.Queue(), asyncio.Semaphore(self.max_stream_frames))

        admitted = ""  # the device this stream counts against, once a frame of it passed the token check

        async def read() -> None:
            nonlocal admitted
            header: StreamHeader | None = None  # bound by the stream's first frame (compact frames)
            try:
                async for frame in frames:
                    await session.slots.acquire()  # released once its result is handed back
                    self.frames_seen += 1
                    self.metrics.hop_bytes.labels("edge", "device_to_edge").inc(frame.wire_bytes)
                    slot = False
                    try:
                        if header is None:
                            header = StreamHeader.of(frame)
                        complete = header.complete(frame)
                        if not admitted:
                            await self.assignment(complete.device_id, complete.token, complete.split.device, holder)
                            session.device_slots = self.quotas.admit(complete.device_id)  # StreamQuotaError ends the stream
                            admitted = complete.device_id
                        await session.device_slots.acquire()  # the device's quota: its other streams count too
                        slot = True
                        forwarded = await self.prepare(complete, holder)
                        await self.link.submit(forwarded, session)
                        slot = False  # the pipeline holds it now: freed when the frame is answered or handed over
                    except asyncio.CancelledError:
                        if slot:
                            session.free_device_slot()
                        raise
                    except StreamQuotaError as e:  # the device's streams: this one is refused whole
                        session.out.put_nowait(_Refused(e))
                        return
                    except Exception as e:  # noqa: BLE001 — every frame gets a result
                        if slot:
                            session.free_device_slot()
                        session.out.put_nowait(Result.refused(frame, FrameError.from_exception(e)))
            finally:
                session.reading_done = True
                session.maybe_finish()

        reader = asyncio.create_task(read())
        self._readers.add(reader)
        self.sessions.add(session)
        try:
            while (item := await session.out.get()) is not _END:
                if isinstance(item, _Refused):
                    raise item.error
                self.metrics.frame(item.ok, None if item.ok else item.error.status)
                item.edge_id = self.edge_id
                yield item
                session.slots.release()
            if self.draining:
                raise UnavailableError("edge: this edge node is shutting down; ask the cloud for your assignment and resend")
        finally:
            session.closed = True
            reader.cancel()
            self._readers.discard(reader)
            self.sessions.discard(session)
            if admitted:
                self.quotas.leave(admitted)

    async def drain(self, timeout_s: float) -> int:
        """Stop taking frames from every device stream, and wait (up to ``timeout_s``) until each
        frame taken has been answered and handed back. Returns the streams still open."""
        self.draining = True
        for reader in list(self._readers):
            reader.cancel()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return len(self.sessions)
