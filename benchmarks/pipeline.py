"""The data plane against single-process onnxruntime, with every tier its own process (as deployed).

1. **Pipeline vs single process.** For each model (``digits_cnn``; ``mobilenet_v2``, built on demand
   with ``ecd models build`` if it is not yet), each encoding and a few device splits, the cloud
   server, one edge node and the device agents run as separate processes on loopback, each started
   the way an operator starts it (``python -m ecd_cli cloud-server|edge-node|device-agent``, from the
   checkout named by ``--root``). Measured per configuration:

   * latency with one frame in flight (``--max-in-flight 1``, ``--frames`` frames): the agent's own
     p50/p95 from its report. The agent times a frame from *after* its own compute (preprocessing and
     blocks ``[0, split)``) to the result, so the table's ``p50 ms`` adds the agent's mean device
     compute over the same frames (``ecd_stage_seconds{stage="device_compute"}``) to be comparable
     with the single process, which times preprocessing + the whole model; both figures are in the JSON;
   * throughput with many frames in flight (``--in-flight``, default 16 and 64, one agent) and with
     several agents side by side (``--agents``, e.g. 4 agents x 16): frames answered per second over
     a steady window of ``--window-s`` seconds after a warm-up, read from the agents' Prometheus
     counters (the agents stream until SIGTERM, which ends the run);
   * CPU seconds per frame of each tier (cloud, edge, the agents together) over the same window, from
     ``/proc/<pid>/stat``, the busy cores of each tier, and the machine's busy cores from
     ``/proc/stat`` (what else runs on the machine shows there as ``other``);
   * RSS of each tier at the end of the window (and the peak, VmHWM; the table shows one agent's);
   * bytes per frame on each hop: device -> edge from the agent's report (``uplink_bytes`` / frames,
     the tensor bytes) and its wire counter (``ecd_hop_bytes_total{hop="device_to_edge"}``, whole
     protobuf frames), edge -> cloud from the edge's ``ecd_hop_bytes_total{hop="edge_to_cloud"}``.

   The single-process baseline runs in its own process too (this file with ``--baseline-worker``),
   started from the harness's checkout whatever ``--root`` is, so BEFORE and AFTER are compared with
   the same baseline: preprocessing + the whole model in one onnxruntime session (the blocks fused
   into one graph with ``onnx.compose``; ``--baseline chained`` runs one session per block, as the
   old in-process ``single_process()`` did), on the same frames, same session options as the tiers
   (default intra-op threads, no spinning). It is measured **right before each configuration**
   (latency over ``--frames`` frames, throughput over ``--window-s``), so a ratio compares two figures
   taken seconds apart on a machine that other work shares.

2. **Extras** (``--extras``, on by default, off with ``--quick``): the same pipeline over mutual TLS on
   every hop against plaintext (tiers as processes, split 3, float32), and the per-hop cost of a bare
   loopback gRPC bidi stream echoing 1 KiB .. 1 MiB against an in-memory copy (in this process: it
   measures grpc, not the code under test), and **the transport alone** (``_transport_floor.py``):
   the three-process chain with nothing in it but grpc.aio relaying 1 KiB payloads — the most
   frames/s, and the least CPU and latency per frame, any tiers written this way can reach here.

3. **Where the time goes** (``--profile``, needs py-spy from the dev extra): every tier is sampled
   during the first one-agent throughput window of each configuration, and its CPU per frame is
   split into model, gRPC + asyncio, codec, pb <-> core, registry, metrics and our own code
   (``_profile.py``).

``--root PATH`` measures another checkout (e.g. ``git worktree add /tmp/ecd-before ce0472c``); flags
that checkout's CLI lacks are not passed (read from its ``--help``). Every wait is bounded (a
deadline per run and one for the whole benchmark); every process started is ended and reaped.
``--repeats R`` repeats each configuration (with its baseline) and reports medians.

    python benchmarks/pipeline.py [--root .] [--models digits_cnn mobilenet_v2] [--splits 0 mid n]
        [--encodings float32 float16 int8] [--frames 200] [--window-s 3] [--in-flight 16 64]
        [--agents 4] [--repeats 1] [--quick] [--out results/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _profile
import numpy as np
from _transport_floor import transport_floor
from _procs import (
    Cluster,
    Deadline,
    StartError,
    Tier,
    clean_json,
    code_under_test,
    install_sigterm,
    metric_sum,
    read_proc,
    scrape,
)

HARNESS_ROOT = Path(__file__).resolve().parents[1]
MB = 2**20
ENCODINGS = ("float32", "float16", "int8")


# --- small pure helpers (tested in tests/benchmarks/test_pipeline_bench.py) --------------------------


def resolve_splits(spec: list[str], n_blocks: int) -> list[int]:
    """``0``, ``mid`` (n // 2), ``n`` (n_blocks) or integers, clipped to the model's blocks, deduplicated, in order."""
    out: list[int] = []
    for token in spec:
        t = str(token).strip().lower()
        if t == "n":
            s = n_blocks
        elif t == "mid":
            s = n_blocks // 2
        else:
            try:
                s = int(t)
            except ValueError:
                raise SystemExit(f"--splits: expected integers, 'mid' or 'n', got {token!r}") from None
        s = min(max(s, 0), n_blocks)
        if s not in out:
            out.append(s)
    return out


def help_flags(text: str) -> set[str]:
    """The long options an argparse ``--help`` text lists."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def filter_args(args: list[str], known: set[str]) -> tuple[list[str], list[str]]:
    """``args`` without the ``--flag value`` pairs (or bare ``--flag``) whose flag is not in ``known``; and
    the flags dropped. A value never starts with ``--``."""
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
        if a.startswith("--") and a not in known:
            dropped.append(a)
            i += 2 if has_value else 1
            continue
        kept.append(a)
        if has_value and a.startswith("--"):
            kept.append(args[i + 1])
            i += 2
        else:
            i += 1
    return kept, dropped


def machine_cpu() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of the whole machine, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0, 0.0
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    total = sum(ticks[:8])  # guest time is already in user
    clk = os.sysconf("SC_CLK_TCK")
    return (total - idle) / clk, total / clk


def per_frame(delta: float | None, frames: float) -> float | None:
    return None if delta is None or frames <= 0 else delta / frames


def median_dict(runs: list[dict]) -> dict:
    """Field-wise median of numeric leaves across repeats (the first run's shape; non-numbers from the first)."""
    if not runs:
        return {}
    if len(runs) == 1:
        return runs[0]
    out: dict = {}
    for key, first in runs[0].items():
        values = [r.get(key) for r in runs]
        if isinstance(first, dict):
            out[key] = median_dict([v for v in values if isinstance(v, dict)])
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            out[key] = float(np.median(nums)) if nums else None
        else:
            out[key] = first
    out["repeats"] = len(runs)
    return out


def ratios(row: dict, base: dict) -> dict:
    """The pipeline against its baseline: throughput ratio (pipeline / single) and p50 difference, ms."""
    out: dict = {}
    thr, b_thr = row.get("throughput_fps"), base.get("throughput_fps")
    if thr and b_thr:
        out["throughput_ratio"] = thr / b_thr
    p50, b_p50 = row.get("p50_s"), base.get("p50_s")
    if p50 is not None and b_p50 is not None:
        out["p50_minus_single_ms"] = (p50 - b_p50) * 1e3
        out["p50_ratio"] = p50 / b_p50 if b_p50 else None
    cpu, b_cpu = (row.get("cpu_per_frame_s") or {}).get("pipeline"), base.get("cpu_per_frame_s")
    if cpu is not None and b_cpu:
        out["cpu_per_frame_ratio"] = cpu / b_cpu  # every tier's CPU per frame over the single process's
    return out


def bottleneck(busy: dict[str, float | None], cores: int) -> str:
    """Which tier limits a throughput run: one at ~one core (a Python process serialised on its GIL
    and its own threads), or the machine when every core is busy."""
    ours = {k: v for k, v in busy.items() if v is not None and k not in ("machine", "other")}
    machine = busy.get("machine")
    if machine is not None and machine >= 0.9 * cores:
        top = max(ours, key=lambda k: ours[k], default="?")
        other = busy.get("other")
        return (f"machine ({machine:.2f}/{cores} cores busy; most: {top} {ours.get(top, 0):.2f}"
                f"{f'; other work {other:.2f}' if other is not None else ''})")
    if ours:
        top = max(ours, key=lambda k: ours[k])
        return f"{top} ({ours[top]:.2f} cores)"
    return "?"


# --- the single-process baseline: a worker process --------------------------------------------------


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


# The worker dies with the harness (PR_SET_PDEATHSIG), as the tiers do (_procs.LAUNCHER), then becomes
# `python pipeline.py --baseline-worker MODEL`.
WORKER_LAUNCHER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9)\n"
    "if os.getppid() != int(os.environ['ECD_BENCH_PARENT']): sys.exit(70)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


class Baseline:
    """The baseline worker process for one model (from the harness's checkout)."""

    def __init__(self, model: str, python: str, deadline: Deadline, logdir: Path):
        assert threading.current_thread() is threading.main_thread(), "spawn from the main thread (PR_SET_PDEATHSIG)"
        env = {**os.environ, "ECD_BENCH_PARENT": str(os.getpid()),
               "PYTHONPATH": os.pathsep.join(p for p in (str(HARNESS_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.log = open(logdir / f"baseline-{model}.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([python, "-c", WORKER_LAUNCHER, str(Path(__file__).resolve()), "--baseline-worker", model],
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


# --- the pipeline: tiers as processes -------------------------------------------------------------


class Checkout:
    """The checkout under test: its CLI's flags, read once from ``--help``."""

    def __init__(self, root: Path, python: str):
        self.root, self.python = root, python
        self.extra: dict[str, list[str]] = {}  # more flags per tier (--cloud-args, --edge-args, --agent-args)
        self.flags: dict[str, set[str]] = {}
        self.dropped: set[str] = set()
        for sub in ("cloud-server", "edge-node", "device-agent"):
            done = subprocess.run([python, "-m", "ecd_cli", sub, "--help"], cwd=root, capture_output=True, text=True,
                                  timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(root)})
            if done.returncode != 0:
                raise SystemExit(f"`ecd {sub} --help` in {root} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
            self.flags[sub] = help_flags(done.stdout)
        agent = " ".join(subprocess.run([python, "-m", "ecd_cli", "device-agent", "--help"], cwd=root, capture_output=True,
                                        text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(root)}).stdout.split())
        m = re.search(r"--frames FRAMES (.*?)\(default", agent)
        self.until_sigterm = bool(m and re.search(r"\b0 =.*(SIGTERM|until|stop)", m.group(1)))

    def args(self, sub: str, args: list[str]) -> list[str]:
        kept, dropped = filter_args(args, self.flags[sub])
        self.dropped.update(f"{sub} {d}" for d in dropped)
        return [sub, *kept]


def _proc(tier: Tier) -> tuple[float, int, int] | None:
    with tier.lock:
        return read_proc(tier.pid) if tier.alive else None


def snapshot(groups: dict[str, list[Tier]]) -> dict:
    """One look at every tier: CPU and RSS from /proc, metrics from its endpoint; and the machine's CPU."""
    busy, total = machine_cpu()
    snap: dict = {"t": time.monotonic(), "machine_busy_s": busy, "machine_total_s": total, "groups": {}}
    for name, tiers in groups.items():
        cpu, rss, peak, metrics = 0.0, 0, 0, []
        for t in tiers:
            u = _proc(t)
            if u is not None:
                cpu += u[0]
                rss += u[1]
                peak = max(peak, u[2])
            if t.metrics_port > 0:
                got = scrape(t.metrics_port, 2.0)
                if got is None:
                    snap["scrape_failed"] = t.name
                metrics.extend(got or [])
        snap["groups"][name] = {"cpu_s": cpu, "rss": rss, "rss_peak": peak, "metrics": metrics}
    return snap


def agent_counts(snap: dict) -> tuple[int, int, float]:
    """(answered, made, device->edge wire bytes) of the agents in a snapshot."""
    m = snap["groups"]["agents"]["metrics"]
    return (int(metric_sum(m, "ecd_frames_total", service="device")),
            int(metric_sum(m, "ecd_stage_seconds_count", service="device", stage="device_compute")),
            metric_sum(m, "ecd_hop_bytes_total", service="device", hop="device_to_edge"))


def window_figures(a: dict, b: dict, cores: int) -> dict:
    """Throughput, CPU per frame and busy cores per tier, bytes per frame per hop, between two snapshots."""
    if a.get("scrape_failed") or b.get("scrape_failed"):
        raise RuntimeError(f"metrics of {a.get('scrape_failed') or b.get('scrape_failed')} unreadable at a window's edge")
    dt = b["t"] - a["t"]
    ans_a, made_a, wire_a = agent_counts(a)
    ans_b, made_b, wire_b = agent_counts(b)
    frames = ans_b - ans_a
    out: dict = {"window_s": dt, "window_frames": frames, "throughput_fps": frames / dt if dt > 0 else None,
                 "cpu_per_frame_s": {}, "busy_cores": {}, "rss_mb": {}, "rss_peak_mb": {}}
    for name in b["groups"]:
        dc = b["groups"][name]["cpu_s"] - a["groups"][name]["cpu_s"]
        out["cpu_per_frame_s"][name] = per_frame(dc, frames)
        out["busy_cores"][name] = dc / dt if dt > 0 else None
        out["rss_mb"][name] = b["groups"][name]["rss"] / MB
        out["rss_peak_mb"][name] = b["groups"][name]["rss_peak"] / MB
    ours = sum(v for v in out["busy_cores"].values() if v is not None)
    machine = (b["machine_busy_s"] - a["machine_busy_s"]) / dt if dt > 0 else None
    out["busy_cores"]["machine"] = machine
    out["busy_cores"]["other"] = None if machine is None else max(0.0, machine - ours)
    out["cpu_per_frame_s"]["pipeline"] = per_frame(sum(b["groups"][n]["cpu_s"] - a["groups"][n]["cpu_s"] for n in b["groups"]), frames)

    def e2c(s: dict) -> float:
        return metric_sum(s["groups"]["edge"]["metrics"], "ecd_hop_bytes_total", service="edge", hop="edge_to_cloud")

    out["device_to_edge_wire_bytes_per_frame"] = per_frame(wire_b - wire_a, made_b - made_a)
    out["edge_to_cloud_bytes_per_frame"] = per_frame(e2c(b) - e2c(a), frames)
    out["device_compute_mean_s"] = _hist_mean(a, b, "agents", "device", "device_compute")
    out["stage_mean_ms"] = stage_means(a, b)
    out["bottleneck"] = bottleneck(out["busy_cores"], cores)
    return out


def stage_means(a: dict, b: dict) -> dict[str, float]:
    """Every tier's own stage timings over the window (``ecd_stage_seconds``: mean ms per observation),
    as ``service/stage``: where the time goes inside a tier, as the tier reports it."""
    def sums(s: dict) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        for g in s["groups"].values():
            for name, labels, value in g["metrics"]:
                if name in ("ecd_stage_seconds_sum", "ecd_stage_seconds_count"):
                    key = (labels.get("service", "?"), labels.get("stage", "?"))
                    out.setdefault(key, [0.0, 0.0])[name.endswith("_count")] += value
        return out

    sa, sb = sums(a), sums(b)
    means = {}
    for key, (total, count) in sorted(sb.items()):
        t0, c0 = sa.get(key, [0.0, 0.0])
        if count - c0 > 0:
            means[f"{key[0]}/{key[1]}"] = round((total - t0) / (count - c0) * 1e3, 4)
    return means


def _hist_mean(a: dict, b: dict, group: str, service: str, stage: str) -> float | None:
    def get(s: dict, suffix: str) -> float:
        return metric_sum(s["groups"][group]["metrics"], f"ecd_stage_seconds_{suffix}", service=service, stage=stage)

    n = get(b, "count") - get(a, "count")
    return (get(b, "sum") - get(a, "sum")) / n if n > 0 else None


def run_agents(c: Cluster, co: Checkout, cloud: Tier, edge: Tier, run: dict, opts: argparse.Namespace, logdir: Path,
               tls: list[str] | None = None) -> dict:
    """Start ``run['agents']`` agents, measure a window, end them; the window's figures and their reports.

    Every agent streams until SIGTERM. After a warm-up (``2 x agents x in-flight`` frames, at least 20)
    the window opens; ``run['mode']``: ``latency`` closes it ``--frames`` answers later, ``throughput``
    after ``--window-s`` seconds. The agents' latency percentiles are their reports' (every frame,
    the warm-up's included)."""
    deadline = Deadline(opts.run_deadline_s)
    n, k, mode = run["agents"], run["in_flight"], run["mode"]
    timed = mode == "throughput"
    frames = 0 if co.until_sigterm else 10**7  # streams until SIGTERM, which ends every run
    agents, reports = [], []
    tag = f"{run['model']}-s{run['split']}-{run['encoding']}-{mode}-{n}x{k}{'-tls' if tls else ''}-{run['rep']}"
    for i in range(n):
        report = logdir / f"{tag}-{i}.report.json"
        args = ["--cloud", cloud.target, "--name", f"bench-{i}", "--model", run["model"], "--split", str(run["split"]),
                "--encoding", run["encoding"], "--max-in-flight", str(k), "--frames", str(frames), "--source", run["source"],
                "--report", str(report), "--metrics-port", "0", "--model-dir", str(logdir / f"agent-{run['model']}-{i}"),
                *(tls or []), *co.extra.get("device-agent", [])]
        agents.append(c.spawn("agent", f"{tag}-{i}", co.args("device-agent", args)))
        reports.append(report)
    groups = {"cloud": [cloud], "edge": [edge], "agents": agents}
    out: dict = {"agents": n, "in_flight": k, "mode": mode}
    try:
        c.wait_ready(agents, deadline, 120)
        warm = max(n * k * 2, 20)

        def answered() -> int:
            return sum(int(metric_sum(scrape(a.metrics_port, 2.0) or [], "ecd_frames_total", service="device")) for a in agents)

        def wait_answered(target: int, cap_s: float) -> bool:
            end = Deadline(min(cap_s, deadline.remaining()))
            while not end.expired:
                if answered() >= target:
                    return True
                if any(not a.alive for a in agents):
                    return False
                time.sleep(opts.poll_s)
            return False

        warmed = wait_answered(warm, opts.warmup_cap_s)
        if not warmed:
            raise RuntimeError(f"{tag}: {answered()} of {warm} warm-up frames answered in time; logs {logdir}")
        a = snapshot(groups)
        spies = {}
        if timed and opts.profile and n == 1 and k == opts.in_flight[0]:  # one profiled run per configuration
            spies = {name: (_profile.start(t.pid, opts.window_s, logdir / f"{tag}-{name}.pyspy"), logdir / f"{tag}-{name}.pyspy")
                     for name, t in (("agents", agents[0]), ("edge", edge), ("cloud", cloud))}
        try:
            if timed:
                time.sleep(deadline.left(opts.window_s))
            else:  # one frame in flight: --frames frames after the warm-up
                wait_answered(agent_counts(a)[0] + opts.frames, deadline.remaining())
            b = snapshot(groups)
            out.update(window_figures(a, b, opts.cores))
            if spies:
                out["profile"] = read_profiles(spies, out.get("cpu_per_frame_s") or {}, deadline)
        finally:
            for proc, _path in spies.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        for t in agents:
            c.signal(t, signal.SIGTERM)
        c.wait_exit(agents, deadline)
    finally:
        for t in agents:  # whatever happened: none outlives its run
            if t.alive:
                c.signal(t, signal.SIGKILL)
        c.wait_exit(agents, Deadline(10))
    reps = [read_reportish(p, t) for p, t in zip(reports, agents)]
    ok = [r for r in reps if r]
    frames_done = sum(int(r.get("frames", 0)) for r in ok)
    out["exit_codes"] = [t.returncode for t in agents]
    out["errors"] = sum(int(r.get("errors", 0)) for r in ok)
    out["frames_answered"] = frames_done
    out["uplink_bytes_per_frame"] = per_frame(sum(float(r.get("uplink_bytes", 0)) for r in ok), frames_done)
    out["raw_image_bytes_per_frame"] = per_frame(sum(float(r.get("raw_image_bytes", 0)) for r in ok), frames_done)
    if ok:
        out["agent_p50_s"] = float(np.median([r["latency_p50_s"] for r in ok]))
        out["agent_p95_s"] = float(np.median([r["latency_p95_s"] for r in ok]))
        dc = out.get("device_compute_mean_s") or 0.0
        out["p50_s"], out["p95_s"] = out["agent_p50_s"] + dc, out["agent_p95_s"] + dc
        out["split_edge"] = ok[0].get("split_edge")
    if any(code not in (0,) for code in out["exit_codes"]) or out["errors"]:
        out["problem"] = f"exit codes {out['exit_codes']}, {out['errors']} errors; logs {logdir}"
    return out


def read_profiles(spies: dict, cpu: dict, deadline: Deadline) -> dict:
    """Each tier's py-spy samples in parts: the shares of its counted samples, and the tier's CPU per
    frame from /proc apportioned by those shares (see ``_profile.py`` for what is not counted)."""
    out = {}
    for name, (proc, path) in spies.items():
        try:
            proc.wait(timeout=deadline.left(30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shares, samples = _profile.buckets(path.read_text()) if path.exists() else ({}, 0)
        per_frame = cpu.get(name)
        out[name] = {"samples": samples, "share": shares,
                     "ms_per_frame": {k: v * per_frame * 1e3 for k, v in shares.items()} if per_frame else None}
    return out


def read_reportish(path: Path, tier: Tier) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return tier.last_json()


def start_servers(c: Cluster, co: Checkout, logdir: Path, name: str, model: str, deadline: Deadline,
                  tls: list[str] | None = None, edge_tls: list[str] | None = None) -> tuple[Tier, Tier]:
    def start(kind: str, tier_name: str, sub: str, args: list[str]) -> Tier:
        if not tls:
            return c.start_service(kind, tier_name, co.args(sub, args), deadline)
        # over mutual TLS the harness has no client certificate: health is read on the plaintext
        # --health-port (READY alone where the checkout has no such flag)
        from ecd.transport.rpc import wait_healthy

        tier = c.spawn(kind, tier_name, co.args(sub, [*args, "--health-port", "0"]))
        c.wait_ready([tier], deadline, 60)
        health = int((tier.ready or {}).get("health_port") or -1)
        if health > 0:
            wait_healthy(f"127.0.0.1:{health}", timeout_s=max(1.0, deadline.left(60)))
        return tier

    cloud = start("cloud", f"cloud-{name}", "cloud-server",
                  ["--port", "0", "--metrics-port", "0", "--models", model, "--db", str(logdir / f"cloud-{name}.sqlite3"), *(tls or []),
                   *co.extra.get("cloud-server", [])])
    edge = start("edge", f"edge-{name}", "edge-node",
                 ["--cloud", cloud.target, "--port", "0", "--metrics-port", "0", "--model-dir", str(logdir / f"edge-{name}"),
                  *(edge_tls or []), *co.extra.get("edge-node", [])])
    return cloud, edge


def ensure_model(model: str, python: str, deadline: Deadline) -> str:
    """'' if the model is ready to serve, else why it cannot be. Built once into the ECD model dir if it
    is not (``ecd models build``); an agent also needs the model's privacy curve, even with a pinned
    split, so a model without one gets a quick, undefended one (``ecd models privacy --quick
    --no-defence``: it only feeds the split choice, which this benchmark pins with ``--split``)."""
    env = {**os.environ, "PYTHONPATH": str(HARNESS_ROOT)}
    code = (f"from ecd.zoo import load_manifest; m = load_manifest({model!r}); "
            "print('curve' if m.privacy and 'curve' in m.privacy else 'no curve')")
    probe = [python, "-c", code]

    def state() -> str:
        done = subprocess.run(probe, cwd=HARNESS_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        return done.stdout.strip() if done.returncode == 0 else "not built"

    steps = {"not built": ["models", "build", model], "no curve": ["models", "privacy", model, "--quick", "--no-defence"]}
    for _ in range(2):
        now = state()
        if now == "curve":
            return ""
        print(f"{model}: {now}: running `ecd {' '.join(steps[now])}` (once, into the ECD model dir) ...", flush=True)
        try:
            done = subprocess.run([python, "-m", "ecd_cli", *steps[now]], cwd=HARNESS_ROOT, env=env, capture_output=True,
                                  text=True, timeout=deadline.left(900), check=False)
        except subprocess.TimeoutExpired:
            return f"`ecd {' '.join(steps[now])}` did not finish in time"
        if done.returncode != 0:
            return f"`ecd {' '.join(steps[now])}` failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return "" if state() == "curve" else f"{model} still not ready after building it"


def model_info(model: str, python: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HARNESS_ROOT)}
    code = (f"import json; from ecd.zoo import load_manifest; m = load_manifest({model!r}); "
            "print(json.dumps({'n_blocks': m.n_blocks, 'heldout': bool(getattr(m, 'heldout', None)), 'version': m.version}))")
    done = subprocess.run([python, "-c", code], cwd=HARNESS_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_model(model: str, co: Checkout, opts: argparse.Namespace, logdir: Path, total: Deadline, into: list) -> dict:
    """Every configuration of one model; the result is in ``into`` from the start, so an interrupted
    run still writes the rows it measured."""
    info = model_info(model, opts.python)
    splits = resolve_splits(opts.splits, info["n_blocks"])
    result: dict = {"model": model, "n_blocks": info["n_blocks"], "version": info["version"], "splits": splits, "rows": []}
    into.append(result)
    base = Baseline(model, opts.python, total, logdir)
    result["baseline_info"] = base.info
    source = base.info["source"]
    try:
        ref = {impl: base.measure(impl, opts.frames, opts.window_s, total) for impl in base.info["impls"]}
        result["baseline_reference"] = ref
        print(f"\n=== {model} ({info['n_blocks']} blocks, frames: {source}); single process "
              + "; ".join(f"{k}: p50 {v['p50_s'] * 1e3:.3f} ms, {v['throughput_fps']:.0f} frames/s, "
                          f"{v['cpu_per_frame_s'] * 1e3:.2f} ms CPU/frame, RSS {v['rss_mb']:.0f} MB" for k, v in ref.items())
              + (f"\n    (fused baseline unavailable: {base.info['fuse_error']})" if base.info.get("fuse_error") else ""), flush=True)
        impl = opts.baseline if opts.baseline in base.info["impls"] else "chained"
        result["baseline_impl"] = impl
        with Cluster(co.root, co.python, logdir, sample_s=1.0, scrape_timeout_s=2.0) as c:
            cloud, edge = start_servers(c, co, logdir, model, model, total)
            header()
            for split in splits:
                for encoding in opts.encodings:
                    if total.expired:
                        result.setdefault("notes", []).append("benchmark deadline hit: later configurations skipped")
                        return result
                    runs = [{"mode": "latency", "agents": 1, "in_flight": 1}]
                    runs += [{"mode": "throughput", "agents": 1, "in_flight": k} for k in opts.in_flight]
                    runs += [{"mode": "throughput", "agents": n, "in_flight": opts.agents_in_flight} for n in opts.agents if n > 1]
                    per_run: dict[str, list[dict]] = {}
                    bases = []
                    for rep in range(opts.repeats):
                        bases.append(base.measure(impl, opts.frames, opts.window_s, total))  # side by side with its runs
                        for r in runs:
                            key = f"{r['mode']}-{r['agents']}x{r['in_flight']}"
                            spec = {**r, "model": model, "split": split, "encoding": encoding, "source": source, "rep": rep}
                            try:
                                got = run_agents(c, co, cloud, edge, spec, opts, logdir)
                            except (StartError, RuntimeError, TimeoutError) as e:
                                got = {**r, "problem": str(e)[:500]}
                            got.update(ratios(got, bases[-1]))  # against the baseline of the same repeat
                            per_run.setdefault(key, []).append(got)
                    b = median_dict(bases)
                    row = {"split": split, "encoding": encoding, "baseline": b, "runs": {}}
                    for key, got in per_run.items():
                        m = median_dict([g for g in got if "throughput_fps" in g] or got)  # medians of the ratios too
                        if len(got) > 1:
                            m["all_repeats"] = got
                        row["runs"][key] = m
                    result["rows"].append(row)
                    print_row(row)
                    if not cloud.alive or not edge.alive:
                        raise RuntimeError(f"a server exited during {model} split {split} {encoding}; logs {logdir}")
    finally:
        base.close()
    return result


def header() -> None:
    print(f"\n{'split':>5} {'enc':>7} {'run':>10} | {'p50 ms':>7} {'p95 ms':>7} {'Δp50 ms':>8} | {'frames/s':>8} {'single':>7} "
          f"{'ratio':>5} | {'CPU ms/frame: agents':>20} {'edge':>6} {'cloud':>6} {'all':>6} {'single':>6} | "
          f"{'RSS MB a/e/c':>13} | {'B/frame d>e':>11} {'e>c':>6} {'raw':>5} | limit")


def _f(v: float | None, fmt: str, scale: float = 1.0) -> str:
    width = re.match(r"[+<>]?(\d*)", fmt).group(1)
    return format("-", f">{width}" if width else "") if v is None else format(v * scale, fmt)


def print_row(row: dict) -> None:
    b = row["baseline"]
    for r in row["runs"].values():
        cpu = r.get("cpu_per_frame_s") or {}
        rss = r.get("rss_mb") or {}
        lat = r["mode"] == "latency"
        label = "1 in fl." if lat else f"{r['agents']}x{r['in_flight']}" if r["agents"] > 1 else f"{r['in_flight']} in fl."
        if "problem" in r and "throughput_fps" not in r:
            print(f"{row['split']:>5} {row['encoding']:>7} {label:>10} | FAILED: {r['problem'][:160]}")
            continue
        print(f"{row['split']:>5} {row['encoding']:>7} {label:>10} | "
              f"{_f(r.get('p50_s') if lat else None, '7.3f', 1e3)} {_f(r.get('p95_s') if lat else None, '7.3f', 1e3)} "
              f"{_f(r.get('p50_minus_single_ms') if lat else None, '+8.3f')} | "
              f"{_f(r.get('throughput_fps'), '8.0f')} {_f(b.get('throughput_fps'), '7.0f')} {_f(r.get('throughput_ratio'), '5.2f')} | "
              f"{_f(cpu.get('agents'), '20.2f', 1e3)} {_f(cpu.get('edge'), '6.2f', 1e3)} {_f(cpu.get('cloud'), '6.2f', 1e3)} "
              f"{_f(cpu.get('pipeline'), '6.2f', 1e3)} {_f(b.get('cpu_per_frame_s'), '6.2f', 1e3)} | "
              f"{_f(rss.get('agents') / r['agents'] if rss.get('agents') is not None else None, '4.0f')}/{_f(rss.get('edge'), '3.0f')}/{_f(rss.get('cloud'), '3.0f'):<3} | "
              f"{_f(r.get('uplink_bytes_per_frame'), '11.0f')} {_f(r.get('edge_to_cloud_bytes_per_frame'), '6.0f')} "
              f"{_f(r.get('raw_image_bytes_per_frame'), '5.0f')} | {'' if lat else r.get('bottleneck', '')}"
              f"{'  !' + r['problem'][:100] if r.get('problem') else ''}", flush=True)
    for r in row["runs"].values():
        for tier, prof in (r.get("profile") or {}).items():
            ms = prof.get("ms_per_frame") or {}
            print(f"{'':>5} {'':>7} {'profile':>10} | {tier} CPU ms/frame by part ({prof['samples']} py-spy samples, "
                  f"{r['in_flight']} in flight): " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()), flush=True)
    stages = (row["runs"].get("latency-1x1") or {}).get("stage_mean_ms") or {}
    if stages:
        print(f"{'':>5} {'':>7} {'stages':>10} | one frame in flight, mean ms as the tiers time them: "
              + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()), flush=True)
    print(f"{'':>5} {'':>7} {'single':>10} | {b['p50_s'] * 1e3:7.3f} {b['p95_s'] * 1e3:7.3f} {'':>8} | "
          f"{b['throughput_fps']:8.0f} {'':>7} {'':>5} |", flush=True)


# --- extras: TLS on every hop (processes), one bare gRPC hop (in process) ----------------------------


def tls_cost(co: Checkout, opts: argparse.Namespace, logdir: Path, total: Deadline) -> list[dict]:
    """The pipeline in plaintext and over mutual TLS on every hop, tiers as processes, side by side."""
    certs = logdir / "tls"
    done = subprocess.run([opts.python, "-m", "ecd_cli", "certs", "init", str(certs), "--edges", "1", "--devices", "4"],
                          cwd=co.root, env={**os.environ, "PYTHONPATH": str(co.root)}, capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        print(f"TLS: `ecd certs init` failed, skipped: {done.stderr.strip()[-300:]}")
        return []
    rows = []
    model = "digits_cnn"
    split = min(3, model_info(model, opts.python)["n_blocks"])
    for use_tls in (False, True):
        tls = ["--tls-dir", str(certs)] if use_tls else []
        with Cluster(co.root, co.python, logdir, sample_s=1.0, scrape_timeout_s=2.0) as c:
            cloud, edge = start_servers(c, co, logdir, f"tls{int(use_tls)}", model, total, tls, tls + (["--tls-name", "edge-1"] if tls else []))
            for mode, k in (("latency", 1), ("throughput", 16)):
                spec = {"mode": mode, "agents": 1, "in_flight": k, "model": model, "split": split, "encoding": "float32",
                        "source": "heldout", "rep": 0}
                try:
                    r = run_agents(c, co, cloud, edge, spec, opts, logdir, tls + (["--tls-name", "device-1"] if tls else []))
                except (StartError, RuntimeError, TimeoutError) as e:
                    r = {"problem": str(e)[:300]}
                rows.append({"tls": use_tls, "mode": mode, "in_flight": k, **r})
    return rows


def hop_overhead(sizes: list[int], repeats: int) -> list[dict]:
    """Round trip of one payload over a loopback gRPC bidi stream vs an in-memory copy (in this process)."""
    import queue

    import grpc

    from ecd.transport.rpc import LoopThread, TransportConfig, grpc_options

    async def echo(request_iterator, context):
        async for payload in request_iterator:
            yield payload

    loop = LoopThread()
    cfg = TransportConfig()

    async def start():
        server = grpc.aio.server(options=grpc_options(cfg))
        handler = grpc.stream_stream_rpc_method_handler(echo)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {"Stream": handler})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = loop.run(start())
    rows = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=grpc_options(cfg)) as channel:
            call = channel.stream_stream("/bench.Echo/Stream")
            for size in sizes:
                payload = np.random.default_rng(0).bytes(size)
                q: queue.Queue = queue.Queue()

                def requests(q: queue.Queue = q):
                    for _ in range(repeats):
                        yield q.get()

                q.put(payload)
                rtts = []
                t0 = time.perf_counter()
                for i, _reply in enumerate(call(requests(), timeout=120)):
                    rtts.append(time.perf_counter() - t0)
                    if i + 1 < repeats:
                        t0 = time.perf_counter()
                        q.put(payload)
                buf = bytearray(payload)
                copies = []
                for _ in range(repeats):
                    c0 = time.perf_counter()
                    bytes(buf)
                    copies.append(time.perf_counter() - c0)
                rtt, copy = float(np.median(rtts)), float(np.median(copies))
                rows.append({"bytes": size, "grpc_round_trip_s": rtt, "memory_copy_s": copy,
                             "one_hop_s": rtt / 2, "one_hop_mb_per_s": size / (rtt / 2) / 1e6})
    finally:
        loop.run(server.stop(0))
        loop.close()
    return rows


def print_extras(tls: list[dict], hops: list[dict]) -> None:
    if tls:
        print("\nmutual TLS on every hop vs plaintext (tiers as processes; digits_cnn, split 3, float32)")
        print(f"{'run':>10} | {'plain p50 ms':>12} {'TLS p50 ms':>10} | {'plain fps':>9} {'TLS fps':>8} {'TLS / plain':>11} | "
              f"{'CPU ms/frame plain':>18} {'TLS':>6}")
        for plain, sec in zip([r for r in tls if r.get("tls") is False], [r for r in tls if r.get("tls")]):
            label = "1 in fl." if plain["mode"] == "latency" else f"{plain['in_flight']} in fl."
            pc, sc = (plain.get("cpu_per_frame_s") or {}).get("pipeline"), (sec.get("cpu_per_frame_s") or {}).get("pipeline")
            ratio = sec["throughput_fps"] / plain["throughput_fps"] if plain.get("throughput_fps") and sec.get("throughput_fps") else None
            print(f"{label:>10} | {_f(plain.get('p50_s'), '12.3f', 1e3)} {_f(sec.get('p50_s'), '10.3f', 1e3)} | "
                  f"{_f(plain.get('throughput_fps'), '9.0f')} {_f(sec.get('throughput_fps'), '8.0f')} {_f(ratio, '11.2f')} | "
                  f"{_f(pc, '18.2f', 1e3)} {_f(sc, '6.2f', 1e3)}")
    if hops:
        print("\nper-hop transport overhead (in this process: bare loopback gRPC bidi stream, median of 200 round trips)")
        print(f"{'payload':>10} | {'one hop us':>10} {'MB/s':>8} | {'memcpy us':>9} {'hop / memcpy':>12}")
        for row in hops:
            print(f"{row['bytes']:>10} | {row['one_hop_s'] * 1e6:10.1f} {row['one_hop_mb_per_s']:8.0f} | "
                  f"{row['memory_copy_s'] * 1e6:9.1f} {row['one_hop_s'] / row['memory_copy_s']:12.0f}")


def print_floor(rows: list[dict], models: list[dict]) -> None:
    """The bare three-process gRPC chain (``_transport_floor.py``) against each model's single process."""
    print("\ntransport alone: client -> relay -> echo as three processes, grpc.aio, 1 KiB opaque payloads, no model, "
          "no parsing (an upper bound on the pipeline's frames/s and a lower bound on its CPU and latency)")
    single = {m["model"]: (m.get("baseline_reference") or {}).get(m.get("baseline_impl", "fused"), {}) for m in models}
    print(f"{'in flight':>9} | {'frames/s':>8} {'p50 ms':>7} | {'CPU ms/frame: client':>20} {'relay':>6} {'echo':>6} {'all':>6} | "
          + " ".join(f"{'/ ' + k + ' single':>22}" for k in single))
    for r in rows:
        if "problem" in r:
            print(f"  failed: {r['problem'][:200]}")
            continue
        cpu = r["cpu_per_frame_s"]
        caps = " ".join(_f(r["frames_per_s"] / b["throughput_fps"] if b.get("throughput_fps") else None, "22.2f") for b in single.values())
        print(f"{r['in_flight']:>9} | {r['frames_per_s']:8.0f} {_f(r['p50_s'], '7.3f', 1e3)} | {cpu['client'] * 1e3:20.2f} "
              f"{cpu['relay'] * 1e3:6.2f} {cpu['echo'] * 1e3:6.2f} {cpu['all'] * 1e3:6.2f} | {caps}")


# --- main ----------------------------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=HARNESS_ROOT, help="the checkout whose tiers run (default: this one)")
    p.add_argument("--python", default=sys.executable, help="the interpreter the tiers and the baseline run under")
    p.add_argument("--models", nargs="*", default=["digits_cnn", "mobilenet_v2"], help="none: the extras only")
    p.add_argument("--splits", nargs="+", default=["0", "mid", "n"], help="device splits: integers, mid (n // 2) or n")
    p.add_argument("--encodings", nargs="+", default=list(ENCODINGS), choices=ENCODINGS)
    p.add_argument("--frames", type=int, default=200, help="frames per latency run (one in flight), and per baseline latency run")
    p.add_argument("--window-s", type=float, default=3.0, help="seconds of each throughput window (pipeline and baseline)")
    p.add_argument("--in-flight", type=int, nargs="+", default=[16, 64], help="frames in flight for the one-agent throughput runs")
    p.add_argument("--agents", type=int, nargs="*", default=[4], help="also run this many agents side by side (each --agents-in-flight)")
    p.add_argument("--agents-in-flight", type=int, default=16)
    p.add_argument("--repeats", type=int, default=1, help="repeat each configuration (with its baseline); medians are reported")
    p.add_argument("--baseline", choices=["fused", "chained"], default="fused",
                   help="single process: one fused ONNX session (default) or one session per block")
    p.add_argument("--extras", action=argparse.BooleanOptionalAction, default=True, help="TLS cost and the bare gRPC hop")
    p.add_argument("--profile", action="store_true",
                   help="sample every tier with py-spy during the first one-agent throughput window of each "
                        "configuration and print where its CPU goes (dev extra)")
    p.add_argument("--quick", action="store_true", help="smoke run: digits_cnn, split mid, float32 and int8, 16 in flight, short windows, no extras")
    for tier in ("cloud", "edge", "agent"):
        p.add_argument(f"--{tier}-args", default="", help=f"more flags for every {tier} process, one string (e.g. "
                       f"--edge-args='--batch-max-delay-ms 1'); those the checkout lacks are not passed")
    p.add_argument("--poll-s", type=float, default=0.1, help="how often the agents' counters are read while waiting")
    p.add_argument("--warmup-cap-s", type=float, default=60.0)
    p.add_argument("--run-deadline-s", type=float, default=180.0, help="hard limit on one agent run")
    p.add_argument("--deadline-s", type=float, default=3600.0, help="hard limit on the whole benchmark")
    p.add_argument("--logs", type=Path, default=None, help="logs, reports and registries (default: a new temp dir)")
    p.add_argument("--out", type=Path, default=Path("results/pipeline.json"))
    p.add_argument("--baseline-worker", metavar="MODEL", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.quick:
        opts.models, opts.splits, opts.encodings = ["digits_cnn"], ["mid"], ["float32", "int8"]
        opts.in_flight, opts.agents, opts.extras = [16], [], False
        opts.frames, opts.window_s = min(opts.frames, 100), min(opts.window_s, 1.5)
    opts.cores = os.cpu_count() or 1
    if opts.profile and not _profile.available():
        p.error("--profile: py-spy is not installed (pip install -e '.[dev]')")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    if opts.baseline_worker:
        return baseline_worker(opts.baseline_worker)
    install_sigterm()
    root = opts.root.resolve()
    if not (root / "ecd_cli").is_dir():
        raise SystemExit(f"--root: {root} holds no ecd_cli package")
    logdir = opts.logs or Path(tempfile.mkdtemp(prefix="ecd-pipeline-"))
    logdir.mkdir(parents=True, exist_ok=True)
    total = Deadline(opts.deadline_s)
    t0 = time.perf_counter()
    code = code_under_test(root, opts.python)
    harness = code_under_test(HARNESS_ROOT, opts.python)
    co = Checkout(root, opts.python)
    co.extra = {sub: shlex.split(getattr(opts, f"{tier}_args"))
                for sub, tier in (("cloud-server", "cloud"), ("edge-node", "edge"), ("device-agent", "agent"))}
    load = os.getloadavg()
    print(f"code under test: {code['ecd_file']} (commit {code['commit']}, {code['modified_files']} files modified); "
          f"baseline from {harness['root']} (commit {harness['commit']}); {opts.cores} cores, load {load[0]:.2f}; logs {logdir}")
    results: dict = {"code": code, "baseline_code": harness, "cores": opts.cores, "loadavg_start": load,
                     "options": {k: str(v) for k, v in vars(opts).items()}, "models": [], "skipped": {}}
    try:
        for model in opts.models:
            why = ensure_model(model, opts.python, total)
            if why:
                print(f"\n=== {model}: SKIPPED ({why})")
                results["skipped"][model] = why
                continue
            bench_model(model, co, opts, logdir, total, results["models"])
        if opts.extras and not total.expired:
            try:
                results["tls"] = tls_cost(co, opts, logdir, total)
            except Exception as e:  # noqa: BLE001 - the extras never cost the main table
                print(f"\nTLS cost: failed ({type(e).__name__}: {e}); logs {logdir}")
                results["tls"] = [{"problem": f"{type(e).__name__}: {e}"}]
            results["hops"] = hop_overhead([2**10, 2**12, 2**14, 2**16, 2**18, 2**20], repeats=200)
            try:
                results["transport_floor"] = transport_floor(opts.python, [1, *opts.in_flight], 1024, opts.window_s,
                                                             timeout_s=max(10.0, total.left(120)))
            except Exception as e:  # noqa: BLE001 - the extras never cost the main table
                results["transport_floor"] = [{"problem": f"{type(e).__name__}: {e}"}]
            print_extras(results["tls"], results["hops"])
            print_floor(results["transport_floor"], results["models"])
    finally:
        results["flags_not_passed"] = sorted(co.dropped)
        results["loadavg_end"] = os.getloadavg()
        results["runtime_s"] = round(time.perf_counter() - t0, 1)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(clean_json(results), indent=2))
        if co.dropped:
            print(f"\nflags the checkout under test lacks (not passed): {', '.join(sorted(co.dropped))}")
        print(f"\nwrote {opts.out} ({results['runtime_s']:.0f} s in all; logs {logdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
