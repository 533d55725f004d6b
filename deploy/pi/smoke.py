"""The system part of ``make pi-smoke`` (deploy/pi/pi-smoke.sh sets up the arm64 userland).

A cloud server runs on this host; an edge node and a device agent run inside the arm64 Debian
userland at ``--root`` (arm64 code, emulated by qemu-user), all on 127.0.0.1 (a chroot shares the
host's network). The device streams ``--frames`` held-out images end to end. Printed: the
per-block latency table (``ecd profile`` inside the userland), frames answered, accuracy, each
tier's compute per frame, the device agent's RSS, what the services' metrics counted, and whether
both servers stopped cleanly on SIGTERM. Exits 1 if any frame went unanswered or wrong beyond the
model's known accuracy, or a server did not stop cleanly.

Run with the Python of the host's cloud install (``.venv-cloud/bin/python``): the cloud server is
that environment's ``ecd`` command, and this script imports ``ecd`` for the health check and
``prometheus_client`` and ``psutil`` to read the services.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from ecd.transport.rpc import wait_healthy

QEMU_CPU = "cortex-a72"  # a Raspberry Pi 4's core
MIN_ACCURACY = 0.95  # the bundled model: 0.9972 on the held-out images (x86-64)
NOTE = ("emulated timings: qemu-user on this host's CPU; they say nothing about a real Raspberry Pi "
        "(run the same agent on one: deploy/README.md)")


def in_pi(root: Path, *args: str) -> list[str]:
    """A command line that runs ``args`` inside the userland with a clean environment."""
    return ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/opt/ecd/bin:/usr/bin:/bin", "HOME=/root",
            "LANG=C.UTF-8", f"QEMU_CPU={QEMU_CPU}", *args]


def pi_env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": QEMU_CPU, "LANG": "C.UTF-8"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path, name: str, timeout_s: float, env: dict | None = None) -> tuple[subprocess.Popen, dict]:
    """Start a service and read its READY line (JSON with the bound ports)."""
    with open(log, "w") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        ready = json.loads(lines.get(timeout=timeout_s))
    except (queue.Empty, json.JSONDecodeError):
        proc.kill()
        proc.wait()
        sys.exit(f"pi-smoke: {name} did not start within {timeout_s:.0f} s; its log:\n{log.read_text()[-3000:]}")
    return proc, ready


def stop(proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def mean_ms(samples: dict, service: str, stage: str) -> float:
    n = metric(samples, "ecd_stage_seconds_count", service=service, stage=stage)
    return 1e3 * metric(samples, "ecd_stage_seconds_sum", service=service, stage=stage) / n if n else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="the arm64 userland, with the runtime in /opt/ecd")
    ap.add_argument("--work", type=Path, required=True, help="a folder for the cloud's database and the logs")
    ap.add_argument("--frames", type=int, default=360)
    ap.add_argument("--split", type=int, default=2, help="split.device: the Pi runs blocks [0, split)")
    ap.add_argument("--profile-runs", type=int, default=20)
    args = ap.parse_args()
    root, work = args.root.resolve(), args.work.resolve()
    t0 = time.perf_counter()
    env = pi_env()

    print(f"pi-smoke: {NOTE}", flush=True)
    t = time.perf_counter()
    prof = subprocess.run(in_pi(root, "ecd", "profile", "--model", "digits_cnn", "--like", "pi4", "--name", "pi4-emulated",
                                "--out", "/tmp/pi4-emulated.toml", "--runs", str(args.profile_runs)),
                          check=False, capture_output=True, text=True, env=env, timeout=600)
    if prof.returncode != 0:
        sys.exit(f"pi-smoke: `ecd profile` in the userland failed:\n{prof.stdout}{prof.stderr}")
    print(f"per-block latency, arm64 under emulation (ecd profile, median of {args.profile_runs} runs, batch 1; "
          f"{time.perf_counter() - t:.1f} s with the imports):")
    print(prof.stdout.rstrip())

    procs: list[tuple[str, subprocess.Popen]] = []
    codes: dict[str, int] = {}
    try:
        host_ecd = str(Path(sys.executable).parent / "ecd")  # the installed command, not a checkout's modules
        cloud, c = start([host_ecd, "cloud-server", "--insecure", "--port", "0", "--metrics-port", "0",
                          "--db", str(work / "cloud.sqlite3")], work / "cloud.log", "cloud-server (host)", 60)
        procs.append(("cloud-server", cloud))
        cloud_target = f"127.0.0.1:{c['port']}"
        wait_healthy(cloud_target)
        t = time.perf_counter()
        edge, e = start(in_pi(root, "ecd", "edge-node", "--insecure", "--cloud", cloud_target, "--port", "0", "--metrics-port", "0",
                              "--model-dir", "/var/lib/ecd/edge"), work / "edge.log", "edge-node (arm64)", 300, env)
        procs.append(("edge-node", edge))
        wait_healthy(f"127.0.0.1:{e['port']}", timeout_s=120)
        edge_start_s = time.perf_counter() - t

        agent_metrics = free_port()
        t = time.perf_counter()
        with open(work / "agent.log", "w") as err:
            agent = subprocess.Popen(
                in_pi(root, "ecd", "device-agent", "--insecure", "--cloud", cloud_target, "--name", "pi4-emulated", "--profile", "pi4",
                      "--radio", "wifi", "--split", str(args.split), "--frames", str(args.frames), "--metrics-port", str(agent_metrics),
                      "--model-dir", "/var/lib/ecd/agent", "--report", "/tmp/agent-report.json"),
                stdout=subprocess.DEVNULL, stderr=err, env=env)
        procs.append(("device-agent", agent))
        peak_rss, last_agent = 0, {}  # the agent's metrics, scraped while it runs (it exits when done)
        deadline = time.monotonic() + 900
        while agent.poll() is None:
            if time.monotonic() > deadline:
                sys.exit("pi-smoke: the device agent did not finish within 900 s")
            try:
                peak_rss = max(peak_rss, psutil.Process(agent.pid).memory_info().rss)
            except psutil.Error:
                pass
            try:
                last_agent = scrape(agent_metrics) or last_agent
            except OSError:
                pass  # not listening yet (it starts after registering), or busy
            time.sleep(0.5)
        agent_s = time.perf_counter() - t
        if agent.returncode != 0:
            sys.exit(f"pi-smoke: the device agent exited {agent.returncode}; its log:\n{(work / 'agent.log').read_text()[-3000:]}")
        report = json.loads((root / "tmp" / "agent-report.json").read_text())
        edge_m, cloud_m = scrape(e["metrics_port"]), scrape(c["metrics_port"])
    finally:
        for name, proc in reversed(procs):
            codes[name] = stop(proc)

    frames, errors, acc = report["frames"], report["errors"], report["accuracy"]
    edge_ok = metric(edge_m, "ecd_frames_total", service="edge", outcome="ok")
    cloud_ok = metric(cloud_m, "ecd_frames_total", service="cloud", outcome="ok")
    answered = frames - errors
    print(f"\ndevice agent (arm64, emulated): split {report['split_device']}/{report['split_edge']} "
          f"(device blocks [0, {report['split_device']}), edge [{report['split_device']}, {report['split_edge']}), cloud the rest), "
          f"encoding {report['encoding']}")
    print(f"frames answered: {answered} / {args.frames} (errors {errors}); accuracy {acc:.4f}")
    print(f"uplink {report['uplink_bytes'] / max(frames, 1):.0f} B/frame; capture-to-result latency p50 {report['latency_p50_s'] * 1e3:.1f} ms, "
          f"p95 {report['latency_p95_s'] * 1e3:.1f} ms (8 frames in flight)")
    device_ms = f"{mean_ms(last_agent, 'device', 'device_compute'):.2f} ms" if last_agent else "n/a (no scrape of its metrics succeeded)"
    print(f"compute per frame, mean: device {device_ms} (arm64, emulated), "
          f"edge {mean_ms(edge_m, 'edge', 'edge_compute'):.2f} ms (arm64, emulated), "
          f"cloud {mean_ms(cloud_m, 'cloud', 'cloud_compute'):.2f} ms (x86-64 host)")
    # Measured from the host: under qemu-user the agent's own process_resident_memory_bytes reads 0
    # (qemu fakes /proc/self/stat), and this figure includes the emulator and its translated code.
    print(f"device agent RSS: peak {peak_rss / 2**20:.0f} MiB (the qemu-user process, seen from the host: "
          f"the emulator and its code cache included)")
    print(f"metrics: edge answered {edge_ok:.0f} frames ok, cloud {cloud_ok:.0f}; shutdown on SIGTERM: "
          f"edge-node exit {codes.get('edge-node')}, cloud-server exit {codes.get('cloud-server')}")
    print(f"wall time: edge start {edge_start_s:.1f} s, device agent {agent_s:.1f} s ({args.frames / agent_s:.1f} frames/s), "
          f"system part {time.perf_counter() - t0:.1f} s")

    failures = []
    if answered != args.frames or frames != args.frames:
        failures.append(f"{answered} of {args.frames} frames answered")
    if acc is None or acc < MIN_ACCURACY:
        failures.append(f"accuracy {acc} < {MIN_ACCURACY}")
    if edge_ok != args.frames or cloud_ok != args.frames:
        failures.append(f"metrics counted edge {edge_ok:.0f}, cloud {cloud_ok:.0f} frames, expected {args.frames}")
    if codes.get("edge-node") != 0 or codes.get("cloud-server") != 0:
        failures.append(f"exit codes on SIGTERM: {codes}")
    for f in failures:
        print(f"pi-smoke: FAILED: {f}")
    if not failures:
        print(f"pi-smoke: OK: {args.frames} held-out images through an arm64 device agent and edge node")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
