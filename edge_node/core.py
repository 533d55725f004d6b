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
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterable, AsyncIterator, Protocol

import numpy as np

from ecd import codec, distribution
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.batching import BatchingConfig, DynamicBatcher, run_rows
from ecd.partition import BlockRunner, SessionConfig
from ecd.split import check_split
from ecd.errors import EcdError, PreconditionError, RequestError, UnavailableError
from ecd.limits import MAX_NAME_CHARS, printable
from edge_node.fair import ComputeCosts, DeviceQuotas, Meter, StreamQuotaError
from edge_node.link import END, CloudLink, DeviceSession
from ecd.types import (Assignment, Encoding, Enrolment, FileChunk, Frame, FrameError, PartitionRequest, PreferencesUpdate, Result, Split,
                       StreamHeader)

log = logging.getLogger("ecd.edge")

MAX_RESULTS_PER_MESSAGE = 256  # results handed back together (those ready at once)
MESSAGES_IN_HAND = 2  # a stream's messages run through the edge's blocks at once: the next is read while one computes


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
        session_config: SessionConfig | None = None,
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
        self.compute = ComputeCosts()  # what the edge's blocks cost per row, charged to the frames' devices
        self._models: dict[tuple[str, str], tuple[Manifest, BlockRunner]] = {}
        self.session_config = session_config or SessionConfig()  # onnxruntime's settings for every model's blocks
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
        for name, value in (("model_id", model_id), ("model_version", version)):  # each becomes a folder name here
            if value in ("", ".", "..") or "/" in value or "\\" in value or len(value) > MAX_NAME_CHARS:
                raise RequestError(f"{name}: not a model this node can fetch: {printable(value)!r}")
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                if key not in self._models:
                    dest = self.model_dir / model_id / version
                    head = await distribution.fetch_async(
                        self.cloud.fetch_partition(distribution.request(model_id, version, 0, 0, self.max_message_bytes)), dest
                    )
                    manifest = await distribution.fetch_async(
                        self.cloud.fetch_partition(distribution.request(model_id, version, 0, head.n_blocks, self.max_message_bytes)), dest
                    )
                    runner = BlockRunner(manifest, self.session_config)
                    self._batchers[key] = DynamicBatcher(self.compute.timed(key, runner.run), self.batching)
                    self._models[key] = (manifest, runner)
                    log.info("[EdgeNode] fetched %s@%s (%d blocks)", model_id, version, manifest.n_blocks)
        finally:
            if key not in self._models:  # a model the cloud refused keeps no lock: names asked for are not remembered
                self._locks.pop(key, None)
        return self._models[key]

    async def prepare(self, frame: Frame, holder: str = "") -> Frame:
        """Validate a device's frame, run the edge's blocks, and return the frame for the cloud."""
        (out,) = await self.prepare_many([frame], holder)
        if isinstance(out, Exception):
            raise out
        return out

    async def prepare_many(self, frames: list[Frame], holder: str = "", meter: Meter | None = None) -> list[Frame | Exception]:
        """Validate each frame of a message and run the edge's blocks on them as one call: each
        frame's forwarded frame, or its own error (one bad frame never fails its message-mates).
        What the blocks cost (:class:`~edge_node.fair.ComputeCosts`) is charged to ``meter``."""
        out: list[Frame | Exception | None] = [None] * len(frames)
        runs: dict[tuple, list[tuple[int, Frame, Assignment, np.ndarray]]] = {}
        for i, frame in enumerate(frames):
            try:
                a = await self.assignment(frame.device_id, frame.token, frame.split.device, holder)
                if frame.model_id != a.model_id:
                    raise PreconditionError(f"model_id: device {frame.device_id} is registered for {a.model_id!r}, got {frame.model_id!r}")
                if frame.model_version != a.model_version:
                    raise PreconditionError(f"model_version: expected {a.model_version!r} for {a.model_id}, got {frame.model_version!r}")
                manifest, _ = await self.model(a.model_id, a.model_version)
                device_split = frame.split.device
                check_split(manifest, device_split, a.preferences.min_split)
                x = codec.decode_at(frame.tensor, manifest, device_split, self.max_tensor_bytes, max_batch=self.max_batch)
                split = Split(device_split, max(a.split.edge, device_split))
                forwarded = dataclasses.replace(frame, split=split, uplink_bytes=frame.wire_bytes)
            except Exception as e:  # noqa: BLE001 — that frame's own error
                out[i] = e
                continue
            if split.edge > split.device:
                runs.setdefault((a.model_id, a.model_version, split.device, split.edge), []).append((i, forwarded, a, x))
            else:
                out[i] = forwarded
        loop = asyncio.get_running_loop()
        for (model_id, version, start, stop), group in runs.items():
            batcher = self._batchers[(model_id, version)]
            t0 = time.perf_counter()
            ys = await loop.run_in_executor(None, run_rows, batcher.run, [x for _, _, _, x in group], start, stop)
            compute_s = time.perf_counter() - t0
            if meter is not None:
                meter.add(self.compute.of((model_id, version), start, stop, sum(len(x) for _, _, _, x in group)))
            for (i, forwarded, a, _), y in zip(group, ys):
                if isinstance(y, Exception):
                    out[i] = y
                    continue
                forwarded.edge_compute_s = compute_s
                # an activation goes on in the device's encoding; past a raw UINT8 image, in the one it registered
                encoding = forwarded.tensor.encoding
                if encoding is Encoding.UINT8:
                    encoding = a.encoding if a.encoding in Encoding.for_activations() else Encoding.FLOAT32
                try:
                    forwarded.tensor = codec.encode(np.asarray(y), encoding)
                except Exception as e:  # noqa: BLE001 — that frame's own error
                    out[i] = e
                    continue
                self.metrics.stage_seconds.labels("edge", "edge_compute").observe(compute_s)
                out[i] = forwarded
        return out  # type: ignore[return-value]

    async def serve_device(self, frames: AsyncIterable[Frame], holder: str = "") -> AsyncIterator[Result]:
        """A device stream of one frame per message (the one-frame Stream call): :meth:`serve_messages`."""

        async def messages() -> AsyncIterator[list[Frame]]:
            async for frame in frames:
                yield [frame]

        async for results in self.serve_messages(messages(), holder):
            for result in results:
                yield result

    async def serve_messages(self, messages: AsyncIterable[list[Frame]], holder: str = "",
                             meter: Meter | None = None) -> AsyncIterator[list[Result]]:
        """A device stream, a message of frames at a time: yields the results ready together, one
        Result per frame taken, errors included. The frames of a message are checked one by one and
        run through the edge's blocks together (:meth:`prepare_many`); while they run, the stream's
        next message is read and checked and its frames queued for the blocks (at most
        ``MESSAGES_IN_HAND`` messages of a stream at once), so one busy device keeps the edge's
        blocks fed instead of leaving them idle between its messages.

        The stream's reading is metered by ``meter`` (the caller meters the task that writes the
        results with the same one), charged to the device once its first frame passed the token
        check: what the device's frames cost weighs its share (:mod:`edge_node.fair`).

        While the node drains (:meth:`drain`), no more frames are taken; once the ones taken are
        answered the stream ends with :class:`~ecd.errors.UnavailableError`, so the device resends
        what it still has outstanding to the edge node its assignment names next."""
        if self.draining:
            raise UnavailableError("edge: this edge node is shutting down; ask the cloud for your assignment")
        session = DeviceSession(asyncio.Queue(), asyncio.Semaphore(self.max_stream_frames))
        admitted = ""  # the device this stream counts against, once a frame of it passed the token check
        held = 0  # device slots taken by frames read and not yet handed to the pipeline

        async def hand_over(frames: list[Frame], before: asyncio.Task | None) -> None:
            """Run the edge's blocks on frames read together and queue them for the cloud once the
            stream's message ``before`` them is queued: messages compute side by side, but reach
            the cloud in the order the device sent them (a frame refused as it is read, for its
            token or its quota, is answered at once, ahead of earlier frames still computing)."""
            nonlocal held
            try:
                outs: list[Frame | Exception] = await self.prepare_many(frames, holder, meter)
            except Exception as e:  # noqa: BLE001 — a fault in the call answers its frames (logged), never strands them
                outs = [e] * len(frames)
            if before is not None:
                await asyncio.wait({before})  # neither raises its error nor takes its cancellation for ours
            for frame, out in zip(frames, outs):
                try:
                    if isinstance(out, Exception):
                        raise out
                    await self.link.submit(out, session)
                    held -= 1  # the pipeline holds it now: freed when the frame is answered or handed over
                except Exception as e:  # noqa: BLE001 — every frame gets a result
                    held -= 1
                    session.free_device_slot()
                    session.out.put_nowait(Result.refused(frame, FrameError.from_exception(e)))

        in_hand: set[asyncio.Task] = set()  # hand-overs running: at most MESSAGES_IN_HAND
        last: asyncio.Task | None = None  # the hand-over started last: the next one queues its frames after it

        async def start_hand_over(frames: list[Frame]) -> None:
            """Hand ``frames`` over in a task of their own, so the stream's next message is read and
            checked while these compute (and the batcher has it queued the moment they are done)."""
            nonlocal last
            while len(in_hand) >= MESSAGES_IN_HAND:
                await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
            last = asyncio.create_task(meter.run(hand_over(frames, last if last in in_hand else None)))
            in_hand.add(last)
            last.add_done_callback(in_hand.discard)

        async def take() -> None:
            nonlocal admitted, held
            header: StreamHeader | None = None  # bound by the stream's first frame (compact frames)
            try:
                async for message in messages:
                    ready: list[Frame] = []  # read, checked, holding a device slot
                    for frame in message:
                        if ready and (session.slots.locked() or (session.device_slots is not None and session.device_slots.locked())):
                            await start_hand_over(ready)  # room comes only from frames already read: send them on first
                            ready = []
                        await session.slots.acquire()  # released once its result is handed back
                        self.frames_seen += 1
                        self.metrics.hop_bytes.labels("edge", "device_to_edge").inc(frame.wire_bytes)
                        try:
                            if header is None:
                                header = StreamHeader.of(frame)
                            complete = header.complete(frame)
                            if not admitted:
                                await self.assignment(complete.device_id, complete.token, complete.split.device, holder)
                                session.device_slots = self.quotas.admit(complete.device_id)  # StreamQuotaError ends the stream
                                admitted = complete.device_id
                                meter.bind(session.device_slots)
                            await session.device_slots.acquire()  # the device's quota: its other streams count too
                            held += 1
                            ready.append(complete)
                        except StreamQuotaError as e:  # the device's streams: this one is refused whole
                            session.out.put_nowait(_Refused(e))
                            return
                        except Exception as e:  # noqa: BLE001 — every frame gets a result
                            session.out.put_nowait(Result.refused(frame, FrameError.from_exception(e)))
                    if ready:
                        await start_hand_over(ready)
            except EcdError as e:  # from the stream itself (a message over the limits): refused whole
                session.out.put_nowait(_Refused(e))

        async def read() -> None:
            nonlocal held
            try:
                await take()
                while in_hand:  # every frame taken is queued for the cloud (or answered) before the reading ends
                    await asyncio.wait(in_hand)
            except asyncio.CancelledError:
                for task in in_hand:
                    task.cancel()
                try:
                    await asyncio.gather(*in_hand, return_exceptions=True)
                finally:  # cancelled again while they wind down (a drain, then the stream's end): still give every slot back
                    for _ in range(held):
                        session.free_device_slot()
                    held = 0
                raise
            finally:
                session.reading_done = True
                session.maybe_finish()

        meter = meter or Meter(self.quotas.clock)
        reader = asyncio.create_task(meter.run(read()))
        self._readers.add(reader)
        self.sessions.add(session)
        try:
            ended = False
            while not ended:
                items = [await session.out.get()]
                while len(items) < MAX_RESULTS_PER_MESSAGE and not session.out.empty():
                    items.append(session.out.get_nowait())
                results: list[Result] = []
                for item in items:
                    if item is END:
                        ended = True
                        break
                    if isinstance(item, _Refused):
                        if results:
                            yield results
                        raise item.error
                    self.metrics.frame(item.ok, None if item.ok else item.error.status)
                    item.edge_id = self.edge_id
                    results.append(item)
                if results:
                    yield results
                    for _ in results:
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
