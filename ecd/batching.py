"""Dynamic batching across device streams: frames that need the same block range are stacked into
one batch, run once, and split back to their callers — what Triton's dynamic batcher and
TorchServe's ``batch_size`` / ``max_batch_delay`` do, for the edge node and the cloud server.

Callers are worker threads (the cloud's frame workers, the edge's executor). Up to ``instances``
batches of one range run at once (one by default). A caller whose range has an instance free leads:
it takes what is queued (up to ``max_frames`` images, after waiting up to ``max_delay_s`` for more
when fewer are queued), runs it, and hands every caller its rows; the callers still queued wait for
an instance to come free, and the first to see one leads the next batch. With the default delay of
0 a lone frame runs at once — one frame in flight costs what it did without batching — and frames
that arrive while a batch runs are batched together next. Two instances with onnxruntime's
intra-op threads at one each keep two cores busy without the thread pool's barriers inside one run
(the edge node's ``--batch-instances`` and ``--intra-op-threads``).

A batch that fails is run again frame by frame, so a bad frame gets its own error and never fails
its batch-mates (the codec has checked every frame's shape before it gets here; this is the
guard for anything it could not see).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

RunFn = Callable[[np.ndarray, int, int], np.ndarray]


MAX_INSTANCES = 64


@dataclass(frozen=True)
class BatchingConfig:
    max_frames: int = 32  # images in one batch (a frame may carry several)
    max_delay_s: float = 0.0  # how long a batch waits for more frames before it runs
    instances: int = 1  # batches of one block range running at once (Triton's instance count)

    def check(self) -> None:
        from ecd.errors import ConfigError

        if self.max_frames < 1:
            raise ConfigError(f"batch_max_frames: expected >= 1, got {self.max_frames}")
        if not 0.0 <= self.max_delay_s <= 1.0:
            raise ConfigError(f"batch_max_delay_ms: expected 0..1000, got {self.max_delay_s * 1e3:g}")
        if not 1 <= self.instances <= MAX_INSTANCES:
            raise ConfigError(f"batch_instances: expected 1..{MAX_INSTANCES}, got {self.instances}")


@dataclass(eq=False)
class _Call:
    x: np.ndarray
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
        self._lock = threading.Condition()  # guards the queues and counts; notified whenever either changes
        self._queues: dict[tuple[int, int], deque[_Call]] = {}
        self._running: dict[tuple[int, int], int] = {}  # batches of each range running now: at most config.instances
        self.stats = BatchStats()

    def run(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Blocks ``[start, stop)`` on ``x`` (``[N, ...]``), possibly in a batch with other callers'."""
        call, key = _Call(x), (start, stop)
        with self._lock:
            queue = self._queues.setdefault(key, deque())
            queue.append(call)
            self._lock.notify_all()  # a leader waiting out max_delay_s counts frames
            while not call.done:
                if queue and self._running.get(key, 0) < self.config.instances:
                    self._lead(key, queue)  # this call may not be in that batch (too far back): then it goes round again
                else:
                    self._lock.wait()
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

    def _lead(self, key: tuple[int, int], queue: deque[_Call]) -> None:
        """Run the next batch of ``key`` (called, and returning, with the lock held; released while
        the batch runs, so callers queue the next batch and other instances run theirs)."""
        self._running[key] = self._running.get(key, 0) + 1
        try:
            if self.config.max_delay_s > 0:
                self._lock.wait_for(lambda: sum(len(c.x) for c in queue) >= self.config.max_frames, self.config.max_delay_s)
            batch = self._take(key)  # empty if another instance took them all meanwhile
            self._lock.release()
            try:
                if batch:
                    self._execute(batch, key)
            finally:
                self._lock.acquire()
        finally:
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
                if not queue:
                    del self._queues[key]
            self._lock.notify_all()  # the batch's callers are done; an instance is free for the next

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
            call.done = True  # its caller sees it once the lead is given back (notify_all)


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
