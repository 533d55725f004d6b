"""The testbed's processes: the real ``ecd cloud-server``, ``ecd edge-node`` and ``ecd device-agent``,
each in its namespace (``_testbed_net``), over mutual TLS (``ecd certs init``), with the delay relays.

Who dials whom (every address is inside the namespaces the testbed made):

* the cloud listens on its namespace's loopback; a relay in the cloud namespace (backhaul delay)
  forwards the cloud's backhaul address to it;
* the edge node dials the cloud through that relay, listens on its own loopback, and advertises the
  access relay in its namespace (access delay) as its endpoint;
* the device dials the cloud through a second access relay in the edge namespace (access delay, then
  the backhaul relay): registration and block downloads cross the shaped access link, as a phone's.

Processes are :class:`_procs.Cluster` tiers (logs, reaping, SIGTERM then SIGKILL on close); relays
are plain children that die with the harness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from _procs import Cluster, Deadline, Tier
from _testbed_net import CLOUD, EDGE_DEV, EDGE_PORT, Testbed

RELAY = Path(__file__).resolve().parent / "_testbed_relay.py"


class Deployment:
    """Cloud, edge node and relays of one testbed run, started in order; :meth:`close` ends them."""

    def __init__(self, tb: Testbed, cluster: Cluster, certs: Path, model: str, logdir: Path):
        self.tb, self.cluster, self.certs, self.model, self.logdir = tb, cluster, certs, model, logdir
        self.relays: list[subprocess.Popen] = []
        self.device_cloud = ""  # the --cloud a device agent is given

    def tls(self, name: str) -> list[str]:
        return ["--tls-dir", str(self.certs), "--tls-name", name]

    def _spawn(self, tier: str, kind: str, name: str, args: list[str]) -> Tier:
        t = self.cluster.spawn(kind, name, args, prefix=self.tb.prefix_argv(tier))
        self.tb.enter_cgroup(tier, t.pid)
        return t

    def relay(self, tier: str, listen: str, to: str, delay_ms: float) -> int:
        """A delay relay in ``tier``'s namespace; returns the port it listens on."""
        argv = [*self.tb.prefix_argv(tier), sys.executable, str(RELAY), "--listen", f"{listen}:0", "--to", to,
                "--delay-ms", str(delay_ms)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        self.relays.append(proc)
        self.tb.enter_cgroup(tier, proc.pid)
        line = proc.stdout.readline() if proc.stdout else ""
        try:
            return int(json.loads(line)["port"])
        except (ValueError, KeyError) as e:
            raise RuntimeError(f"testbed: the relay in {tier} did not start ({e}: {line!r})") from None

    def start(self, deadline: Deadline) -> None:
        tb = self.tb
        (self.logdir / "cloud.sqlite3").unlink(missing_ok=True)  # a fresh registry: each run's devices are new
        cloud = self._spawn("cloud", "cloud", "cloud", [
            "cloud-server", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1", "--models", self.model,
            "--db", str(self.logdir / "cloud.sqlite3"), *self.tls("cloud")])
        self.cluster.wait_ready([cloud], deadline, 120)
        backhaul = self.relay("cloud", CLOUD, f"127.0.0.1:{cloud.port}", tb.backhaul.rtt_ms / 2)
        to_cloud = self.relay("edge", EDGE_DEV, f"{CLOUD}:{backhaul}", tb.access.rtt_ms / 2)
        to_edge = self.relay("edge", EDGE_DEV, f"127.0.0.1:{EDGE_PORT}", tb.access.rtt_ms / 2)
        edge = self._spawn("edge", "edge", "edge", [
            "edge-node", "--cloud", f"{CLOUD}:{backhaul}", "--host", "127.0.0.1", "--port", str(EDGE_PORT),
            "--advertise", f"{EDGE_DEV}:{to_edge}", "--metrics-port", "-1", "--model-dir", str(self.logdir / "edge-models"),
            *self.tls("edge-1")])
        self.cluster.wait_ready([edge], deadline, 120)
        self.device_cloud = f"{EDGE_DEV}:{to_cloud}"

    def agent(self, name: str, number: int, args: list[str]) -> Tier:
        """An agent in the device namespace (``number``: which device certificate it holds)."""
        return self._spawn("device", "agent", name, [
            "device-agent", "--cloud", self.device_cloud, "--name", name, "--model", self.model, "--metrics-port", "-1",
            "--model-dir", str(self.logdir / f"models-{name}"), *self.tls(f"device-{number}"), *args])

    def close(self) -> None:
        for proc in self.relays:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.relays:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout:
                proc.stdout.close()
        self.relays = []


def make_certs(python: str, root: Path, folder: Path, devices: int) -> None:
    """A fresh CA and holders for one run (``ecd certs init``)."""
    done = subprocess.run([python, "-m", "ecd_cli", "certs", "init", str(folder), "--edges", "1", "--devices", str(devices)],
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"testbed: `ecd certs init` failed: {done.stderr.strip()[-300:]}")


def read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"problem": f"no report: {e}"}
