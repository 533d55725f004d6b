"""Oversized and flooding control calls against a running cloud, and what they cost other devices'
streams: a device agent streams through an edge node while a hostile client sends the calls of the
security issue in a loop — a head with 10^6 labels, a 50 MB profile, 1-byte download chunks, a
10 MB device name, registrations as fast as it can. Cloud and edge run as their own processes.

Prints each call's status and time to refusal, and the agent's answered frames per second without
and during the abuse, measured in the same run; writes JSON (``--out``).

The attacker is its own process (this script with ``--attack``): in the first version it was a
thread beside the measured agent, so building 10^6-label messages and 50 MB strings took the
agent's GIL and the figure measured the benchmark, not the services. On this 2-core machine the
attacker's own CPU still competes with the services for the two cores, which a remote attacker's
would not: ``--attacker-nice 19`` (the default) runs it at the lowest priority to stand in for a
machine of its own; ``--attacker-nice 0`` shows the shared-machine case.

    python benchmarks/control_abuse.py [--seconds 10] [--attacker-nice 19] [--out results/control_abuse.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.launch import _cli, _start, _stop
from ecd.transport.rpc import wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

BIG = 64 * 2**20


def registration(**kw) -> pb.RegisterDeviceRequest:
    fields = dict(device_name="d", profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
                  model_id="digits_cnn", split_device=2, encoding=pb.FLOAT32)
    return pb.RegisterDeviceRequest(**{**fields, **kw})


def abuses(stub: pb_grpc.CloudServerStub) -> dict:
    labels = ["x"] * 10**6
    return {
        "AddHead, 10^6 labels": lambda: stub.AddHead(pb.HeadSpec(model_id="digits_cnn", name="huge", labels=labels, weight=[0.0],
                                                                   input=pb.HeadSpec.LOGITS), timeout=60),
        "RegisterDevice, 50 MB profile": lambda: stub.RegisterDevice(registration(profile="#" * (50 * 2**20)), timeout=60),
        "FetchPartition, 1-byte chunks": lambda: list(stub.FetchPartition(pb.FetchPartitionRequest(model_id="digits_cnn", stop=6,
                                                                                                   max_chunk_bytes=1), timeout=60)),
        "RegisterDevice, 10 MB name": lambda: stub.RegisterDevice(registration(device_name="n" * 10**7), timeout=60),
        "RegisterDevice, flood": lambda: stub.RegisterDevice(registration(), timeout=60),
    }


def call(fn) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        fn()
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    return code, time.perf_counter() - t0


def stream_fps(agent: DeviceAgent, seconds: float) -> float:
    """Frames the agent gets answered per second, streaming back to back for ``seconds``."""
    stop = time.monotonic() + seconds
    n, t0 = 0, time.perf_counter()
    while time.monotonic() < stop:
        n += len(agent.run(heldout("digits_cnn", 20)))
    return n / (time.perf_counter() - t0)


def attack(target: str, seconds: float, out: str) -> int:
    """The attacker process: every abuse in turn, for ``seconds``; statuses and times to ``out``."""
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", BIG),
                                                     ("grpc.max_receive_message_length", BIG)])
    calls = abuses(pb_grpc.CloudServerStub(channel))
    results: dict[str, list] = {}
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        for name, fn in calls.items():
            results.setdefault(name, []).append(call(fn))
    channel.close()
    Path(out).write_text(json.dumps(results))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--attacker-nice", type=int, default=19, help="the attacker process's niceness (19: a stand-in for a machine of its own)")
    p.add_argument("--out", default="")
    p.add_argument("--attack", metavar="TARGET", help=argparse.SUPPRESS)  # the attacker process
    p.add_argument("--attack-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.attack:
        return attack(args.attack, args.seconds, args.attack_out)
    procs = []
    with tempfile.TemporaryDirectory(prefix="ecd-abuse-") as tmp:
        d = Path(tmp)
        try:
            cloud, c = _start(_cli("cloud-server", "--insecure", "--port", "0", "--metrics-port", "-1", "--db", str(d / "c.sqlite3"),
                                   "--max-message-bytes", str(BIG)), d / "cloud.log")
            procs.append(("cloud-server", cloud))
            target = f"127.0.0.1:{c['port']}"
            wait_healthy(target)
            edge, e = _start(_cli("edge-node", "--insecure", "--cloud", target, "--port", "0", "--metrics-port", "-1",
                                  "--model-dir", str(d / "edge")), d / "edge.log")
            procs.append(("edge-node", edge))
            wait_healthy(f"127.0.0.1:{e['port']}")
            agent = DeviceAgent(AgentConfig(cloud=target, split=3, model_dir=str(d / "agent")))
            agent.connect()
            quiet = stream_fps(agent, args.seconds)
            nice = args.attacker_nice
            attacker = subprocess.Popen([sys.executable, __file__, "--attack", target, "--seconds", str(args.seconds),
                                         "--attack-out", str(d / "attack.json")], preexec_fn=lambda: os.nice(nice))
            loud = stream_fps(agent, args.seconds)
            if attacker.wait(180) != 0:
                raise RuntimeError(f"the attacker process failed ({attacker.returncode})")
            results: dict[str, list] = json.loads((d / "attack.json").read_text())
            agent.close()
        finally:
            for name, proc in reversed(procs):
                _stop(proc, name)
    print(f"{'call':<32} {'calls':>5}  {'statuses':<40} {'max s to answer':>15}")
    report = {"fps_quiet": quiet, "fps_during_abuse": loud, "ratio": loud / quiet, "attacker_nice": args.attacker_nice, "calls": {}}
    for name, rows in results.items():
        statuses: dict[str, int] = {}
        for code, _ in rows:
            statuses[code] = statuses.get(code, 0) + 1
        worst = max(s for _, s in rows)
        report["calls"][name] = {"statuses": statuses, "max_seconds": worst}
        print(f"{name:<32} {len(rows):>5}  {json.dumps(statuses):<40} {worst:>15.3f}")
    print(f"\nanother device's stream: {quiet:.1f} frames/s quiet, {loud:.1f} during the abuse (ratio {loud / quiet:.2f}; "
          f"attacker process at nice {args.attacker_nice})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
