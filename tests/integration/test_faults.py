"""Faults at small scale, every tier its own process (as deployed), bounded in time: an edge node
killed with a second one up, a cloud killed and restarted with more frames pending than the edge's
queue holds, a cloud whose database was lost, an edge node stopped with SIGTERM. In each, every
frame reaches the application exactly once and nothing wedges.

The larger versions, with their recovery times, are ``benchmarks/faults.py``.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.launch import _cli, _start, _stop_all
from ecd.transport.rpc import wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

DEADLINE_S = 90  # every scenario finishes well within this, or it wedged


@dataclass
class Cluster:
    """A cloud and edge nodes as processes; killed or stopped on the way, cleaned up at the end."""

    tmp: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ready: dict[str, dict] = field(default_factory=dict)

    @property
    def cloud(self) -> str:
        return f"127.0.0.1:{self.ready['cloud']['port']}"

    def start_cloud(self, port: int = 0, db: str = "cloud.sqlite3") -> None:
        proc, ready = _start(_cli("cloud-server", "--insecure", "--port", str(port), "--metrics-port", "-1", "--db", str(self.tmp / db),
                                  "--edge-timeout-s", "1.5", "--placement-check-s", "0.2"), self.tmp / f"cloud-{len(self.procs)}.log")
        self.procs["cloud"], self.ready["cloud"] = proc, ready
        wait_healthy(self.cloud)

    def start_edge(self, name: str, max_queue: int = 64) -> None:
        proc, ready = _start(_cli("edge-node", "--insecure", "--cloud", self.cloud, "--port", "0", "--metrics-port", "-1",
                                  "--heartbeat-s", "0.3", "--max-queue", str(max_queue), "--grace-s", "10",
                                  "--model-dir", str(self.tmp / f"{name}-models")), self.tmp / f"{name}.log")
        self.procs[name], self.ready[name] = proc, ready
        wait_healthy(f"127.0.0.1:{ready['port']}")

    def edge_named(self, edge_id: str) -> str:
        return next(n for n, r in self.ready.items() if r.get("edge_id") == edge_id)

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(10)

    def close(self) -> None:
        _stop_all((name, proc) for name, proc in self.procs.items() if proc.poll() is None)


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    yield c
    c.close()


@dataclass
class Streaming:
    """An agent streaming in a thread; its outcomes (or its error) once it finishes."""

    agent: DeviceAgent
    frames: int
    outcomes: list = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> Streaming:
        def go() -> None:
            try:
                self.outcomes = self.agent.run(heldout("digits_cnn", self.frames))
            except BaseException as e:  # noqa: BLE001 — reported by finish()
                self.error = e

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        return self

    def wait_answered(self, n: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while self.agent.tally.frames < n:
            assert self.thread.is_alive() and time.monotonic() < deadline, (self.error, self.agent.tally.frames)
            time.sleep(0.01)

    def finish(self) -> list:
        self.thread.join(DEADLINE_S)
        self.agent.close()
        assert not self.thread.is_alive(), f"wedged: {self.agent.tally.frames} of {self.frames} answered"
        assert self.error is None, self.error
        return self.outcomes


def agent(cluster: Cluster, name: str, **kw) -> DeviceAgent:
    cfg = AgentConfig(cloud=cluster.cloud, name=name, model_dir=str(cluster.tmp / f"{name}-models"),
                      failover_wait_s=DEADLINE_S / 2, **kw)
    a = DeviceAgent(cfg)
    a.connect()
    return a


def answered_exactly_once(outcomes: list, frames: int) -> None:
    assert [o.frame_id for o in outcomes] == list(range(1, frames + 1))
    assert all(o.result.ok for o in outcomes), {o.result.error.message for o in outcomes if not o.result.ok}


def streaming_through_one_of_two_edges(cluster: Cluster, frames: int) -> tuple[Streaming, str]:
    """A cloud, edges "edge-a" and "edge-b", an agent streaming ``frames`` frames; once 50 are
    answered: the streaming agent and the name of the edge it uses (the one a fault will hit)."""
    cluster.start_cloud()
    cluster.start_edge("edge-a")
    cluster.start_edge("edge-b")
    s = Streaming(agent(cluster, "d", fps=200), frames).start()
    s.wait_answered(50)
    return s, cluster.edge_named(s.agent.assignment.edge_id)


def test_kill_9_of_an_edge_with_a_second_one_up_moves_the_agent_and_loses_nothing(cluster: Cluster) -> None:
    s, first = streaming_through_one_of_two_edges(cluster, 600)
    cluster.kill(first)
    outcomes = s.finish()
    answered_exactly_once(outcomes, 600)
    assert s.agent.moves >= 1
    assert cluster.edge_named(s.agent.assignment.edge_id) != first
    assert {o.result.edge_id for o in outcomes} == {cluster.ready["edge-a"]["edge_id"], cluster.ready["edge-b"]["edge_id"]}


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_cloud_restarted_with_more_frames_pending_than_the_edge_queue_holds_does_not_wedge(cluster: Cluster, stop: str) -> None:
    """Three agents keep 24 frames in flight against an edge queue of 4: when the cloud dies (or
    drains on SIGTERM), the edge holds more unanswered frames than its queue, and must resend them
    all to the new cloud."""
    cluster.start_cloud()
    cluster.start_edge("edge", max_queue=4)
    port = cluster.ready["cloud"]["port"]
    runs = [Streaming(agent(cluster, f"d{i}", max_in_flight=8), 300).start() for i in range(3)]
    for s in runs:
        s.wait_answered(30)
    if stop == "kill -9":
        cluster.kill("cloud")
    else:
        cluster.procs["cloud"].send_signal(signal.SIGTERM)
        assert cluster.procs["cloud"].wait(DEADLINE_S) == 0
    cluster.start_cloud(port=port)  # same port, same database
    for s in runs:
        answered_exactly_once(s.finish(), 300)


def test_an_edge_the_cloud_forgot_registers_again(cluster: Cluster) -> None:
    """The cloud's database is lost: the edge's heartbeat gets NOT_FOUND, and the edge registers
    again, so devices can be given an edge node instead of UNAVAILABLE forever."""
    cluster.start_cloud()
    cluster.start_edge("edge")
    port = cluster.ready["cloud"]["port"]
    cluster.kill("cloud")
    cluster.start_cloud(port=port, db="fresh.sqlite3")
    request = pb.RegisterDeviceRequest(device_name="late", profile="pi4", radio="wifi", model_id="digits_cnn",
                                       preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), split_device=2,
                                       encoding=pb.FLOAT32)
    deadline = time.monotonic() + DEADLINE_S
    with grpc.insecure_channel(cluster.cloud) as channel:
        while True:
            try:
                reply = pb_grpc.CloudServerStub(channel).RegisterDevice(request, timeout=5)
                break
            except grpc.RpcError as e:  # UNAVAILABLE ("no edge node") until the edge's next heartbeat
                assert e.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, e
                time.sleep(0.05)
    assert reply.edge_endpoint == f"127.0.0.1:{cluster.ready['edge']['port']}"
    assert "registered again" in (cluster.tmp / "edge.log").read_text()


def test_sigterm_of_an_edge_drains_it_and_its_device_moves_on_losing_nothing(cluster: Cluster) -> None:
    s, first = streaming_through_one_of_two_edges(cluster, 500)
    cluster.procs[first].send_signal(signal.SIGTERM)
    assert cluster.procs[first].wait(DEADLINE_S) == 0
    outcomes = s.finish()
    answered_exactly_once(outcomes, 500)
    assert s.agent.moves >= 1 and s.agent.status().duplicates_dropped == 0
