"""Dynamic batching across device streams: frames that need the same block range are stacked into
one batch, run once, and split back to their callers — what Triton's dynamic batcher and
TorchServe's ``batch_size`` / ``max_batch_delay`` do, for the edge node and the cloud server.

Callers are worker threads (the cloud's frame workers, the edge's executor). The first caller for a
range with nobody running it leads: it takes what is queued (up to ``max_frames`` images, after
waiting up to ``max_delay_s`` for more when fewer are queued), runs it, hands every caller its rows
and passes the lead to the next queued caller. With the default delay of 0 a lone frame runs at
once — one frame in flight costs what it did without batching — and frames that arrive while a
batch runs are batched together next.

A batch that fails is run again frame by frame, so a bad frame gets its own error and never fails
its batch-mates (the codec has checked every frame's shape before it gets here; this is the
guard for anything it could not see).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

RunFn = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class BatchingConfig:
    max_frames: int = 32  # images in one batch (a frame may carry several)
    max_delay_s: float = 0.0  # how long a batch waits for more frames before it runs

    def check(self) -> None:
        from ecd.errors import ConfigError

        if self.max_frames < 1:
            raise ConfigError(f"batch_max_frames: expected >= 1, got {self.max_frames}")
        if not 0.0 <= self.max_delay_s <= 1.0:
            raise ConfigError(f"batch_max_delay_ms: expected 0..1000, got {self.max_delay_s * 1e3:g}")


@dataclass(eq=False)
class _Call:
    x: np.ndarray
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    result: np.ndarray | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    batches: int = 0
    frames: int = 0  # calls batched (a call may carry several frames' rows: ``run_rows``)
    images: int = 0  # rows run
    largest: int = 0
    retried: int = 0  # batches run again frame by frame after a failure


class DynamicBatcher:
    """Batches calls of ``run(x, start, stop)`` per block range; thread-safe."""

    def __init__(self, run: RunFn, config: BatchingConfig | None = None):
        self._run = run
        self.config = config or BatchingConfig()
        self.config.check()
        self._lock = threading.Condition()
        self._queues: dict[tuple[int, int], deque[_Call]] = {}
        self._leading: set[tuple[int, int]] = set()
        self.stats = BatchStats()

    def run(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Blocks ``[start, stop)`` on ``x`` (``[N, ...]``), possibly in a batch with other callers'."""
        call, key = _Call(x), (start, stop)
        with self._lock:
            self._queues.setdefault(key, deque()).append(call)
            if key not in self._leading:
                self._leading.add(key)
                call.wake.set()
            self._lock.notify_all()  # a leader waiting out max_delay_s counts frames
        while True:
            call.wake.wait()
            if call.done:
                break
            call.wake.clear()
            self._lead(key)  # promoted: nobody runs this range, and this call is first in line
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _take(self, key: tuple[int, int]) -> list[_Call]:
        """The next batch from the queue's head: whole frames, up to max_frames images (a larger
        frame goes alone)."""
        queue, batch, images = self._queues[key], [], 0
        while queue and (not batch or images + len(queue[0].x) <= self.config.max_frames):
            call = queue.popleft()
            batch.append(call)
            images += len(call.x)
        return batch

    def _lead(self, key: tuple[int, int]) -> None:
        with self._lock:
            if self.config.max_delay_s > 0:
                self._lock.wait_for(lambda: sum(len(c.x) for c in self._queues[key]) >= self.config.max_frames,
                                    self.config.max_delay_s)
            batch = self._take(key)
        try:
            self._execute(batch, key)
        finally:
            with self._lock:
                queue = self._queues[key]
                if queue:
                    queue[0].wake.set()  # the lead passes to the next in line
                else:
                    self._leading.discard(key)
                    del self._queues[key]

    def _execute(self, batch: list[_Call], key: tuple[int, int]) -> None:
        start, stop = key
        outs: list[np.ndarray | None] = [None] * len(batch)
        try:
            if len(batch) == 1:
                outs = [self._run(batch[0].x, start, stop)]
            else:
                y = self._run(np.concatenate([c.x for c in batch]), start, stop)
                outs = list(np.split(y, np.cumsum([len(c.x) for c in batch])[:-1]))
        except Exception as e:  # noqa: BLE001 — isolate: every frame alone, each with its own outcome
            if len(batch) == 1:
                batch[0].error = e
            else:
                with self._lock:
                    self.stats.retried += 1
        with self._lock:
            self.stats.batches += 1
            self.stats.frames += len(batch)
            self.stats.images += sum(len(c.x) for c in batch)
            self.stats.largest = max(self.stats.largest, len(batch))
        for call, out in zip(batch, outs):
            if out is None and call.error is None:
                try:
                    out = self._run(call.x, start, stop)
                except Exception as e:  # noqa: BLE001 — handed to that frame's caller
                    call.error = e
            call.result = out
            call.done = True
            call.wake.set()


def run_rows(run: RunFn, xs: list[np.ndarray], start: int, stop: int) -> list[np.ndarray | Exception]:
    """Blocks ``[start, stop)`` on several frames' inputs as one call (the frames of one message):
    each frame's own output rows, or its own exception — a failed call is run again frame by frame,
    so a bad frame never fails its message-mates (as :class:`DynamicBatcher` does for a batch)."""
    if len(xs) > 1:
        try:
            y = run(np.concatenate(xs), start, stop)
            return list(np.split(y, np.cumsum([len(x) for x in xs])[:-1]))
        except Exception:  # noqa: BLE001 — isolate below
            pass
    out: list[np.ndarray | Exception] = []
    for x in xs:
        try:
            out.append(run(x, start, stop))
        except Exception as e:  # noqa: BLE001 — handed to that frame
            out.append(e)
    return out
