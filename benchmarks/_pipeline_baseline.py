"""The single-process baseline of ``benchmarks/pipeline.py``: preprocessing + the whole model in one
onnxruntime session (the blocks fused with ``onnx.compose``; or chained, one session per block), in a
worker process of its own (``pipeline.py --baseline-worker MODEL``) started from the harness's
checkout whatever ``--root`` is, so BEFORE and AFTER are compared with the same baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from _metrics import read_proc
from _pipeline_figures import MB
from _procs import DIE_WITH_PARENT, HARNESS_ROOT, Deadline

PIPELINE = Path(__file__).resolve().with_name("pipeline.py")  # the worker is `python pipeline.py --baseline-worker MODEL`


def _session_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()  # as the tiers' SessionConfig: default intra-op threads, no spinning
    opts.intra_op_num_threads = 0
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def fused_model(manifest) -> bytes:
    """Every block of ``manifest`` merged into one ONNX graph (``onnx.compose``), names prefixed per block."""
    import onnx
    from onnx import compose

    merged = None
    for i, block in enumerate(manifest.blocks):
        m = compose.add_prefix(onnx.load(str(manifest.block_path(block))), f"b{i}_")
        if merged is None:
            merged = m
            continue
        merged = compose.merge_models(merged, m, io_map=[(merged.graph.output[0].name, m.graph.input[0].name)])
    return merged.SerializeToString()


def _images(model: str, manifest, count: int) -> tuple[np.ndarray, str]:
    """The frames the agents send: the held-out set if the model has one, else the agent's synthetic source."""
    from ecd.manifest import load_heldout

    try:
        return load_heldout(manifest).images[:count], "heldout"
    except Exception:  # noqa: BLE001 - no held-out set: the synthetic source, as `--source synthetic` makes it
        c, h, w = manifest.input.shape
        rng = np.random.default_rng(0)
        return np.stack([rng.integers(0, 256, (h, w) if c == 1 else (h, w, c), dtype=np.uint8) for _ in range(count)]), "synthetic"


def baseline_worker(model: str) -> int:
    """Serve measurements on stdin/stdout: one JSON line in ({"impl", "frames", "window_s"}), one out."""
    import resource

    import onnxruntime as ort
    from ecd.zoo import load_manifest

    m = load_manifest(model)
    images, source = _images(model, m, 64)
    opts = _session_options()
    runners: dict[str, object] = {}
    fuse_error = ""
    try:
        sess = ort.InferenceSession(fused_model(m), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        runners["fused"] = lambda x, s=sess, n=name: s.run(None, {n: x})[0]
    except Exception as e:  # noqa: BLE001 - no onnx, or the blocks do not merge: chained only
        fuse_error = f"{type(e).__name__}: {e}"[:300]
    chain = []
    for block in m.blocks:
        s = ort.InferenceSession(str(m.block_path(block)), opts, providers=["CPUExecutionProvider"])
        chain.append((s, s.get_inputs()[0].name))

    def chained(x):
        for s, n in chain:
            x = s.run(None, {n: x})[0]
        return x

    runners["chained"] = chained
    pre = m.input.preprocess

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def rss() -> int:
        u = read_proc(os.getpid())
        return (u[1], u[2]) if u else (0, 0)

    print(json.dumps({"ready": "baseline", "model": model, "source": source, "impls": sorted(runners),
                      "fuse_error": fuse_error, "n_blocks": m.n_blocks}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        run = runners.get(req.get("impl", "fused")) or runners["chained"]
        impl = req.get("impl") if req.get("impl") in runners else "chained"
        for i in range(10):  # warm-up
            run(pre(images[i % len(images)][None]))
        lat = []
        c0 = cpu()
        for i in range(int(req["frames"])):
            t0 = time.perf_counter()
            run(pre(images[i % len(images)][None]))
            lat.append(time.perf_counter() - t0)
        lat_cpu = cpu() - c0
        n, c0, t_start = 0, cpu(), time.perf_counter()
        end = t_start + float(req["window_s"])
        while True:
            run(pre(images[n % len(images)][None]))
            n += 1
            if time.perf_counter() >= end:
                break
        elapsed, window_cpu = time.perf_counter() - t_start, cpu() - c0
        rss_now, rss_peak = rss()
        print(json.dumps({"impl": impl, "p50_s": float(np.median(lat)), "p95_s": float(np.percentile(lat, 95)),
                          "latency_frames": len(lat), "latency_cpu_per_frame_s": lat_cpu / len(lat),
                          "throughput_fps": n / elapsed, "window_s": elapsed, "window_frames": n,
                          "cpu_per_frame_s": window_cpu / n, "busy_cores": window_cpu / elapsed,
                          "rss_mb": rss_now / MB, "rss_peak_mb": rss_peak / MB}), flush=True)
    return 0


# The worker dies with the harness, as the tiers do (_procs.LAUNCHER), then becomes
# `python pipeline.py --baseline-worker MODEL`.
WORKER_LAUNCHER = DIE_WITH_PARENT + "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"


class Baseline:
    """The baseline worker process for one model (from the harness's checkout)."""

    def __init__(self, model: str, python: str, deadline: Deadline, logdir: Path):
        assert threading.current_thread() is threading.main_thread(), "spawn from the main thread (PR_SET_PDEATHSIG)"
        env = {**os.environ, "ECD_BENCH_PARENT": str(os.getpid()),
               "PYTHONPATH": os.pathsep.join(p for p in (str(HARNESS_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.log = open(logdir / f"baseline-{model}.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([python, "-c", WORKER_LAUNCHER, str(PIPELINE), "--baseline-worker", model],
                                     cwd=HARNESS_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, start_new_session=True)
        self.info = self._read(deadline, 120)
        if "ready" not in self.info:
            raise RuntimeError(f"baseline worker for {model} did not start: {self.info}")

    def _read(self, deadline: Deadline, cap: float) -> dict:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(deadline.left(cap)):
                raise TimeoutError("baseline worker: no answer in time")
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"baseline worker exited ({self.proc.poll()}); see {self.log.name}")
        return json.loads(line)

    def measure(self, impl: str, frames: int, window_s: float, deadline: Deadline) -> dict:
        self.proc.stdin.write(json.dumps({"impl": impl, "frames": frames, "window_s": window_s}) + "\n")
        self.proc.stdin.flush()
        return self._read(deadline, 60 + window_s + frames * 0.5)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
