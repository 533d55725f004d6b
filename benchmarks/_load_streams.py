"""A light load generator for ``benchmarks/load.py --generator streams``: N devices in one process.

Why: the edge node and the cloud are what a load test measures, and on this 2-core machine 100 device
agents as 100 Python processes took ~2.5 cores between them (measured: 103 CPU s over a 42 s run,
against 17 CPU s for the cloud and the edge together), so the figure measured the generator. Here
each device is still registered with the cloud for real (its own token, its split decided as an
agent decides it) and streams over the real protocol to the edge node (one gRPC stream per device,
the stream's first frame binding it, the others compact, paced at ``--fps``); only the device's own
compute is left out: each device sends the activations of a few held-out images at its split,
computed once. Per frame: the time from writing it to reading its answer; answered once,
unanswered (by ``--drain-s`` after the last write), duplicated or refused are counted per device. The process reports its own CPU time and peak RSS
(``getrusage``), so what the generator cost is printed beside the tiers.

    python benchmarks/_load_streams.py --cloud HOST:PORT --streams N --fps F --seconds S --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from ecd import codec, zoo
from ecd.manifest import load_heldout
from ecd.partition import Partition
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split
from ecd.transport import serde
from ecd.types import ONE_FRAME_REVISION, Encoding
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

MODEL = "digits_cnn"


def activations(split: int, encoding: Encoding, images: int = 8) -> list[pb.Tensor]:
    """What a device at ``split`` sends for a few held-out images (its blocks run once, here)."""
    m = zoo.load_manifest(MODEL)
    x = m.input.preprocess(load_heldout(m).images[:images])
    out = Partition(m, 0, split).run(x)
    return [serde.tensor_to_pb(codec.encode(out[i : i + 1], encoding)) for i in range(images)]


async def register(stub: pb_grpc.CloudServerStub, name: str, split: int) -> pb.Assignment:
    """Register like an agent, waiting out the cloud's registration rate limit (per caller)."""
    delay = 0.2
    while True:
        try:
            return await stub.RegisterDevice(pb.RegisterDeviceRequest(
                device_name=name, profile="pi4", radio="wifi", model_id=MODEL, split_device=split, encoding=pb.FLOAT32,
                preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5)), timeout=30)
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                raise
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 2.0)


class Device:
    def __init__(self, a: pb.Assignment, tensors: list[pb.Tensor]) -> None:
        self.a, self.tensors = a, tensors
        self.sent: dict[int, float] = {}  # frame id -> when written, until answered
        self.latencies: list[float] = []
        self.duplicated = self.errors = self.written = 0

    def frame(self, frame_id: int) -> pb.Frame:
        tensor = self.tensors[frame_id % len(self.tensors)]
        if frame_id == 1:  # the stream's first frame: complete, binding it
            return pb.Frame(device_id=self.a.device_id, frame_id=1, token=self.a.token, model_id=self.a.model_id,
                            model_version=self.a.model_version, split_device=self.a.split_device, tensor=tensor,
                            captured_unix_ns=time.time_ns(), protocol_revision=ONE_FRAME_REVISION)
        return pb.Frame(frame_id=frame_id, tensor=pb.Tensor(shape=tensor.shape, data=tensor.data), captured_unix_ns=time.time_ns())

    async def run(self, channel: grpc.aio.Channel, fps: float, seconds: float, offset_s: float, drain_s: float) -> None:
        call = pb_grpc.EdgeNodeStub(channel).Stream()

        async def write() -> None:
            await asyncio.sleep(offset_s)
            start = time.perf_counter()
            n = int(fps * seconds)
            for i in range(1, n + 1):
                await asyncio.sleep(max(0.0, start + (i - 1) / fps - time.perf_counter()))
                self.sent[i] = time.perf_counter()
                await call.write(self.frame(i))
                self.written += 1
            await call.done_writing()

        writer = asyncio.create_task(write())
        try:
            async with asyncio.timeout(offset_s + seconds + drain_s):
                async for r in call:
                    t = self.sent.pop(r.frame_id, None)
                    if t is None:
                        self.duplicated += 1
                    elif r.HasField("error") and r.error.code:
                        self.errors += 1
                    else:
                        self.latencies.append(time.perf_counter() - t)
        except (TimeoutError, grpc.aio.AioRpcError):
            pass
        finally:
            writer.cancel()
            call.cancel()


# --- the harness side (benchmarks/load.py) ----------------------------------------------------------


def run_generator(opts: argparse.Namespace, root: Path, run_dir: Path) -> dict:
    """Cloud and edge node(s) as processes of ``root``'s checkout; this file as the generator, its own
    process; the tiers' CPU over the generator's run and their peak RSS beside the generator's own."""
    import subprocess

    from _counts import cpu_between, tier_usage
    from _procs import HARNESS_ROOT, Cluster, Deadline

    deadline = Deadline(opts.deadline_s or 3 * opts.seconds + 300)
    out = run_dir / "generator.json"
    with Cluster(root, opts.python, run_dir, opts.sample_s, scrape_timeout_s=2.0) as c:
        cloud = c.start_service("cloud", "cloud", ["cloud-server", "--insecure", "--port", "0", "--metrics-port", "0",
                                                   "--db", str(run_dir / "cloud.sqlite3")], deadline)
        edges = [c.start_service("edge", f"edge-{i}", ["edge-node", "--insecure", "--cloud", cloud.target, "--port", "0",
                                                        "--metrics-port", "0"], deadline) for i in range(opts.edges)]
        c.start_tracker()
        t0 = c.now()
        argv = [opts.python, str(Path(__file__).resolve()), "--cloud", cloud.target, "--streams", str(opts.streams),
                "--fps", str(opts.fps), "--seconds", str(opts.seconds), "--out", str(out)]
        with open(run_dir / "generator.log", "w") as log:
            done = subprocess.run(argv, cwd=HARNESS_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=deadline.left(),
                                  env={**os.environ, "PYTHONPATH": str(HARNESS_ROOT)}, check=False)
        c.sample()
        t1 = c.now()

        usage = {"cloud": {**tier_usage([cloud]), "cpu_window_s": cpu_between(cloud, t0, t1)},
                 "edge": {**tier_usage(edges), "cpu_window_s": sum(cpu_between(e, t0, t1) or 0 for e in edges)}}
    result = json.loads(out.read_text()) if done.returncode == 0 and out.exists() else {"failed": f"exit {done.returncode}"}
    return {**result, "usage": usage, "logs": str(run_dir), "window_s": round(t1 - t0, 1)}


def print_generator(r: dict) -> None:
    if "failed" in r:
        print(f"\n== the generator failed ({r['failed']}); logs {r['logs']}")
        return
    print(f"\n== {r['streams']} device streams x {r['seconds']:g} s x {r['fps']:g} fps from one generator process (split {r['split']})")
    print(f"   written {r['written']}, answered {r['answered']}, unanswered {r['unanswered']} (within {r['drain_s']:g} s of the "
          f"last write), duplicated {r['duplicated']}, errors {r['errors']}")
    print(f"   latency write -> answer p50/p95/p99 {r['p50_s']}/{r['p95_s']}/{r['p99_s']} s; per device p99: median "
          f"{r['device_p99_median_s']} s, worst {r['device_p99_max_s']} s")
    busy = r["generator_cpu_s"] / r["wall_s"] if r["wall_s"] else 0.0
    print(f"   generator: {r['generator_cpu_s']} CPU s over {r['wall_s']} s ({busy:.2f} cores), peak RSS {r['generator_rss_peak_mb']} MB")
    for name, u in r["usage"].items():
        print(f"   {name:<6} CPU {u['cpu_window_s']} s in the {r['window_s']} s window, peak RSS {u['rss_peak_mb_max']:.0f} MB")


def percentile(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 4) if xs else None


async def main(opts: argparse.Namespace) -> dict:
    prefs = Preferences(0.5, 0.5)
    split = decide_split(zoo.load_manifest(MODEL), load_device("pi4"), load_radio("wifi"), prefs).recommended
    tensors = activations(split, Encoding.FLOAT32)
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(opts.cloud, options=options) as cloud:
        stub = pb_grpc.CloudServerStub(cloud)
        t0 = time.perf_counter()
        assignments = await asyncio.gather(*(register(stub, f"load-{i:03d}", split) for i in range(opts.streams)))
        registered_s = time.perf_counter() - t0
    edges = sorted({a.edge_endpoint for a in assignments})
    channels = {e: grpc.aio.insecure_channel(e, options=options) for e in edges}  # one connection per edge node, as HTTP/2 shares it
    devices = [Device(a, tensors) for a in assignments]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(d.run(channels[d.a.edge_endpoint], opts.fps, opts.seconds, random.uniform(0, 1 / opts.fps), opts.drain_s)
                           for d in devices))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for ch in channels.values():
        await ch.close()
    pooled = [x for d in devices for x in d.latencies]
    per_device_p99 = [percentile(d.latencies, 99) for d in devices if d.latencies]
    return {
        "streams": opts.streams, "fps": opts.fps, "seconds": opts.seconds, "drain_s": opts.drain_s, "split": split, "edges": edges,
        "registered_s": round(registered_s, 1), "wall_s": round(wall, 1),
        "written": sum(d.written for d in devices), "answered": len(pooled), "errors": sum(d.errors for d in devices),
        "duplicated": sum(d.duplicated for d in devices),
        "unanswered": sum(len(d.sent) for d in devices),  # written, and no answer within --drain-s of the last write
        "p50_s": percentile(pooled, 50), "p95_s": percentile(pooled, 95), "p99_s": percentile(pooled, 99),
        "device_p99_median_s": percentile([p for p in per_device_p99 if p is not None], 50),
        "device_p99_max_s": max(per_device_p99, default=None),
        "generator_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
        "generator_rss_peak_mb": round(cpu1.ru_maxrss / 1024, 1),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cloud", required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--drain-s", type=float, default=15.0, help="how long answers may come after the last frame is written")
    p.add_argument("--out", type=Path, required=True)
    opts = p.parse_args()
    result = asyncio.run(main(opts))
    opts.out.write_text(json.dumps(result, indent=2))
    sys.exit(0)
