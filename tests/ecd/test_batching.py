"""Dynamic batching: callers from many threads get exactly their own rows, batches form while one
runs, a failing frame fails alone, a lone frame never waits."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ecd.batching import BatchingConfig, DynamicBatcher
from ecd.errors import ConfigError


class SlowDouble:
    """run(x) = 2x + start - stop, taking ``seconds``; refuses any batch holding a NaN (a frame
    whose problem only shows when run)."""

    def __init__(self, seconds: float = 0.02):
        self.seconds = seconds
        self.batch_sizes: list[int] = []
        self.lock = threading.Lock()
        self.started = threading.Event()

    def __call__(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        with self.lock:
            self.batch_sizes.append(len(x))
        self.started.set()
        time.sleep(self.seconds)
        if np.isnan(x).any():
            raise ValueError("tensor.data: NaN")
        return 2 * x + (start - stop)


def call_all(batcher: DynamicBatcher, inputs: list[np.ndarray], start: int = 1, stop: int = 3) -> list:
    out: list = [None] * len(inputs)

    def one(i: int) -> None:
        try:
            out[i] = batcher.run(inputs[i], start, stop)
        except Exception as e:  # noqa: BLE001 — the test looks at it
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return out


def test_many_callers_are_batched_and_each_gets_its_own_rows() -> None:
    run = SlowDouble()
    batcher = DynamicBatcher(run, BatchingConfig(max_frames=8))
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(24)]
    out = call_all(batcher, inputs)
    for x, y in zip(inputs, out):
        np.testing.assert_array_equal(y, 2 * x - 2)
    assert max(run.batch_sizes) > 1, "no batch formed"
    assert max(run.batch_sizes) <= 8 + 2  # whole frames, up to max_frames images (a frame is never split)
    assert sum(run.batch_sizes) == sum(len(x) for x in inputs)  # every image run exactly once
    assert batcher.stats.frames == 24 and batcher.stats.largest > 1


def test_a_failing_frame_fails_alone() -> None:
    run = SlowDouble()
    batcher = DynamicBatcher(run, BatchingConfig(max_frames=64))
    inputs = [np.full((1, 2), float(i), np.float32) for i in range(12)]
    inputs[5] = np.array([[np.nan, 0]], np.float32)
    out = call_all(batcher, inputs)
    assert isinstance(out[5], ValueError) and str(out[5]) == "tensor.data: NaN"
    for i, y in enumerate(out):
        if i != 5:
            np.testing.assert_array_equal(y, 2 * inputs[i] - 2)
    assert batcher.stats.retried >= 1  # the batch that held it was run again frame by frame


def test_ranges_are_batched_apart() -> None:
    run = SlowDouble()
    batcher = DynamicBatcher(run)
    x = np.ones((1, 2), np.float32)
    results: dict = {}
    threads = [threading.Thread(target=lambda k=k: results.setdefault(k, batcher.run(x, k, 5))) for k in range(4) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for k in range(4):
        np.testing.assert_array_equal(results[k], 2 * x + k - 5)


def test_a_lone_frame_does_not_wait_and_a_delay_gathers_frames() -> None:
    run = SlowDouble(seconds=0.0)
    lone = DynamicBatcher(run, BatchingConfig(max_frames=32, max_delay_s=0.0))
    t0 = time.perf_counter()
    lone.run(np.ones((1, 2), np.float32), 0, 1)
    assert time.perf_counter() - t0 < 0.5  # generous: no max_delay_s to wait out
    waiting = DynamicBatcher(run, BatchingConfig(max_frames=2, max_delay_s=1.0))
    out = call_all(waiting, [np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32)])
    assert run.batch_sizes[-1] == 2  # the leader waited for the second frame (max_frames reached before the 1 s)
    np.testing.assert_array_equal(out[1], np.full((1, 2), -2.0, np.float32))


@pytest.mark.parametrize("cfg,field", [(BatchingConfig(max_frames=0), "batch_max_frames"),
                                       (BatchingConfig(max_delay_s=-1), "batch_max_delay_ms"),
                                       (BatchingConfig(instances=0), "batch_instances"),
                                       (BatchingConfig(instances=65), "batch_instances")])
def test_bad_settings_name_the_option(cfg, field) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        DynamicBatcher(SlowDouble(), cfg)


class Overlap:
    """A block runner that counts the batches running at once; with ``meet`` each batch waits (at
    most 10 s) until that many run together, so the test proves they overlap instead of hoping."""

    def __init__(self, meet: int = 0):
        self.meet = threading.Barrier(meet, timeout=10) if meet else None
        self.lock, self.now, self.most = threading.Lock(), 0, 0

    def __call__(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            if self.meet is not None:
                self.meet.wait()
            else:
                time.sleep(0.01)  # the work: time for another batch to start beside it, if one could
            return 2 * x
        finally:
            with self.lock:
                self.now -= 1


def test_two_instances_run_two_batches_of_one_range_at_once_and_never_three() -> None:
    run = Overlap(meet=2)
    batcher = DynamicBatcher(run, BatchingConfig(max_frames=1, instances=2))
    inputs = [np.full((1, 2), float(i), np.float32) for i in range(6)]
    out = call_all(batcher, inputs)
    for x, y in zip(inputs, out):
        np.testing.assert_array_equal(y, 2 * x)  # a batch that never met its partner would have failed
    assert run.most == 2 and batcher.stats.batches == 6


def test_one_instance_runs_one_batch_of_a_range_at_a_time() -> None:
    run = Overlap()
    out = call_all(DynamicBatcher(run, BatchingConfig(max_frames=1)), [np.ones((1, 2), np.float32)] * 12)
    assert all(np.array_equal(y, np.full((1, 2), 2.0)) for y in out) and run.most == 1
