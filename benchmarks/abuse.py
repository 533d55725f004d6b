"""A device that attacks its own fleet's data plane (issue 30): one registered device (a valid
token, as a member of the fleet holds) floods its edge node while another device streams beside it.

Attacks, each for ``--seconds``, from an attacker process of its own:

* ``flood-read``   — 20 streams of the one device, each sending frames back to back and reading
  the answers;
* ``flood-unread`` — the same, never reading an answer;
* ``oversized``    — 8 streams at once, each one frame whose tensor is 60 MiB;
* ``gzip``         — 8 streams at once, each one gzip-compressed frame (60 KiB on the wire) that
  inflates to 60 MiB.

For each attack: the other device's answered frames per second idle and during, measured in the
same run (acceptance: >= 50 % of idle). A flood comes and goes: ``--cycles`` idle phases alternate
with as many flood phases, ``--seconds`` of each in all; the flood's streams are cancelled at the
end of each of its phases, and each phase's first ``SETTLE_S`` is not counted. Phases side by side
see the same other work on the machine, which drifts: measured in one block each, ten seconds
apart, the other device's idle rate moved by up to 60 % between a measure before a flood and one
after it. Then: the statuses the attacker got (each flood phase's streams counted), the peak RSS of
the edge node and the cloud (acceptance: < 500 MB each), and whether both still serve afterwards.
Cloud and edge run as their own processes on loopback; the measured device is a device agent in
this process; the attacker runs at ``--attacker-nice`` (19: a stand-in for a machine of its own,
as on this 2-core machine it would otherwise take the services' CPU).

    python benchmarks/abuse.py [--attacks flood-read flood-unread oversized gzip] [--seconds 10]
        [--cycles 5] [--attacker-nice 19] [--out results/abuse.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
from control_abuse import heldout, stream_fps  # the same measure of another device's stream

from device_agent.agent import AgentConfig, DeviceAgent
from ecd.launch import _cli, _start, _stop
from ecd.transport.rpc import wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

ATTACKS = ("flood-read", "flood-unread", "oversized", "gzip")
FLOOD_STREAMS = 20
BIG_FRAMES = 8
BIG_BYTES = 60 * 2**20
RSS_TARGET_BYTES = 500 * 10**6
SETTLE_S = 0.3  # not counted at the start of each phase of a flood that comes and goes
LEAD_S = 3.0  # the attacker process starts and opens its streams before the first phase
CODE_NAMES = {s.value[0]: s.name for s in grpc.StatusCode}
WIRE = [("grpc.max_send_message_length", 2**30), ("grpc.max_receive_message_length", 2**30)]


# --- the attacker process ------------------------------------------------------------------------


def register(cloud: str) -> pb.Assignment:
    with grpc.insecure_channel(cloud) as ch:
        return pb_grpc.CloudServerStub(ch).RegisterDevice(pb.RegisterDeviceRequest(
            device_name="attacker", profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
            model_id="digits_cnn", split_device=0, encoding=pb.FLOAT32), timeout=30)


def frame(a: pb.Assignment, frame_id: int, data: bytes, shape: list[int]) -> pb.Frame:
    return pb.Frame(device_id=a.device_id, frame_id=frame_id, token=a.token, model_id=a.model_id,
                    model_version=a.model_version, split_device=0,
                    tensor=pb.Tensor(encoding=pb.FLOAT32, shape=shape, data=data))


def in_threads(n: int, one) -> dict[str, int]:
    """``one(k)`` for k in 0..n-1, each in a thread of its own; how many ended with each status."""
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def run(k: int) -> None:
        code = one(k)
        with lock:
            statuses[code] = statuses.get(code, 0) + 1

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def phases(t0: float, phase_s: float, cycles: int) -> list[tuple[float, float, bool]]:
    """(start, end, flooded) of each phase, in time.time(): idle first, then flooded, ``cycles`` times."""
    return [(t0 + k * phase_s, t0 + (k + 1) * phase_s, k % 2 == 1) for k in range(2 * cycles)]


def flood(a: pb.Assignment, schedule: list[tuple[float, float, bool]], read: bool) -> dict[str, int]:
    """In each flooded phase of ``schedule``: FLOOD_STREAMS streams of valid frames, back to back,
    the answers read or never read, cancelled at the phase's end (so the frames still buffered on
    the way are dropped, not served in the idle phase after it); how many ended with each status."""
    statuses: dict[str, int] = {}
    for start, end, flooded in schedule:
        if flooded:
            time.sleep(max(0.0, start - time.time()))
            for code, n in flood_phase(a, end, read).items():
                statuses[code] = statuses.get(code, 0) + n
    return statuses


def flood_phase(a: pb.Assignment, stop: float, read: bool) -> dict[str, int]:
    from ecd import zoo

    shape = [1, *zoo.load_manifest("digits_cnn").input.shape]
    data = np.zeros(shape, np.float32).tobytes()

    def one(k: int) -> str:
        def frames():
            i = k * 10**9
            while time.time() < stop:
                i += 1
                yield frame(a, i, data, shape)

        with grpc.insecure_channel(a.edge_endpoint, options=WIRE) as ch:
            call = pb_grpc.EdgeNodeStub(ch).Stream(frames(), timeout=stop - time.time() + 30)
            try:
                if read:
                    for _ in call:
                        if time.time() >= stop:
                            break
                else:
                    time.sleep(max(0.0, stop - time.time()))
                code = call.code().name if call.done() else "open until cancelled"
                call.cancel()
            except grpc.RpcError as e:
                code = e.code().name
        return code

    return in_threads(FLOOD_STREAMS, one)


def big(a: pb.Assignment, compress: bool) -> dict[str, int]:
    """BIG_FRAMES streams at once, each one frame of BIG_BYTES (zeros: gzip makes it ~60 KiB)."""
    data = bytes(BIG_BYTES)
    shape = [1, BIG_BYTES // 4]

    def one(k: int) -> str:
        code = "OK"
        with grpc.insecure_channel(a.edge_endpoint, options=WIRE) as ch:
            try:
                kwargs = {"compression": grpc.Compression.Gzip} if compress else {}
                for r in pb_grpc.EdgeNodeStub(ch).Stream(iter([frame(a, k + 1, data, shape)]), timeout=60, **kwargs):
                    code = CODE_NAMES.get(r.error.code, str(r.error.code)) if r.HasField("error") else "OK"
            except grpc.RpcError as e:
                code = e.code().name
        return code

    return in_threads(BIG_FRAMES, one)


def attack(cloud: str, kind: str, schedule: list[tuple[float, float, bool]], out: str) -> int:
    a = register(cloud)
    if kind in ("flood-read", "flood-unread"):
        statuses = flood(a, schedule, read=kind == "flood-read")
    else:
        statuses = big(a, compress=kind == "gzip")
    Path(out).write_text(json.dumps(statuses))
    return 0


# --- the measuring side --------------------------------------------------------------------------


class PeakRss:
    """The peak resident memory of some processes, sampled every 50 ms in a thread."""

    def __init__(self, pids: dict[str, int]):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for name, p in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], p.memory_info().rss)
                except psutil.Error:
                    pass

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peak


def serving(target: str) -> bool:
    try:
        wait_healthy(target, timeout_s=10)
        return True
    except Exception:
        return False


def phased_fps(agent: DeviceAgent, schedule: list[tuple[float, float, bool]]) -> tuple[float, float]:
    """The agent's answered frames per second in the idle phases and in the flooded ones of
    ``schedule``, streaming back to back; each phase's first SETTLE_S is not counted."""
    counted = {False: [0, 0.0], True: [0, 0.0]}  # flooded -> frames, seconds
    for start, end, flooded in schedule:
        time.sleep(max(0.0, start + SETTLE_S - time.time()))
        n, t0 = 0, time.perf_counter()
        while time.time() < end:
            n += len(agent.run(heldout("digits_cnn", 20)))
        counted[flooded][0] += n
        counted[flooded][1] += time.perf_counter() - t0
    return counted[False][0] / counted[False][1], counted[True][0] / counted[True][1]


def run_attack(kind: str, args: argparse.Namespace, d: Path, cloud: str, edge: str, pids: dict[str, int],
               agent: DeviceAgent) -> dict:
    comes_and_goes = kind.startswith("flood")
    quiet = 0.0 if comes_and_goes else stream_fps(agent, args.seconds)
    rss = PeakRss(pids)
    nice = args.attacker_nice
    out = d / f"{kind}.json"
    t0 = time.time() + LEAD_S
    schedule = phases(t0, args.seconds / args.cycles, args.cycles) if comes_and_goes else [(t0, t0 + args.seconds, True)]
    # niceness by `nice`, not preexec_fn: a fork of this process (gRPC threads running) must not run Python code
    attacker = subprocess.Popen(["nice", "-n", str(nice), sys.executable, __file__, "--attack", kind, "--cloud", cloud,
                                 "--schedule", json.dumps(schedule), "--attack-out", str(out)])
    if comes_and_goes:
        quiet, loud = phased_fps(agent, schedule)
    else:
        loud = stream_fps(agent, args.seconds)
    code = attacker.wait(300)
    peak = rss.stop()
    statuses = json.loads(out.read_text()) if out.exists() else {"attacker failed": code}
    alive = {"edge": serving(edge), "cloud": serving(cloud)}
    failures = [f"the attacker process failed (exit {code})"] if code != 0 else []
    if kind.startswith("flood") and loud < 0.5 * quiet:
        failures.append(f"the other device kept {loud / quiet:.0%} of its idle throughput (target >= 50 %)")
    if kind in ("oversized", "gzip") and statuses.get("OK"):
        failures.append(f"{statuses['OK']} oversized frames answered OK")
    failures += [f"{name} peak RSS {b / 1e6:.0f} MB (target < {RSS_TARGET_BYTES / 1e6:.0f} MB)"
                 for name, b in peak.items() if b >= RSS_TARGET_BYTES]
    failures += [f"{name} no longer serves" for name, ok in alive.items() if not ok]
    return {"attack": kind, "fps_idle": quiet, "fps_during": loud, "ratio": loud / quiet, "statuses": statuses,
            "peak_rss_bytes": peak, "serving_after": alive, "passed": not failures, "failures": failures}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    p.add_argument("--seconds", type=float, default=10.0, help="how long each attack floods (and, for a flood, how long it is idle)")
    p.add_argument("--cycles", type=int, default=5, help="a flood comes and goes this many times (idle, flooded; ... each --seconds/--cycles)")
    p.add_argument("--attacker-nice", type=int, default=19, help="the attacker process's niceness (19: a stand-in for a machine of its own)")
    p.add_argument("--edge-flags", default="", help="extra edge-node flags, e.g. '--max-device-frames 16'")
    p.add_argument("--out", default="")
    p.add_argument("--attack", choices=ATTACKS, help=argparse.SUPPRESS)  # the attacker process
    p.add_argument("--cloud", help=argparse.SUPPRESS)
    p.add_argument("--schedule", help=argparse.SUPPRESS)
    p.add_argument("--attack-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.attack:
        return attack(args.cloud, args.attack, [tuple(p) for p in json.loads(args.schedule)], args.attack_out)
    extra = ["--insecure"]  # plaintext on loopback
    procs = []
    results = []
    with tempfile.TemporaryDirectory(prefix="ecd-abuse-") as tmp:
        d = Path(tmp)
        try:
            cloud_proc, c = _start(_cli("cloud-server", "--port", "0", "--metrics-port", "-1", "--db", str(d / "c.sqlite3"),
                                        *extra), d / "cloud.log")
            procs.append(("cloud-server", cloud_proc))
            cloud = f"127.0.0.1:{c['port']}"
            wait_healthy(cloud)
            edge_proc, e = _start(_cli("edge-node", "--cloud", cloud, "--port", "0", "--metrics-port", "-1",
                                       "--model-dir", str(d / "edge"), *extra, *args.edge_flags.split()), d / "edge.log")
            procs.append(("edge-node", edge_proc))
            edge = f"127.0.0.1:{e['port']}"
            wait_healthy(edge)
            agent = DeviceAgent(AgentConfig(cloud=cloud, split=3, model_dir=str(d / "agent")))
            agent.connect()
            pids = {"edge": edge_proc.pid, "cloud": cloud_proc.pid}
            for kind in args.attacks:
                r = run_attack(kind, args, d, cloud, edge, pids, agent)
                results.append(r)
                print(f"{kind:<13} other device {r['fps_idle']:7.1f} -> {r['fps_during']:7.1f} frames/s ({r['ratio']:.0%}); "
                      f"attacker got {json.dumps(r['statuses'])}; peak RSS edge {r['peak_rss_bytes']['edge'] / 1e6:.0f} MB, "
                      f"cloud {r['peak_rss_bytes']['cloud'] / 1e6:.0f} MB; {'PASS' if r['passed'] else 'FAIL: ' + '; '.join(r['failures'])}",
                      flush=True)
                if not all(r["serving_after"].values()):
                    break
            agent.close()
        finally:
            for name, proc in reversed(procs):
                _stop(proc, name)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"attacker_nice": args.attacker_nice, "seconds": args.seconds, "cycles": args.cycles,
                                              "results": results},
                                             indent=2))
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
