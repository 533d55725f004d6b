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

The parts: the runs ``_pipeline_runs.py``, the single process ``_pipeline_baseline.py``, the figures
``_pipeline_figures.py``, the tables ``_pipeline_report.py``; processes ``_procs.py``.

    python benchmarks/pipeline.py [--root .] [--models digits_cnn mobilenet_v2] [--splits 0 mid n]
        [--encodings float32 float16 int8] [--frames 200] [--window-s 3] [--in-flight 16 64]
        [--agents 4] [--repeats 1] [--quick] [--out results/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import _profile
from _counts import clean_json, code_under_test
from _pipeline_baseline import baseline_worker
from _pipeline_report import print_extras, print_floor
from _pipeline_runs import Checkout, bench_model, ensure_model, tls_cost
from _procs import HARNESS_ROOT, Deadline, install_sigterm
from _transport_floor import hop_overhead, transport_floor

ENCODINGS = ("float32", "float16", "int8")


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
