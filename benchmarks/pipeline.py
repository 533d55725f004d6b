"""Three tiers on loopback vs single-process onnxruntime, and the cost of one gRPC hop.

1. For each encoding and a few device splits: per-frame latency (one frame in flight) and
   throughput (16 in flight) of device agent -> edge node -> cloud server on loopback, against
   one process running the same preprocessing and the whole model with onnxruntime.
2. Per-hop overhead: a bare gRPC bidirectional stream echoing payloads of 1 KiB .. 1 MiB on
   loopback, against copying the same bytes in memory.

Prints ratios measured side by side in this one run and writes JSON (``--out``).

3. The same pipeline over mutual TLS on every hop against plaintext, side by side.

    python benchmarks/pipeline.py [--frames 300] [--out results/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from cloud_server.service import CloudConfig, start_cloud
from device_agent.service import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.manifest import load_heldout
from ecd.partition import Partition
from ecd.transport.rpc import LoopThread, TransportConfig, grpc_options, wait_healthy
from ecd.zoo import load_manifest
from edge_node.service import EdgeConfig, start_edge


def single_process(model: str, frames: int) -> dict:
    m = load_manifest(model)
    images = load_heldout(m).images
    whole = Partition(m, 0, m.n_blocks)
    lat = []
    t_all = time.perf_counter()
    for i in range(frames):
        t0 = time.perf_counter()
        whole.run(m.input.preprocess(images[i % len(images)][None]))
        lat.append(time.perf_counter() - t0)
    return {"p50_s": float(np.median(lat)), "throughput_fps": frames / (time.perf_counter() - t_all)}


def pipeline(cloud_target: str, tmp: Path, model: str, split: int, encoding: str, frames: int, in_flight: int,
             tls_dir: str = "") -> dict:
    agent = DeviceAgent(AgentConfig(cloud=cloud_target, model=model, split=split, encoding=encoding,
                                    max_in_flight=in_flight, tls_dir=tls_dir,
                                    model_dir=str(tmp / f"agent-{split}-{encoding}-{in_flight}-{bool(tls_dir)}")))
    try:
        agent.connect()
        t0 = time.perf_counter()
        outcomes = agent.run(heldout(model, frames))
        elapsed = time.perf_counter() - t0
    finally:
        agent.close()
    assert all(o.result.ok for o in outcomes)
    lat = [o.latency_s for o in outcomes]
    return {
        "p50_s": float(np.median(lat)),
        "p95_s": float(np.percentile(lat, 95)),
        "throughput_fps": frames / elapsed,
        "uplink_bytes_per_frame": float(np.mean([o.result.uplink_bytes for o in outcomes])),
    }


def tls_cost(model: str, frames: int, tmp: Path) -> list[dict]:
    """The same pipeline in plaintext and over mutual TLS (every hop), side by side."""
    from ecd import certs

    folder = tmp / "tls"
    certs.init(folder, certs.default_holders(edges=1, devices=1))
    rows = []
    for tls_dir in ("", str(folder)):
        loop = LoopThread()
        cloud = loop.run(start_cloud(CloudConfig(db=str(tmp / f"tls-{bool(tls_dir)}.sqlite3"), metrics_port=-1, tls_dir=tls_dir)))
        edge = loop.run(start_edge(EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1, tls_dir=tls_dir,
                                              model_dir=str(tmp / f"e-tls-{bool(tls_dir)}"))))
        try:
            for in_flight in (1, 16):
                r = pipeline(f"127.0.0.1:{cloud.port}", tmp, model, 3, "float32", frames, in_flight, tls_dir)
                rows.append({"tls": bool(tls_dir), "in_flight": in_flight, **r})
        finally:
            loop.run(edge.stop(0))
            loop.run(cloud.stop(0))
            loop.close()
    return rows


def hop_overhead(sizes: list[int], repeats: int) -> list[dict]:
    """Round trip of one payload over a loopback gRPC bidi stream vs an in-memory copy."""

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
                import queue

                q: queue.Queue = queue.Queue()

                def requests():
                    for _ in range(repeats):
                        yield q.get()

                q.put(payload)
                rtts = []
                t0 = time.perf_counter()
                for i, _reply in enumerate(call(requests())):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 3, 6])
    parser.add_argument("--out", default="results/pipeline.json")
    args = parser.parse_args()

    base = single_process(args.model, args.frames)
    print(f"single process, {args.model}: p50 {base['p50_s'] * 1e3:.3f} ms, {base['throughput_fps']:.0f} frames/s")
    results: dict = {"model": args.model, "frames": args.frames, "single_process": base, "pipeline": [], "hops": []}
    loop = LoopThread()
    with tempfile.TemporaryDirectory() as tmp:
        cloud = loop.run(start_cloud(CloudConfig(db=str(Path(tmp) / "c.sqlite3"), metrics_port=-1)))
        edge = loop.run(start_edge(EdgeConfig(cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1, model_dir=str(Path(tmp) / "e"))))
        target = f"127.0.0.1:{cloud.port}"
        wait_healthy(target)
        try:
            print(f"\n{'split':>5} {'encoding':>8} | {'p50 ms':>8} {'p95 ms':>8} {'p50 / single':>12} | "
                  f"{'frames/s':>9} {'single / pipeline':>17} | {'uplink B':>8}")
            for split in args.splits:
                for encoding in ("float32", "float16", "int8"):
                    lat = pipeline(target, Path(tmp), args.model, split, encoding, args.frames, in_flight=1)
                    thr = pipeline(target, Path(tmp), args.model, split, encoding, args.frames, in_flight=16)
                    row = {"split": split, "encoding": encoding, "latency": lat, "throughput": thr,
                           "p50_ratio_vs_single": lat["p50_s"] / base["p50_s"],
                           "throughput_ratio_single_over_pipeline": base["throughput_fps"] / thr["throughput_fps"]}
                    results["pipeline"].append(row)
                    print(f"{split:>5} {encoding:>8} | {lat['p50_s'] * 1e3:8.3f} {lat['p95_s'] * 1e3:8.3f} "
                          f"{row['p50_ratio_vs_single']:12.1f} | {thr['throughput_fps']:9.0f} "
                          f"{row['throughput_ratio_single_over_pipeline']:17.2f} | {lat['uplink_bytes_per_frame']:8.0f}")
        finally:
            loop.run(edge.stop(0))
            loop.run(cloud.stop(0))
            loop.close()
    with tempfile.TemporaryDirectory() as tmp:
        rows = tls_cost(args.model, args.frames, Path(tmp))
    results["tls"] = rows
    print("\nmutual TLS on every hop vs plaintext (split 3, float32)")
    print(f"{'in flight':>9} | {'plain p50 ms':>12} {'TLS p50 ms':>10} {'ratio':>6} | {'plain fps':>9} {'TLS fps':>8} {'TLS / plain':>11}")
    for plain, tls in zip(rows[:2], rows[2:]):
        print(f"{plain['in_flight']:>9} | {plain['p50_s'] * 1e3:12.3f} {tls['p50_s'] * 1e3:10.3f} {tls['p50_s'] / plain['p50_s']:6.2f} | "
              f"{plain['throughput_fps']:9.0f} {tls['throughput_fps']:8.0f} {tls['throughput_fps'] / plain['throughput_fps']:11.2f}")
    print("\nper-hop transport overhead (loopback gRPC bidi stream, median of 200 round trips)")
    print(f"{'payload':>10} | {'one hop us':>10} {'MB/s':>8} | {'memcpy us':>9} {'hop / memcpy':>12}")
    for row in hop_overhead([2**10, 2**12, 2**14, 2**16, 2**18, 2**20], repeats=200):
        results["hops"].append(row)
        print(f"{row['bytes']:>10} | {row['one_hop_s'] * 1e6:10.1f} {row['one_hop_mb_per_s']:8.0f} | "
              f"{row['memory_copy_s'] * 1e6:9.1f} {row['one_hop_s'] / row['memory_copy_s']:12.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
