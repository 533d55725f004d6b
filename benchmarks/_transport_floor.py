"""The transport's own ceiling, for ``benchmarks/pipeline.py``: the pipeline's three processes with
nothing in them but gRPC.

A client process streams opaque payloads to a relay process, which forwards each one on its own
bidi stream to an echo process and relays the echo back — the device agent -> edge node -> cloud
server topology, the same grpc.aio servers and channel options, but no protobuf parsing, no
validation, no model, no metrics. Whatever the real tiers do per frame costs at least this much, so
``frames/s`` here bounds the pipeline's throughput on this machine from above, and ``CPU ms/frame``
bounds its cost from below. Started as processes from this file (``--serve echo|relay``,
``--client``), ended and reaped by :func:`transport_floor` whatever happens.

:func:`hop_overhead` is the smallest piece of the same: one loopback gRPC bidi stream echoing
payloads of each size, in this process, against an in-memory copy (it measures grpc, not the code
under test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _metrics import read_proc

SERVICE, METHOD = "bench.Relay", "Stream"
PATH = f"/{SERVICE}/{METHOD}"


def _options() -> list[tuple[str, int]]:
    from ecd.transport.rpc import TransportConfig, grpc_options

    return grpc_options(TransportConfig())


async def _serve(mode: str, upstream: str | None) -> None:
    import grpc

    server = grpc.aio.server(options=_options())
    if mode == "echo":
        async def handler(requests, context):
            async for payload in requests:
                yield payload
    else:
        channel = grpc.aio.insecure_channel(upstream, options=_options())
        stream = channel.stream_stream(PATH)

        async def handler(requests, context):
            async for payload in stream(requests):
                yield payload
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(handler)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.wait_for_termination()


async def _client(target: str, in_flight: int, payload_bytes: int, warmup_s: float, window_s: float) -> dict:
    """Keep ``in_flight`` payloads outstanding; count answers over a window after a warm-up."""
    import grpc

    payload = os.urandom(payload_bytes)
    queue: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (item := await queue.get()) is not None:
            yield item

    for _ in range(in_flight):
        queue.put_nowait(payload)
    async with grpc.aio.insecure_channel(target, options=_options()) as channel:
        call = channel.stream_stream(PATH)(requests())
        t_start = time.perf_counter()
        window_start = window_end = None
        answered = in_window = 0
        rtts: list[float] = []
        sent_at = time.perf_counter()
        async for _reply in call:
            now = time.perf_counter()
            answered += 1
            if in_flight == 1:
                rtts.append(now - sent_at)
            if window_start is None and now - t_start >= warmup_s:
                window_start, cpu0, rtts = now, time.process_time(), []
                print("window", flush=True)  # the harness samples the servers' CPU now and at the end
            elif window_start is not None:
                in_window += 1
                if now - window_start >= window_s:
                    window_end, cpu1 = now, time.process_time()
                    break
            sent_at = time.perf_counter()
            queue.put_nowait(payload)
        queue.put_nowait(None)
        call.cancel()
    assert window_start is not None and window_end is not None
    elapsed = window_end - window_start
    rtts.sort()
    return {"frames_per_s": in_window / elapsed, "frames": in_window, "client_cpu_s": cpu1 - cpu0,
            "p50_s": rtts[len(rtts) // 2] if rtts else None}


def _cpu_s(pid: int) -> float:
    got = read_proc(pid)
    if got is None:
        raise RuntimeError(f"transport floor: process {pid} exited")
    return got[0]


def _die_with_parent() -> None:  # in the child, before exec: SIGKILL when the benchmark dies
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL


def _readline(p: subprocess.Popen, timeout_s: float) -> str:
    """One line of the child's stdout within ``timeout_s``; '' if it ends or stays silent."""
    ready, _, _ = select.select([p.stdout], [], [], timeout_s)
    return p.stdout.readline() if ready else ""


def transport_floor(python: str, in_flights: list[int], payload_bytes: int, window_s: float,
                    warmup_s: float = 1.0, timeout_s: float = 120.0) -> list[dict]:
    """One row per in-flight depth: the bare chain's frames/s, p50 (1 in flight) and CPU per frame,
    every process's CPU taken over the same window (the client says when it opens)."""
    here = str(Path(__file__).resolve())
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    procs: list[subprocess.Popen] = []

    def spawn(*args: str) -> subprocess.Popen:
        p = subprocess.Popen([python, here, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, text=True, env=env, preexec_fn=_die_with_parent)
        procs.append(p)
        return p

    def server(*args: str) -> tuple[subprocess.Popen, int]:
        p = spawn(*args)
        line = _readline(p, timeout_s)
        if not line:
            raise RuntimeError(f"transport floor: {' '.join(args)} did not start within {timeout_s:g} s")
        return p, int(json.loads(line)["port"])

    rows = []
    try:
        echo, echo_port = server("--serve", "echo")
        relay, relay_port = server("--serve", "relay", "--upstream", f"127.0.0.1:{echo_port}")
        for k in in_flights:
            client = spawn("--client", f"127.0.0.1:{relay_port}", "--in-flight", str(k), "--payload-bytes",
                           str(payload_bytes), "--warmup-s", str(warmup_s), "--window-s", str(window_s))
            if _readline(client, timeout_s).strip() != "window":
                raise RuntimeError(f"transport floor: the client at {k} in flight opened no window")
            before = {"relay": _cpu_s(relay.pid), "echo": _cpu_s(echo.pid)}
            line = _readline(client, timeout_s + window_s)
            after = {"relay": _cpu_s(relay.pid), "echo": _cpu_s(echo.pid)}
            if not line:
                raise RuntimeError(f"transport floor: the client at {k} in flight gave no result")
            got = json.loads(line)
            client.wait(timeout_s)
            frames = max(got["frames"], 1)
            cpu = {name: (after[name] - before[name]) / frames for name in ("relay", "echo")}
            cpu["client"] = got["client_cpu_s"] / frames
            rows.append({"in_flight": k, "payload_bytes": payload_bytes, "frames_per_s": got["frames_per_s"],
                         "p50_s": got["p50_s"], "cpu_per_frame_s": {**cpu, "all": sum(cpu.values())}})
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", choices=["echo", "relay"])
    p.add_argument("--upstream")
    p.add_argument("--client")
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--payload-bytes", type=int, default=1024)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--window-s", type=float, default=3.0)
    args = p.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.upstream))
    elif args.client:
        print(json.dumps(asyncio.run(_client(args.client, args.in_flight, args.payload_bytes, args.warmup_s, args.window_s))))
    else:
        for row in transport_floor(sys.executable, [1, 16, 64], args.payload_bytes, args.window_s):
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
