"""Load: N device streams for a fixed time against one cloud and one edge node (each its own process
on loopback), and one oversized frame.

``--streams N --seconds S --fps F`` starts N real device agents (``python -m ecd_cli device-agent``),
each sending F frames per second for S seconds, and prints frames answered (of N*S*F), lost and never
sent, the capture-to-result latency (p50/p95/p99), throughput, and per tier (cloud, edge, agents in
total) the CPU seconds and the peak RSS, sampled from /proc/<pid> and exact from each child's rusage.
With an agent that has ``--fps`` and ``--frames 0`` (stream until SIGTERM), each agent is stopped S
seconds after its READY line; today's agent has neither, so each is asked for F*S frames and sends
them as fast as its in-flight window allows (the output says which).

Latency: each agent's report gives its own p50/p95(/p99); the pooled percentiles over every frame
come from the agents' ``ecd_stage_seconds{stage="end_to_end"}`` histograms, summed and interpolated
as Prometheus's ``histogram_quantile`` does (so only as fine as the buckets: …0.25, 0.5, 1, 2.5, 5 s).

``--oversized`` sends one frame of 16,384 int8 images at split 0 (a 16 MiB activation, built with the
protobuf message directly, on a device registered for it) to the edge node and reports the status it
gets, the edge's and the cloud's peak RSS (target: RESOURCE_EXHAUSTED, both under 500 MB), and whether
the edge still answers a normal frame afterwards. A tier passing ``--rss-cap-mb`` is killed (the
machine is shared) and the output says so.

Why not locust (or another load tool): locust drives *requests* from gevent greenlets and times each
one; here the unit is a device — registration, the partition download, the split choice, a
long-lived bidirectional stream with an in-flight window, resends and duplicate dropping — and the
numbers wanted are the device's own (answered once, lost, capture-to-result latency) plus per-process
CPU and RSS, which locust does not measure. A locust user would have to re-implement the agent (and
then measure that copy, not the agent operators run), time one stream by firing events by hand, and
run grpc under gevent, which needs ``grpc.experimental.gevent.init_gevent()`` before any channel and
is a known source of hangs with streaming calls. Locust is also not in the project's dependencies.
So the load generator is the real agent, N processes of it; this harness only starts, paces, stops and
counts them.

``--generator streams`` (the default) runs every device in one generator process instead
(``_load_streams.py``: real registrations and the real protocol, each device's activations computed
once): 100 agent processes cost this 2-core machine more CPU than the tiers they load, so their
figure measured the generator. ``--generator agents`` keeps the agents-as-processes run above.

    python benchmarks/load.py --streams 100 --seconds 30 --fps 5 [--generator streams|agents] [--edges 1] [--out results/load.json]
    python benchmarks/load.py --oversized [--images 16384] [--out results/load_oversized.json]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from _counts import (
    AgentCount,
    AgentFlags,
    Totals,
    agent_count,
    cpu_between,
    start_harness,
    tier_usage,
    totals,
    write_results,
)
from _load_streams import print_generator, run_generator
from _metrics import Sample, beyond_top, histogram_quantile, latency_buckets
from _procs import Cluster, Deadline, Tier, pace

MB = 2**20


@dataclass
class LoadResult:
    streams: int
    seconds: float
    fps: float
    mode: str
    expected: int  # streams * seconds * fps
    totals: Totals
    latency: dict
    throughput_fps: float  # answered / (first READY .. last exit)
    peak_fps: float  # the cloud's answers in its busiest --peak-window-s
    window_s: float
    startup_s: float  # first agent spawned .. every agent READY
    usage: dict  # per tier: CPU seconds (whole life and during the window), peak RSS
    exit_codes: dict[str, int]  # exit code -> how many processes
    deadline_hit: bool
    elapsed_s: float
    logs: str
    notes: list[str]
    agents: list[AgentCount] = field(default_factory=list)


@dataclass
class OversizedResult:
    images: int
    tensor_bytes: int
    status: str  # the Result's error code, OK, or the RPC's status
    message: str
    seconds: float
    edge_rss_before_mb: float
    edge_rss_peak_mb: float
    cloud_rss_peak_mb: float
    killed_at_cap: list[str]
    edge_alive_after: bool
    cloud_alive_after: bool
    follow_up_status: str  # a one-image frame sent afterwards
    passed: bool
    logs: str
    elapsed_s: float


# --- streams -------------------------------------------------------------------------------------


def peak_rate(samples: list[Sample], window_s: float) -> float:
    best = 0.0
    for i, s in enumerate(samples):
        j = next((k for k in range(i, len(samples)) if samples[k].t - s.t >= window_s), None)
        if j is None:
            break
        best = max(best, (samples[j].answered - s.answered) / (samples[j].t - s.t))
    return best


def latency_summary(agents: list[Tier], counts: list[AgentCount]) -> dict:
    pooled: dict[float, float] = {}
    for a in agents:
        for le, n in latency_buckets(a.metrics).items():
            pooled[le] = pooled.get(le, 0.0) + n
    ok = sum(c.answered - c.errors for c in counts)
    seen = max(pooled.values(), default=0.0)

    def med(xs: list[float | None]) -> float | None:
        xs = [x for x in xs if x is not None]
        return round(float(np.median(xs)), 4) if xs else None

    def top(xs: list[float | None]) -> float | None:
        xs = [x for x in xs if x is not None]
        return round(max(xs), 4) if xs else None

    q = {f"pooled_p{int(p * 100)}_s": histogram_quantile(p, pooled) for p in (0.5, 0.95, 0.99)}
    return {
        **{k: None if v is None else round(v, 4) for k, v in q.items()},
        "pooled_beyond_top_bucket": [f"p{int(p * 100)}" for p in (0.5, 0.95, 0.99) if beyond_top(p, pooled)],
        "pooled_frames": int(seen),
        "pooled_coverage": round(seen / ok, 3) if ok else None,  # the last scrape misses the final frames
        "agent_p50_median_s": med([c.latency_p50_s for c in counts]),
        "agent_p95_median_s": med([c.latency_p95_s for c in counts]),
        "agent_p95_max_s": top([c.latency_p95_s for c in counts]),
        "agent_p99_max_s": top([c.latency_p99_s for c in counts]),
    }


def run_streams(opts: argparse.Namespace, root: Path, flags: AgentFlags) -> LoadResult:
    run_dir = opts.logs / "streams"
    run_dir.mkdir(parents=True, exist_ok=True)
    deadline = Deadline(opts.deadline_s or 3 * opts.seconds + 300)
    until_stopped = flags.fps and flags.until_sigterm
    frames = 0 if until_stopped else max(1, round(opts.fps * opts.seconds))
    if until_stopped:
        mode = f"paced at --fps {opts.fps:g}, --frames 0, SIGTERM {opts.seconds:g} s after each agent's READY"
    elif flags.fps:
        mode = f"paced at --fps {opts.fps:g}, --frames {frames} (the agent cannot stream until SIGTERM)"
    else:
        mode = f"unpaced: the agent has no --fps, so each is asked for {frames} frames, sent as fast as its window allows"
    notes: list[str] = []
    t_wall = time.perf_counter()
    reports: dict[str, Path] = {}
    with Cluster(root, opts.python, run_dir, opts.sample_s, scrape_timeout_s=2.0) as c:
        cloud = c.start_service("cloud", "cloud", ["cloud-server", "--insecure", "--port", "0", "--metrics-port", "0",
                                                   "--db", str(run_dir / "cloud.sqlite3")], deadline)
        edges = [c.start_service("edge", f"edge-{i}", ["edge-node", "--insecure", "--cloud", cloud.target, "--port", "0", "--metrics-port", "0"],
                                 deadline) for i in range(opts.edges)]
        c.start_tracker()
        t_spawn = c.now()
        agents = []
        for i in range(opts.streams):
            name = f"agent-{i:03d}"
            reports[name] = run_dir / f"{name}.report.json"
            args = ["device-agent", "--insecure", "--cloud", cloud.target, "--name", name, "--frames", str(frames),
                    "--report", str(reports[name]), "--metrics-port", "0"]
            if flags.fps and opts.fps > 0:
                args += ["--fps", str(opts.fps)]
            agents.append(c.spawn("agent", name, args))
        c.wait_until(lambda: all(a.ready or not a.alive for a in agents), deadline, 300.0)
        started = [a for a in agents if a.ready]
        if len(started) < len(agents):
            notes.append(f"{len(agents) - len(started)} agents never printed READY")
        startup_s = max((a.t_ready for a in started), default=c.now()) - t_spawn
        if until_stopped:
            for a in sorted(started, key=lambda a: a.t_ready):
                pace(a.t_ready + opts.seconds - c.now(), deadline)
                c.sample([a])  # its latency histogram as late as can be
                c.signal(a, signal.SIGTERM)
        c.wait_exit(agents, deadline)
        c.sample()
        deadline_hit = any(a.alive for a in agents)
        window = (min((a.t_ready for a in started), default=0.0), c.now())
        window = (window[0], max((a.t_exit for a in agents if a.t_exit is not None), default=window[1]))
    counts = [agent_count(a, frames, reports[a.name], stopped=until_stopped) for a in agents]
    tot = totals(counts)
    window_s = window[1] - window[0]
    usage = {
        "cloud": {**tier_usage([cloud]), "cpu_window_s": cpu_between(cloud, *window)},
        "edge": {**tier_usage(edges), "cpu_window_s": sum(x or 0 for x in (cpu_between(e, *window) for e in edges))},
        "agents": tier_usage(agents),
    }
    codes: dict[str, int] = {}
    for t in c.tiers:
        codes[str(t.returncode)] = codes.get(str(t.returncode), 0) + 1
    return LoadResult(
        streams=opts.streams, seconds=opts.seconds, fps=opts.fps, mode=mode, expected=round(opts.streams * opts.seconds * opts.fps),
        totals=tot, latency=latency_summary(agents, counts), throughput_fps=round(tot.answered / window_s, 1) if window_s > 0 else 0.0,
        peak_fps=round(peak_rate(cloud.samples, opts.peak_window_s), 1), window_s=round(window_s, 1), startup_s=round(startup_s, 1),
        usage=usage, exit_codes=codes, deadline_hit=deadline_hit, elapsed_s=round(time.perf_counter() - t_wall, 1),
        logs=str(run_dir), notes=notes, agents=counts,
    )


def print_streams(r: LoadResult) -> None:
    t, lat = r.totals, r.latency

    def s(v: float | None, name: str = "") -> str:
        at_least = ">=" if name in lat.get("pooled_beyond_top_bucket", []) else ""
        return "-" if v is None else f"{at_least}{v:.3f}"

    print(f"\n== {r.streams} streams x {r.seconds:g} s x {r.fps:g} fps; {r.mode}")
    print(f"   answered {t.answered} of {r.expected} expected (sent {t.sent}, asked {t.asked or 'until stopped'}); "
          f"lost {t.lost}, never sent {t.unsent}, duplicated {t.duplicated}, errors {t.errors}; "
          f"{t.without_report} agents without a report")
    print(f"   latency pooled p50/p95/p99 {s(lat['pooled_p50_s'], 'p50')}/{s(lat['pooled_p95_s'], 'p95')}/"
          f"{s(lat['pooled_p99_s'], 'p99')} s "
          f"(histograms, {lat['pooled_frames']} frames); per agent: median p50 {s(lat['agent_p50_median_s'])} s, "
          f"median p95 {s(lat['agent_p95_median_s'])} s, worst p95 {s(lat['agent_p95_max_s'])} s, worst p99 {s(lat['agent_p99_max_s'])} s")
    print(f"   throughput {r.throughput_fps} frames/s over {r.window_s} s (first READY to last exit), peak {r.peak_fps} frames/s; "
          f"agents started in {r.startup_s} s")
    print(f"   {'tier':<7} {'procs':>5} {'CPU s':>8} {'CPU s in window':>15} {'peak RSS MB':>11} {'RSS MB, all':>11}")
    for name, u in r.usage.items():
        window = "-" if u.get("cpu_window_s") is None else f"{u['cpu_window_s']:.1f}"
        print(f"   {name:<7} {u['processes']:>5} {u['cpu_s']:>8.1f} {window:>15} {u['rss_peak_mb_max']:>11.0f} {u['rss_peak_mb_sum']:>11.0f}")
    print(f"   exit codes: {r.exit_codes}; deadline hit: {r.deadline_hit}; {r.elapsed_s:.0f} s; logs {r.logs}")
    for note in r.notes:
        print(f"   note: {note}")


# --- one oversized frame -------------------------------------------------------------------------


def run_oversized(opts: argparse.Namespace, root: Path) -> OversizedResult:
    import grpc
    from ecd.v1 import ecd_pb2 as pb
    from ecd.v1 import ecd_pb2_grpc as pb_grpc

    run_dir = opts.logs / "oversized"
    run_dir.mkdir(parents=True, exist_ok=True)
    deadline = Deadline(opts.deadline_s or 300)
    t_wall = time.perf_counter()
    cap = opts.rss_cap_mb * MB
    killed: list[str] = []
    limit = 64 * MB
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    with Cluster(root, opts.python, run_dir, sample_s=0.2) as c:

        def guard(tier: Tier, s: Sample) -> None:
            if s.rss_bytes and s.rss_bytes > cap and c.signal(tier, signal.SIGKILL):
                killed.append(f"{tier.name} at {s.rss_bytes / MB:.0f} MB")

        c.guards.append(guard)
        cloud = c.start_service("cloud", "cloud", ["cloud-server", "--insecure", "--port", "0", "--metrics-port", "0",
                                                   "--db", str(run_dir / "cloud.sqlite3")], deadline)
        edge = c.start_service("edge", "edge-0", ["edge-node", "--insecure", "--cloud", cloud.target, "--port", "0", "--metrics-port", "0"], deadline)
        c.start_tracker()
        with grpc.insecure_channel(cloud.target, options=options) as ch:
            a = pb_grpc.CloudServerStub(ch).RegisterDevice(pb.RegisterDeviceRequest(
                device_name="oversized", profile="pi4", radio="wifi",
                preferences=pb.Preferences(w_energy=1.0, w_privacy=0.0, min_split=0),
                model_id="digits_cnn", split_device=0, encoding=pb.INT8_AFFINE), timeout=30)

        def frame(frame_id: int, images: int) -> pb.Frame:
            data = np.random.default_rng(frame_id).integers(-128, 128, images * 32 * 32, dtype=np.int8).tobytes()
            return pb.Frame(device_id=a.device_id, frame_id=frame_id, token=a.token, model_id=a.model_id,
                            model_version=a.model_version, split_device=0, captured_unix_ns=time.time_ns(),
                            tensor=pb.Tensor(encoding=pb.INT8_AFFINE, shape=[images, 1, 32, 32], data=data,
                                             scale=1 / 64, zero_point=0))

        def send(msg: pb.Frame, timeout_s: float) -> tuple[str, str]:
            try:
                with grpc.insecure_channel(edge.target, options=options) as ch:
                    for result in pb_grpc.EdgeNodeStub(ch).Stream(iter([msg]), timeout=timeout_s):
                        if result.HasField("error") and result.error.code:
                            return _code_name(result.error.code), result.error.message
                        return "OK", ""
                return "NO RESULT", "the stream ended without a result"
            except grpc.RpcError as e:
                return f"RPC {e.code().name}", e.details() or ""

        c.sample()
        rss_before = edge.rss_peak_bytes
        big = frame(1, opts.images)
        t0 = time.perf_counter()
        status, message = send(big, deadline.left(opts.oversized_timeout_s))
        seconds = time.perf_counter() - t0
        c.sample()
        follow = send(frame(2, 1), deadline.left(30))[0] if edge.alive else "edge gone"
        c.sample()
        edge_alive, cloud_alive = edge.alive, cloud.alive
    edge_peak, cloud_peak = edge.rss_peak_bytes / MB, cloud.rss_peak_bytes / MB
    return OversizedResult(
        images=opts.images, tensor_bytes=len(big.tensor.data), status=status, message=message[:300], seconds=round(seconds, 2),
        edge_rss_before_mb=round(rss_before / MB, 1), edge_rss_peak_mb=round(edge_peak, 1), cloud_rss_peak_mb=round(cloud_peak, 1),
        killed_at_cap=killed, edge_alive_after=edge_alive, cloud_alive_after=cloud_alive, follow_up_status=follow,
        passed=status == "RESOURCE_EXHAUSTED" and edge_peak < 500 and cloud_peak < 500 and follow == "OK",
        logs=str(run_dir), elapsed_s=round(time.perf_counter() - t_wall, 1),
    )


def _code_name(code: int) -> str:
    import grpc

    return next((s.name for s in grpc.StatusCode if s.value[0] == code), str(code))


def print_oversized(r: OversizedResult) -> None:
    print(f"\n== one frame of {r.images} int8 images at split 0 ({r.tensor_bytes / MB:.0f} MiB tensor)")
    print(f"   status {r.status} after {r.seconds:.2f} s: {r.message[:160]}")
    print(f"   edge RSS {r.edge_rss_before_mb:.0f} MB before, peak {r.edge_rss_peak_mb:.0f} MB; cloud peak {r.cloud_rss_peak_mb:.0f} MB"
          f"{'; killed at the RSS cap: ' + ', '.join(r.killed_at_cap) if r.killed_at_cap else ''}")
    print(f"   afterwards: edge {'alive' if r.edge_alive_after else 'GONE'}, cloud {'alive' if r.cloud_alive_after else 'GONE'}, "
          f"a one-image frame got {r.follow_up_status}")
    print(f"   {'PASS' if r.passed else 'FAIL'} (target: RESOURCE_EXHAUSTED, edge and cloud under 500 MB)  "
          f"({r.elapsed_s:.0f} s, logs {r.logs})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--generator", choices=["streams", "agents"], default="streams",
                        help="streams: every device a stream of one generator process (_load_streams.py); agents: one device "
                             "agent process per stream (the generator then costs more CPU than the tiers on 2 cores)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second per stream")
    parser.add_argument("--edges", type=int, default=1)
    parser.add_argument("--oversized", action="store_true", help="send one oversized frame instead of the streams")
    parser.add_argument("--images", type=int, default=16384, help="images in the oversized frame (32x32 int8 each)")
    parser.add_argument("--oversized-timeout-s", type=float, default=180.0)
    parser.add_argument("--rss-cap-mb", type=float, default=8000.0, help="kill a tier whose RSS passes this (the machine is shared)")
    parser.add_argument("--deadline-s", type=float, default=0.0, help="hard limit on the run (default: 3 x seconds + 300)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between two samples of every tier")
    parser.add_argument("--peak-window-s", type=float, default=5.0)
    parser.add_argument("--root", type=Path, default=Path("."), help="the checkout whose tiers run (default: the current directory)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter the tiers run under")
    parser.add_argument("--logs", type=Path, default=None, help="where logs, reports and registries go (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="default results/load.json, or results/load_oversized.json")
    opts = parser.parse_args()
    root, code, flags = start_harness(opts, "ecd-load-")
    t0 = time.perf_counter()
    if opts.oversized:
        result: LoadResult | OversizedResult = run_oversized(opts, root)
        print_oversized(result)
        ok = result.passed
    elif opts.generator == "streams":
        run_dir = opts.logs / "streams"
        run_dir.mkdir(parents=True, exist_ok=True)
        generated = run_generator(opts, root, run_dir)
        print_generator(generated)
        write_results(opts.out or Path("results/load.json"), code, flags, opts, t0, result=generated)
        return 0 if generated.get("unanswered") == 0 and generated.get("written") == generated.get("answered") else 1
    else:
        result = run_streams(opts, root, flags)
        print_streams(result)
        ok = result.totals.lost == 0 and result.totals.unsent == 0 and not result.deadline_hit
    out_path = opts.out or Path("results/load_oversized.json" if opts.oversized else "results/load.json")
    write_results(out_path, code, flags, opts, t0, result=asdict(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
