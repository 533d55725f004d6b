"""Run the three tiers as separate processes on loopback: the README's main job (``ecd demo``).

Each service is its own process started through the ``ecd`` command (as on real machines), on ports
the OS picks; :func:`run_demo` waits on their health services, lets every agent stream held-out
images with its own profile, radio, weights and encoding, collects each agent's report, scrapes the
services' metrics and stops the servers with SIGTERM.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ecd import certs
from ecd.transport import tls
from ecd.errors import EcdError
from ecd.transport.rpc import wait_healthy


@dataclass(frozen=True)
class DemoDevice:
    name: str
    profile: str
    radio: str
    w_privacy: float
    encoding: str
    min_split: int = 0


DEVICES = (
    DemoDevice("pi4-wifi", "pi4", "wifi", 0.0, "float32"),
    DemoDevice("phone-lte", "phone_midrange", "lte", 0.5, "float16"),
    DemoDevice("zero-5g", "pi_zero_2w", "5g", 0.9, "int8", min_split=2),
)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ecd_cli", *args]


_LOGS: weakref.WeakKeyDictionary[subprocess.Popen, Path] = weakref.WeakKeyDictionary()  # each service's log, for _stop


def _start(args: list[str], log: Path, timeout_s: float = 60.0) -> tuple[subprocess.Popen, dict]:
    """Start a service and read its READY line (JSON with the bound ports). Its log (stderr) gets
    its threads' stacks should it ever be aborted (``PYTHONFAULTHANDLER``: see :func:`_stop`)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    _LOGS[proc] = log
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout_s)
        ready = json.loads(line)
    except (queue.Empty, json.JSONDecodeError):
        proc.kill()
        raise EcdError(f"{args[3]} did not start; see {log}:\n{log.read_text()[-2000:]}") from None
    return proc, ready


def _stop(proc: subprocess.Popen, name: str, timeout_s: float = 20.0) -> int:
    """SIGTERM a service and wait for it. One that does not stop in time is aborted (its threads'
    stacks go to its log; a stop still running 5 s past its grace period has logged its tasks'
    awaits there too, ``ecd_cli.stalls``) and the error shows the log's end."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log = _LOGS.get(proc)
        said = f"; see {log}:\n{log.read_text(errors='replace')[-6000:]}" if log is not None and log.exists() else ""
        raise EcdError(f"{name} did not stop within {timeout_s} s of SIGTERM{said}") from None


def _stop_all(procs: Iterable[tuple[str, subprocess.Popen]], timeout_s: float = 20.0) -> dict[str, int]:
    """:func:`_stop` each service in turn, every one of them even if one fails to stop; then the
    first failure is raised."""
    codes, failed = {}, []
    for name, proc in procs:
        try:
            codes[name] = _stop(proc, name, timeout_s)
        except EcdError as e:
            failed.append(e)
    if failed:
        raise failed[0]
    return codes


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("ecd_frames_total") or line.startswith("ecd_hop_bytes_total"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


@dataclass
class DemoRun:
    """What one demo run produced: each agent's report, the services' counters and exit codes."""

    cloud_port: int
    cloud_metrics_port: int
    edge_port: int
    edge_metrics_port: int
    frames: int
    reports: list[tuple[DemoDevice, dict]]
    edge_ok: float
    cloud_ok: float
    exit_codes: dict[str, int]
    elapsed_s: float

    @property
    def failed(self) -> bool:
        return bool(sum(r["errors"] for _, r in self.reports)) or any(self.exit_codes.values())


@dataclass(frozen=True)
class Serving:
    """What ``ecd demo --serve`` leaves up for a person to open: the pages and the metrics."""

    device_panel: str  # a device agent streaming without end, its control panel
    operator_view: str  # the cloud's operator view
    cloud_metrics: str
    edge_metrics: str
    reports: list  # (DemoDevice, report) of the agents that ran before


def run_demo(frames: int = 200, devices: Sequence[DemoDevice] = DEVICES,
             serve: Callable[[Serving], None] | None = None) -> DemoRun:
    """Run the demo. ``serve``: after the agents' runs, start one more agent streaming without end
    with its control panel, and call ``serve`` with the pages' addresses; the system stays up
    until it returns (the CLI waits for Ctrl-C)."""
    t0 = time.perf_counter()
    procs: list[tuple[str, subprocess.Popen]] = []
    with tempfile.TemporaryDirectory(prefix="ecd-demo-") as tmp:
        d = Path(tmp)
        try:
            folder = d / "tls"  # mutual TLS between every tier, as deployed
            certs.init(folder, certs.default_holders(edges=1, devices=len(devices) + 1))  # one more for --serve
            operator = tls.load(str(folder), "operator")
            cloud, c = _start(_cli("cloud-server", "--port", "0", "--metrics-port", "0", "--db", str(d / "cloud.sqlite3"),
                                   "--tls-dir", str(folder), "--panel-port", "0"), d / "cloud.log")
            procs.append(("cloud-server", cloud))
            cloud_target = f"127.0.0.1:{c['port']}"
            wait_healthy(cloud_target, tls=operator, server_role="cloud")
            edge, e = _start(_cli("edge-node", "--cloud", cloud_target, "--port", "0", "--metrics-port", "0",
                                  "--tls-dir", str(folder), "--tls-name", "edge-1"), d / "edge.log")
            procs.append(("edge-node", edge))
            wait_healthy(f"127.0.0.1:{e['port']}", tls=operator, server_role="edge")
            agents = []
            for i, dev in enumerate(devices):
                report = d / f"agent{i}.json"
                args = _cli("device-agent", "--cloud", cloud_target, "--name", dev.name, "--profile", dev.profile,
                            "--radio", dev.radio, "--w-privacy", str(dev.w_privacy), "--encoding", dev.encoding,
                            "--min-split", str(dev.min_split), "--frames", str(frames), "--report", str(report),
                            "--tls-dir", str(folder), "--tls-name", f"device-{i + 1}")
                agents.append((dev, report, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(d / f"agent{i}.log", "w"))))
            reports = []
            for i, (dev, report, proc) in enumerate(agents):
                if proc.wait(300) != 0 or not report.exists():
                    raise EcdError(f"agent {dev.name} failed:\n{(d / f'agent{i}.log').read_text()[-2000:]}")
                reports.append((dev, json.loads(report.read_text())))
            edge_metrics, cloud_metrics = _scrape(e["metrics_port"]), _scrape(c["metrics_port"])
            if serve is not None:
                holder = f"device-{len(devices) + 1}"
                agent, a = _start(_cli("device-agent", "--cloud", cloud_target, "--name", "you", "--w-privacy", "0.5",
                                       "--frames", "0", "--fps", "10", "--panel-port", "0", "--tls-dir", str(folder),
                                       "--tls-name", holder), d / "agent-you.log")
                procs.append(("device-agent", agent))
                serve(Serving(a["panel_url"], f"http://127.0.0.1:{c['panel_port']}/",
                              f"http://127.0.0.1:{c['metrics_port']}/metrics", f"http://127.0.0.1:{e['metrics_port']}/metrics", reports))
        finally:
            codes = _stop_all(reversed(procs))
    ok_edge = edge_metrics.get('ecd_frames_total{outcome="ok",service="edge"}', 0)
    ok_cloud = cloud_metrics.get('ecd_frames_total{outcome="ok",service="cloud"}', 0)
    return DemoRun(c["port"], c["metrics_port"], e["port"], e["metrics_port"], frames, reports, ok_edge, ok_cloud,
                   codes, time.perf_counter() - t0)
