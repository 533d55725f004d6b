"""The registry's filesystem fills up while devices stream (a real 2 MB tmpfs under a real SQLite
file): frames go on, the live edge stays alive, a registering device gets a named status, a new
edge node waits instead of crashing, the log says it once, and everything comes back without a
restart when space returns."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import wait_until
from small_disk import fill

from cloud_server.config import CloudConfig
from cloud_server.panel import OperatorView
from cloud_server.service import REGISTRY_HEALTH, start_cloud
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import EdgeConfig, start_edge

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root")]


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:  # root without CAP_SYS_ADMIN (some containers)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def registration(name: str) -> pb.RegisterDeviceRequest:
    return pb.RegisterDeviceRequest(device_name=name, profile="pi4", radio="wifi", model_id="digits_cnn", split_device=2,
                                    preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), encoding=pb.FLOAT32)


def test_a_full_registry_disk_refuses_writes_by_name_and_nothing_else_stops(small_disk: Path, tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ecd")
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(small_disk / "cloud.sqlite3"), port=0, metrics_port=-1,
                                         placement_check_s=0.2, edge_timeout_s=2.0)))
    edge_cfg = replace(EdgeConfig(), cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1, heartbeat_s=0.5)
    edge = loop.run(start_edge(replace(edge_cfg, model_dir=str(tmp_path / "edge"))))
    agent = DeviceAgent(AgentConfig(cloud=f"127.0.0.1:{cloud.port}", split=2, fps=50.0, model_dir=str(tmp_path / "agent")))
    channel = grpc.insecure_channel(f"127.0.0.1:{cloud.port}")
    stub, health = pb_grpc.CloudServerStub(channel), health_pb2_grpc.HealthStub(channel)
    late_start = late_edge = None
    outcomes: list = []

    def writable() -> float | None:
        return cloud.metrics.registry.get_sample_value("ecd_registry_writable")

    def health_of(service: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

    try:
        wait_healthy(f"127.0.0.1:{cloud.port}")
        agent.connect()
        runner = threading.Thread(target=lambda: outcomes.extend(agent.run(heldout("digits_cnn", 400))), daemon=True)
        runner.start()
        wait_until(lambda: agent.status().answered >= 30, "the agent to stream")
        filler = fill(small_disk)
        wait_until(lambda: writable() == 0.0, "the cloud to notice the full disk")
        assert health_of(REGISTRY_HEALTH) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health_of("") == health_pb2.HealthCheckResponse.SERVING  # liveness: frames still flow
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterDevice(registration("during"), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "registry disk full" in refused.value.details()
        late_start = asyncio.run_coroutine_threadsafe(start_edge(replace(edge_cfg, model_dir=str(tmp_path / "late"))), loop.loop)
        full_at = agent.status().answered
        wait_until(lambda: agent.status().answered >= full_at + 150, "frames to flow for 3 s on a full disk")
        assert edge.edge_id in {e.edge_id for e in cloud.core.edges.alive()}  # its heartbeats could not be stored
        shown = {e["edge_id"]: e["alive"] for e in OperatorView(cloud.core).overview()["edges"]}
        assert shown[edge.edge_id] is True, shown  # the operator sees what the data plane assigns by
        assert not late_start.done(), late_start.exception() if late_start.done() else None  # waiting, not crashed
        filler.unlink()
        wait_until(lambda: writable() == 1.0, "the cloud to see space come back")
        assert health_of(REGISTRY_HEALTH) == health_pb2.HealthCheckResponse.SERVING
        late_edge = late_start.result(timeout=30)
        assert stub.RegisterDevice(registration("after"), timeout=30).device_id
        runner.join(60)
        assert not runner.is_alive()
    finally:
        channel.close()
        agent.close()
        if late_edge is not None:
            loop.run(late_edge.stop(0))
        elif late_start is not None:
            late_start.cancel()
        loop.run(edge.stop(0))
        loop.run(cloud.stop(0))
        loop.close()
    assert [o.frame_id for o in outcomes] == list(range(1, 401)) and all(o.result.ok for o in outcomes)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("ecd")]
    assert sum("disk full" in m and "writes are refused" in m for m in said) == 1
    assert sum("writes go through again" in m for m in said) == 1
    assert not [r for r in caplog.records if r.name.startswith("ecd") and r.exc_info], "a traceback was logged"
