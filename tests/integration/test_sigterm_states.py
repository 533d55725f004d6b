"""Every tier exits promptly on SIGTERM in the states a failure leaves it in (issue 29): an agent
whose only edge node hangs (SIGSTOP: frames accepted, none answered), an agent and an edge node
whose cloud was killed, a cloud whose edge nodes and devices hang on to it. Processes, as a
supervisor (systemd, kubelet) sends the signal; each must exit well within its grace.

The time bound is a wedge detector, not a speed target: a tier that ignores the signal waits for
the ``STOP_WITHIN_S`` below and fails; one that heeds it stops in about a second.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from harness import wait_until

from ecd.launch import _cli, _start
from ecd.transport.rpc import wait_healthy

STOP_WITHIN_S = 20.0  # each tier's grace is 10 s here; a heeded SIGTERM ends in a few seconds


class Procs:
    """Processes of one test, each stopped (and continued, if stopped) at the end."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.ready: dict[str, dict] = {}

    def start(self, name: str, *args: str) -> dict:
        proc, ready = _start(_cli(*args), self.tmp / f"{name}.log")
        self.procs[name], self.ready[name] = proc, ready
        return ready

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        """A tier whose READY line comes later (an agent prints it once registered)."""
        proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=open(self.tmp / f"{name}.log", "w"), text=True)
        self.procs[name] = proc
        return proc

    def term(self, name: str) -> int:
        """SIGTERM; the exit code, or a failure naming the tier that did not stop in time."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running {STOP_WITHIN_S:g} s after SIGTERM; its log:\n"
                        f"{(self.tmp / f'{name}.log').read_text()[-2000:]}")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(30)


@pytest.fixture
def procs(tmp_path: Path):
    p = Procs(tmp_path)
    yield p
    p.close()


def start_cloud_and_edge(p: Procs) -> str:
    cloud = p.start("cloud", "cloud-server", "--insecure", "--port", "0", "--metrics-port", "-1", "--db", str(p.tmp / "cloud.sqlite3"),
                    "--edge-timeout-s", "1.5", "--placement-check-s", "0.2", "--grace-s", "10")
    target = f"127.0.0.1:{cloud['port']}"
    wait_healthy(target)
    edge = p.start("edge", "edge-node", "--insecure", "--cloud", target, "--port", "0", "--metrics-port", "-1", "--heartbeat-s", "0.3",
                   "--grace-s", "10", "--model-dir", str(p.tmp / "edge-models"))
    wait_healthy(f"127.0.0.1:{edge['port']}")
    return target


def endless_agent(p: Procs, cloud: str) -> tuple[subprocess.Popen, Path]:
    """An agent streaming until stopped, whose READY line has been read (it registered)."""
    report = p.tmp / "agent.report.json"
    agent = p.spawn("agent", "device-agent", "--insecure", "--cloud", cloud, "--frames", "0", "--fps", "50", "--report", str(report),
                    "--metrics-port", "-1", "--model-dir", str(p.tmp / "agent-models"))
    assert "ready" in json.loads(agent.stdout.readline())
    return agent, report


def test_an_agent_whose_only_edge_hangs_stops_on_sigterm_and_writes_its_report(procs: Procs) -> None:
    cloud = start_cloud_and_edge(procs)
    _, report = endless_agent(procs, cloud)
    procs.procs["edge"].send_signal(signal.SIGSTOP)  # frames accepted by the kernel, none answered
    procs.term("agent")
    written = json.loads(report.read_text())
    assert written["exit"] and written["sent"] >= written["frames"], written


def test_an_agent_and_an_edge_whose_cloud_was_killed_stop_on_sigterm(procs: Procs) -> None:
    cloud = start_cloud_and_edge(procs)
    _, report = endless_agent(procs, cloud)
    procs.procs["cloud"].kill()
    procs.procs["cloud"].wait(10)
    assert procs.term("agent") in (0, 1)  # 1: frames the dead cloud never answered count as errors
    assert json.loads(report.read_text())["exit"]
    assert procs.term("edge") == 0


def test_a_cloud_whose_edge_and_device_hang_stops_on_sigterm(procs: Procs) -> None:
    cloud = start_cloud_and_edge(procs)
    endless_agent(procs, cloud)
    procs.procs["edge"].send_signal(signal.SIGSTOP)  # its stream to the cloud stays open, unread
    procs.procs["agent"].send_signal(signal.SIGSTOP)  # its assignment watch on the cloud stays open, unread
    assert procs.term("cloud") == 0


def test_an_edge_waiting_for_a_cloud_that_went_away_stops_on_sigterm(procs: Procs) -> None:
    start_cloud_and_edge(procs)
    procs.procs["cloud"].kill()
    procs.procs["cloud"].wait(10)
    log = procs.tmp / "edge.log"
    wait_until(lambda: "[EdgeNode.Heartbeat] UNAVAILABLE" in log.read_text(), "the edge to notice its cloud is gone")
    assert procs.term("edge") == 0

